"""`selfsup finetune`: a checkpoint + a labeled task + a method (found by name in the registry) -> a run folder.

Order matters for the bad-input rules: options, method, model and data are all checked before the output
folder is touched; the folder is written into a temporary sibling and renamed into place when every seed is
done (`runs.over_seeds`). Outputs: `model/` (HF format + `task.json`, or the method's artifact),
`metrics.json` (the kept epoch's `eval`, the per-epoch `history`, parameter counts), `curves.png`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from selfsup.adapt.core.kinds import Columns, TaskKind, columns_for, task_kind
from selfsup.adapt.core.options import run_options, split_overrides
from selfsup.adapt.core.runs import check_out, over_seeds, resolve_threads
from selfsup.config import to_dict
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class TaskData:
    kind: str
    columns: Columns
    labels: list[str] | None
    train: list
    eval: list


@dataclasses.dataclass
class Run:
    """Everything a method's `train_seed` needs: the checkpoint, the task data and the options."""
    source: Path  # the checkpoint folder (HF format) or, for images, the encoder export
    kind: TaskKind
    data: Any  # TaskData for text; the image / audio data for image / speech kinds
    cfg: Any  # FinetuneConfig
    opts: Any  # the method's Options
    init: str
    progress: bool
    train_source: str
    unlabeled: str | None = None
    modality_opts: Any = None  # e.g. the image augmentation keys, the audio crop
    extra: dict = dataclasses.field(default_factory=dict)  # what a modality's loader hands its trainer


def load_data(kind: str, train: str, eval: str, columns: Columns) -> TaskData:
    """Read and validate both files (labels of the eval file must occur in the training file)."""
    from selfsup.adapt.core.tasks import check_labels, label_set, read_task

    spec = task_kind(kind)
    train_ex = read_task(train, kind, columns)
    eval_ex = read_task(eval, kind, columns)
    labels = None
    if spec.class_labels:
        labels = label_set(train_ex, train)
        check_labels(eval_ex, labels)
    return TaskData(kind, columns, labels, train_ex, eval_ex)


def resolve_options(task: str, method: str = "full", *, init: str = "pretrained", seeds: int = 1,
                    epochs: int | None = None, max_steps: int | None = None, train_fraction: float | None = None,
                    shots: int | None = None, overrides: Sequence[str] = ()) -> tuple[Any, Any, Any]:
    """The options `finetune` with these arguments trains with (`finetune --print-config`): the keys every
    method shares (`FinetuneConfig`), the method's own `Options`, and the modality's (images, audio; else None).
    Reads no file."""
    from selfsup.adapt.core import audio, images
    from selfsup.adapt.registry import get_method, option_owners

    adapter, spec = get_method(method), task_kind(task)
    base = run_options(init=init, seeds=seeds, epochs=epochs, max_steps=max_steps, train_fraction=train_fraction,
                       shots=shots)
    modality_options = {"image": (images.ImageOptions,), "speech": (audio.AudioOptions,)}.get(spec.modality, ())
    cfg, (opts, *modality_opts) = split_overrides(overrides, base, own=(adapter.Options, *modality_options),
                                                  owners=option_owners())
    if cfg.min_steps is None:  # the kind's own step floor (kinds.py), else options.DEFAULT_MIN_STEPS
        cfg = dataclasses.replace(cfg, min_steps=spec.min_steps)
    return cfg, opts, modality_opts[0] if modality_opts else None


def finetune(model: str | Path, task: str, train: str, eval: str, out: str | Path, *, method: str = "full",
             init: str = "pretrained", text_column: str | None = None, pair_column: str | None = None,
             label_column: str | None = None, epochs: int | None = None, max_steps: int | None = None,
             seed: int = 0, overrides: Sequence[str] = (), train_fraction: float | None = None,
             shots: int | None = None, seeds: int = 1, progress: bool = False,
             unlabeled: str | None = None, resume: bool = False,
             symbol_map: str | None = None) -> dict[str, Any]:
    """Fine-tune `model` on `task` with `method`; returns what is written to `out/metrics.json`.

    With `seeds > 1` the run repeats with seeds seed, seed+1, ... (each in `out/seed-S/`, the few-label
    subset re-drawn per seed) and `metrics.json` reports the mean and standard deviation of each metric.
    `unlabeled` (a file like `train`, labels ignored) is for methods that use unlabeled text (PET). `resume`
    continues a killed run of the same command (`runs.over_seeds`). `symbol_map` (words, chars or a JSON/YAML
    file; `--set kmer=K` groups symbols) rewrites every text first and is saved with the model
    (`selfsup.data.symbol_map`)."""
    from selfsup.adapt.core import audio, images, table_tasks
    from selfsup.adapt.core.ae_encoder import ae_export_folder
    from selfsup.adapt.core.tasks import subsample
    from selfsup.data.memory import source_name
    from selfsup.adapt.registry import check_requirements, get_method

    out = Path(out)
    adapter = get_method(method)
    check_requirements(adapter)
    if images.is_image_encoder(model) and task != images.IMAGE_TASK:
        raise SelfsupError(f"{model}: an image encoder; fine-tune it with --task {images.IMAGE_TASK}, not {task!r}")
    spec = task_kind(task)
    if spec.modality != "table" and ae_export_folder(model) is not None:
        raise SelfsupError(f"{model}: an auto-encoder; fine-tune it with --task {table_tasks.TABLE_TASK}, not "
                           f"{task!r}")
    if spec.modality != "speech" and audio.is_speech_encoder(model):
        raise SelfsupError(f"{model}: a speech encoder; fine-tune it with --task {audio.AUDIO_TASK}, not {task!r}")
    if unlabeled is not None and not adapter.uses_unlabeled:
        raise SelfsupError(f"--unlabeled: only --method pet uses unlabeled examples (got --method {method})")
    if adapter.needs_pretrained and init != "pretrained":
        raise SelfsupError(f"--method {method}: needs --init pretrained (the artifact loads onto the checkpoint)")
    cfg, opts, modality_opts = resolve_options(task, method, init=init, seeds=seeds, epochs=epochs,
                                               max_steps=max_steps, train_fraction=train_fraction, shots=shots,
                                               overrides=overrides)
    if not resume:  # (with --resume, over_seeds checks: a finished run of the same command is not an error)
        check_out(out)
    check_symbol_options(symbol_map, cfg, spec, unlabeled)
    if spec.modality == "image":
        if text_column or pair_column or label_column:
            raise SelfsupError(f"--text-column/--pair-column/--label-column: not used by {task} "
                               "(labels come from the image data)")
        source = images.encoder_folder(model)
        family = images.encoder_family(source)
    elif spec.modality == "speech":
        if pair_column:
            raise SelfsupError(f"--pair-column: not used by {task} (--text-column names the path column)")
        source = audio.encoder_folder(model)
        family = audio.encoder_family(source)
    elif spec.modality == "table":
        if text_column or pair_column:
            raise SelfsupError(f"--text-column/--pair-column: not used by {task} (the auto-encoder's saved "
                               "preprocessing names the feature columns)")
        source = table_tasks.encoder_folder(model)
        family = "autoencoder"
    else:
        from selfsup.adapt.core.models import model_type, resolve_checkpoint

        source = resolve_checkpoint(model)
        family = model_type(source)
    if spec.name not in adapter.kinds:  # an unsupported kind or family is an error before any work
        raise SelfsupError(f"--method {method}: supports {', '.join(adapter.kinds)} only, not {task}")
    adapter.check(family, task, opts)
    if spec.modality == "image":
        data = images.load_image_data(train, eval, images.preprocessing(source))
    elif spec.modality == "speech":
        data = audio.load_audio_data(train, eval, audio.front_end(source), text_column, label_column)
    elif spec.modality == "table":
        data = table_tasks.load_table_data(train, eval, source, label_column)
    else:
        data = load_data(task, train, eval, columns_for(task, text_column, pair_column, label_column))
    smap = None if symbol_map is None else apply_symbol_map(symbol_map, data, source, cfg.kmer)
    for s in range(seed, seed + seeds):  # a too-small class is an error before anything is written
        subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
    resolve_threads(cfg)
    run = Run(source, spec, data, cfg, opts, init, progress, train, unlabeled, modality_opts=modality_opts)
    run.extra = adapter.before_seeds(run)

    def train_seed(s: int, folder: Path) -> dict[str, Any]:
        subset = subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
        record = adapter.train_seed(run, s, folder, subset)
        if smap is not None:  # beside every task.json the seed wrote: evaluate / predict reapply it
            from selfsup.data.symbol_map import save_symbol_map

            for info in sorted(folder.rglob("task.json")):
                save_symbol_map(info.parent, smap)
        return record

    config = {**to_dict(cfg), **to_dict(opts), **(to_dict(run.modality_opts) if run.modality_opts else {})}
    request = {"model": str(model), "task": task, "method": method, "init": init, "train": source_name(train),
               "eval": source_name(eval), "unlabeled": unlabeled and source_name(unlabeled),
               "train_fraction": train_fraction, "shots": shots}
    if symbol_map is not None:
        request["symbol_map"] = str(symbol_map)
    return over_seeds(out, seed, seeds, train_seed, config, shared=adapter.shared_keys, summarize=adapter.summarize,
                      resume=resume, request=request)


SYMBOL_MAP_KINDS = ("sequence-classification", "sequence-regression", "pair-classification")


def check_symbol_options(symbol_map: str | None, cfg, spec: TaskKind, unlabeled: str | None) -> None:
    """`--symbol-map` / `--set kmer`: text kinds whose inputs are free text, no unlabeled file."""
    if symbol_map is None:
        if cfg.kmer != 1:
            raise SelfsupError("kmer: groups the symbols of --symbol-map; pass --symbol-map words|chars|FILE too")
        return
    if spec.name not in SYMBOL_MAP_KINDS:
        raise SelfsupError(f"--symbol-map: for {', '.join(SYMBOL_MAP_KINDS)} only, not {spec.name}")
    if unlabeled is not None:
        raise SelfsupError("--symbol-map: not with --unlabeled (its texts would not be mapped)")


def apply_symbol_map(spec: str, data: TaskData, source: Path, kmer: int):
    """Resolve the map on the training and evaluation texts and rewrite both in place; returns the map."""
    from selfsup.adapt.core.models import load_tokenizer
    from selfsup.data.symbol_map import build_symbol_map, example_texts, map_examples

    tok = load_tokenizer(source)
    smap = build_symbol_map(spec, example_texts(data.train) + example_texts(data.eval), tok, kmer,
                            model_name=str(source))
    data.train[:] = map_examples(data.train, smap)
    data.eval[:] = map_examples(data.eval, smap)
    return smap

"""The `--set key=value` options of the adaptation verbs: the keys every method shares (`FinetuneConfig`), and
the split of a `--set` list between them and one method's own options dataclass (`split_overrides`).

A method's own keys (e.g. `lora_r`) live in its file's `Options` dataclass; an unknown key is a one-line error
naming it (and, when another method owns it, that method)."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

from selfsup.config import bounded, from_dict
from selfsup.errors import SelfsupError


DEFAULT_EPOCHS = 3
DEFAULT_MIN_STEPS = 300  # min_steps when neither it nor the task kind sets one (kinds.TaskKind.min_steps)


def total_steps(cfg: "FinetuneConfig", steps_per_epoch: int) -> int:
    """Optimizer steps of a fit: max_steps if given, else epochs if given, else the default epochs raised to
    min_steps (a few hundred labels otherwise get a few dozen steps and underfit)."""
    if cfg.max_steps:
        return cfg.max_steps
    if cfg.epochs is not None:
        return cfg.epochs * steps_per_epoch
    floor = DEFAULT_MIN_STEPS if cfg.min_steps is None else cfg.min_steps
    return max(DEFAULT_EPOCHS * steps_per_epoch, floor)


@dataclasses.dataclass
class FinetuneConfig:
    """Keys settable with `--set key=value`, whatever the method."""
    lr: float | None = bounded(None, gt=0, doc="default: the method's (e.g. full: 1e-4 x 768 / hidden on text, "
                                "1e-3 on images and audio, 3e-3 on tables; linear: 1e-3)")
    batch_size: int = bounded(32, ge=1, doc="examples per optimizer step (over all devices)")
    eval_batch_size: int = bounded(64, ge=1)
    epochs: int | None = bounded(None, ge=1, doc=f"passes over the training set; default {DEFAULT_EPOCHS}, raised "
                                 "to min_steps optimizer steps on a small set (a value given is kept as given)")
    max_steps: int | None = bounded(None, ge=1, doc="optimizer steps; overrides epochs")
    min_steps: int | None = bounded(None, ge=0, doc="fewest optimizer steps when epochs is not given: a small set "
                                    "gets more epochs; default 300, 600 on audio (measured: bench/small_data_*.py; "
                                    "0: always the default epochs)")
    warmup_ratio: float = bounded(0.1, ge=0, lt=1)
    weight_decay: float = bounded(0.01, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = bounded(1.0, ge=0)
    accumulate: int = bounded(1, ge=1, doc="micro-batches per optimizer step (batch_size must divide)")
    group_by_length: bool = dataclasses.field(default=True, metadata={
        "doc": "batch token sequences of similar length together (less padding); false: plain random batches"})
    keep_best: bool = dataclasses.field(
        default=True, metadata={"doc": "keep the weights of the epoch with the best main metric (else the last)"})
    eval_every: int = bounded(1, ge=1, doc="evaluate every N epochs (and after the last)")
    max_length: int = bounded(128, ge=8, doc="tokens per example (capped at the model's positions)")
    dropout: float | None = bounded(None, ge=0, lt=1, doc="override the checkpoint's dropout")
    threads: int = bounded(0, ge=0, doc="CPU threads (0: torch's default)")
    device: str = "auto"
    devices: int = bounded(1, ge=1, doc="processes / accelerators for data-parallel training (Lightning DDP)")
    num_nodes: int = bounded(1, ge=1)
    strategy: str = dataclasses.field(default="auto", metadata={"doc": "Lightning strategy: auto, ddp, "
                                                                        "ddp_fork, fsdp, ..."})
    precision: str = dataclasses.field(default="auto", metadata={"doc": "auto (bf16-mixed on GPUs with bf16, "
                                                                         "else 32), 32, bf16-mixed, 16-mixed"})
    logger: Literal["csv", "tensorboard", "wandb", "mlflow"] = dataclasses.field(default="csv", metadata={
        "doc": "where curves go besides logs/*.csv: tensorboard/, wandb/ (offline), mlruns/ (Lightning's loggers)"})
    doc_stride: int = bounded(64, ge=0, doc="extractive-qa: tokens shared by consecutive windows")
    max_answer_length: int = bounded(30, ge=1, doc="extractive-qa: longest answer in tokens")
    n_best: int = bounded(20, ge=1, doc="extractive-qa: top starts x top ends searched per window")
    kmer: int = bounded(1, ge=1, doc="--symbol-map: symbols are non-overlapping groups of K characters")

    def validate(self) -> None:
        from selfsup.loggers import check_logger

        check_logger(self.logger, key="logger")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda") and self.device != "mps":
            raise SelfsupError(f"device: expected auto, cpu, cuda[:N] or mps, got {self.device!r}")
        world = self.devices * self.num_nodes * self.accumulate
        if self.batch_size % world:
            raise SelfsupError(f"batch_size: {self.batch_size} must be a multiple of devices x num_nodes x "
                               f"accumulate = {world}")


@dataclasses.dataclass
class NoOptions:
    """A method without keys of its own."""


def parse_values(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings -> {key: YAML value}; `template` is taken as written (its braces are text)."""
    import yaml

    data: dict[str, Any] = {}
    for item in pairs:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SelfsupError(f"--set: expected key=value, got {item!r}")
        if key == "template":  # `{text} It was {mask}.` is text, not YAML
            data[key] = value
            continue
        try:
            data[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:  # e.g. patterns=[{text} ...] unquoted: one line, not a traceback
            raise SelfsupError(f"{key}: not valid YAML ({str(e).splitlines()[0]}); quote texts with "
                               f"braces, e.g. '[\"{{text}} It was {{mask}}.\"]'") from None
    return data


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def split_overrides(pairs: Sequence[str], base: dict | None = None, own: Sequence[type] = (),
                    schema: type = FinetuneConfig, owners: dict[str, str] | None = None) -> tuple[Any, list[Any]]:
    """(schema instance, [one instance per class of `own`]) from `--set` pairs over `base`. A key goes to the
    first of `own` that has it, else to `schema`; `owners` ({key: method}) names where a foreign key belongs."""
    data = {**(base or {}), **parse_values(pairs)}
    parts: list[dict[str, Any]] = [{} for _ in own]
    rest: dict[str, Any] = {}
    names = [field_names(c) for c in own]
    common = field_names(schema)
    for key, value in data.items():
        for i, fields in enumerate(names):
            if key in fields:
                parts[i][key] = value
                break
        else:
            if key not in common and owners and key in owners:
                raise SelfsupError(f"{key}: only for a model fine-tuned with --method {owners[key]} "
                                   f"(an option of that method)")
            rest[key] = value
    return from_dict(schema, rest), [from_dict(c, p) for c, p in zip(own, parts)]


def parse_overrides(pairs: Sequence[str], base: dict | None = None, schema: type = FinetuneConfig) -> Any:
    """The shared keys only (tools that take no method options)."""
    return split_overrides(pairs, base, schema=schema)[0]


def run_options(*, init: str, seeds: int, epochs: int | None, max_steps: int | None,
                train_fraction: float | None = None, shots: int | None = None) -> dict[str, Any]:
    """Check the options every fine-tuning verb shares; returns the config keys they set (`epochs`, `max_steps`)."""
    if init not in ("pretrained", "scratch"):
        raise SelfsupError(f"--init: expected pretrained or scratch, got {init!r}")
    if seeds < 1:
        raise SelfsupError(f"--seeds: must be >= 1, got {seeds}")
    if train_fraction is not None and not 0 < train_fraction <= 1:
        raise SelfsupError(f"--train-fraction: must be in (0, 1], got {train_fraction}")
    if shots is not None and shots < 1:
        raise SelfsupError(f"--shots: must be >= 1, got {shots}")
    return {k: v for k, v in (("epochs", epochs), ("max_steps", max_steps)) if v is not None}

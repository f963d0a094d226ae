"""A corpus of hostile files (tests/bad_inputs/, described in its README.md) run through every verb that reads
them: each run is exit status 2, exactly one line on stderr naming the file (and, where the reader can know it,
the line or key), and the `--out` target untouched — a new path still absent (no partial or lock folder beside
it either), an existing folder byte-for-byte as it was. Verbs run in-process (`selfsup.cli.main`) with fd-level
capture, so warnings and log lines that would reach a user's terminal count as extra lines.

A case that does not (yet) behave is an `xfail(strict=True)` naming what it does instead, so fixing it turns the
suite red until the mark is removed."""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TINY
from selfsup.cli import main

BAD = Path(__file__).parent / "bad_inputs"
CROSS = Path(__file__).parent / "data" / "crosslingual"
TEXT_FILES = ["nul_bytes.csv", "broken_line3.jsonl", "no_text_column.jsonl", "invalid_utf8.csv", "invalid_utf8.txt",
              "empty.csv", "empty.txt"]
TASK_FILES = [f for f in TEXT_FILES if not f.endswith(".txt")]  # task readers take CSV/TSV/JSONL, not .txt
# where the reader can tell more than the file: the line or the key/column it stopped at
WHERE = {"broken_line3.jsonl": ":3", "no_text_column.jsonl": "text", "nul_bytes.csv": ":3",
         "invalid_utf8.txt": ":2", "invalid_utf8.csv": ":3"}


class Harmless:
    """A custom class inside a pickled checkpoint: loading it with weights_only=True must refuse, not run it."""

    def __reduce__(self):  # were it ever unpickled, it would only build an empty list
        return (list, ())


@dataclass
class Ctx:
    bert: Path   # a tiny random BERT (HF folder with tokenizer)
    tuned: Path  # a `selfsup finetune` run folder of it (sequence-classification, 1 step)
    task: dict   # {"train", "eval"}: good JSONL task files
    text: Path   # good plain text (Persuasion)


@pytest.fixture(scope="module")
def ctx(tiny_bert, persuasion, tmp_path_factory) -> Ctx:
    from selfsup.adapt.core.run import finetune
    from selfsup.data.austen import austen_novels_task

    d = tmp_path_factory.mktemp("bad-inputs")
    task = austen_novels_task(d / "task", train_per_class=8, eval_per_class=4, novels=["persuasion", "emma"])
    finetune(tiny_bert, "sequence-classification", task["train"], task["eval"], d / "tuned", max_steps=1,
             overrides=["threads=1", "max_length=32"])
    return Ctx(tiny_bert, d / "tuned", task, persuasion)


def _copy_with(src: Path, dst: Path, replace: dict[str, str]) -> Path:
    """A copy of the model folder `src` with some of its files replaced by hostile ones."""
    shutil.copytree(src, dst)
    for rel, bad in replace.items():
        target = next(p for p in [dst / rel, dst / "model" / rel] if p.exists())
        shutil.copyfile(BAD / bad, target)
    return dst


def _resume_folder(tmp: Path) -> Path:
    """A run folder whose checkpoints/last.ckpt is a torch.save pickle holding a custom-class object."""
    import torch
    import yaml

    from selfsup.recipes import load_recipe

    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(load_recipe("mlm", TINY).to_dict()))
    torch.save({"global_step": 1, "state_dict": {}, "payload": Harmless()}, run / "checkpoints" / "last.ckpt")
    return run


def _images(tmp: Path, name: str) -> Path:
    """An image folder (one class sub-folder) holding only the hostile file."""
    (tmp / "images" / "a").mkdir(parents=True)
    shutil.copyfile(BAD / name, tmp / "images" / "a" / name)
    return tmp / "images"


def _suite(ctx: Ctx, tmp: Path) -> Path:
    shutil.copyfile(BAD / "suite_missing_task.yaml", tmp / "suite.yaml")
    (tmp / "tiny-model").symlink_to(ctx.bert)
    return tmp / "suite.yaml"


def _report_run(tmp: Path, replace: dict[str, str]) -> Path:
    run = tmp / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}\n")  # a valid, empty one unless replaced
    for name, bad in replace.items():
        shutil.copyfile(BAD / bad, run / name)
    return tmp / "runs"


QUIET = ["--no-progress"]
PT = lambda recipe, data, out, *more: ["pretrain", recipe, "--data", str(data), "--out", str(out),  # noqa: E731
                                       "--max-steps", "1", *QUIET, *more]
TINY_SET = [a for s in TINY for a in ("--set", s)]
TABLE_SET = ["--set", "train.batch_size=2", "--set", "train.eval_every=1000", "--set", "train.checkpoint_every=1000"]


def _cases():
    """(id, build, names): build(ctx, tmp, out) -> argv (and may create files in tmp); `names` must all appear in
    the error line. `out` is a path that does not exist yet; the run must leave it so."""
    c = []
    for f in TEXT_FILES:
        p = BAD / f
        names = [f] + ([WHERE[f]] if f in WHERE else [])
        c += [
            (f"pretrain-mlm-{f}", lambda x, t, o, p=p: PT("mlm", p, o, *TINY_SET), names),
            (f"predict-{f}", lambda x, t, o, p=p: ["predict", "--model", str(x.tuned), str(p), "--out", str(o)],
             names),
            (f"embed-{f}", lambda x, t, o, p=p: ["embed", "--model", str(x.bert), str(p), "--out", str(o)], names),
            (f"align-source-{f}", lambda x, t, o, p=p: [
                "align", "--model", str(x.bert), "--source", str(p), "--target", str(CROSS / "de.txt"),
                "--dictionary", str(CROSS / "dictionary.csv"), "--out", str(o)], names),
            (f"artificial-source-{f}", lambda x, t, o, p=p: [
                "data", "artificial", "--kind", "shuffled", "--source", str(p), "--out", str(o), "--tokens", "500",
                "--length", "10"], names),
        ]
    for f in TASK_FILES:
        p = BAD / f
        names = [f] + ([WHERE[f]] if f in WHERE else [])
        c += [
            (f"finetune-train-{f}", lambda x, t, o, p=p: [
                "finetune", "--model", str(x.bert), "--task", "sequence-classification", "--train", str(p),
                "--eval", x.task["eval"], "--out", str(o), "--max-steps", "1", *QUIET], names),
            (f"finetune-eval-{f}", lambda x, t, o, p=p: [
                "finetune", "--model", str(x.bert), "--task", "sequence-classification", "--train",
                x.task["train"], "--eval", str(p), "--out", str(o), "--max-steps", "1", *QUIET], names),
            (f"evaluate-{f}", lambda x, t, o, p=p: ["evaluate", "--model", str(x.tuned), "--eval", str(p),
                                                    "--out", str(o)], names),
        ]
    for f in ["nul_bytes.csv", "non_numeric.csv", "not_a_zip.npz"]:
        p = BAD / f
        names = [f] + (["b"] if f == "non_numeric.csv" else [])
        c += [(f"pretrain-autoencoder-{f}", lambda x, t, o, p=p: PT("autoencoder", p, o, *TABLE_SET), names),
              (f"anomaly-fit-{f}", lambda x, t, o, p=p: ["anomaly", "fit", "--data", str(p), "--out", str(o),
                                                          "--max-steps", "1", *QUIET], names)]
    c += [
        ("pretrain-simclr-not_a_zip.npz", lambda x, t, o: PT("simclr", BAD / "not_a_zip.npz", o), ["not_a_zip.npz"]),
        ("pretrain-simclr-truncated.png", lambda x, t, o: PT("simclr", BAD / "truncated.png", o), ["truncated.png"]),
        ("pretrain-simclr-folder-truncated.png", lambda x, t, o: PT("simclr", _images(t, "truncated.png"), o),
         ["truncated.png"]),
        ("pretrain-mockingjay-truncated.wav", lambda x, t, o: PT("mockingjay", BAD / "truncated.wav", o),
         ["truncated.wav"]),
        ("pretrain-mockingjay-zero_length.wav", lambda x, t, o: PT("mockingjay", BAD / "zero_length.wav", o),
         ["zero_length.wav"]),
        ("pretrain-garbage_recipe.yaml", lambda x, t, o: PT(str(BAD / "garbage_recipe.yaml"), x.text, o),
         ["garbage_recipe.yaml", "line 1"]),
        ("pretrain-unknown_key_recipe.yaml", lambda x, t, o: PT(str(BAD / "unknown_key_recipe.yaml"), x.text, o),
         ["unknown_key_recipe.yaml", "train.learning_rat"]),
        ("pretrain-negative_lr_recipe.yaml", lambda x, t, o: PT(str(BAD / "negative_lr_recipe.yaml"), x.text, o),
         ["negative_lr_recipe.yaml", "train.lr"]),
        ("pretrain-set-negative-lr", lambda x, t, o: PT("mlm", x.text, o, "--set", "train.lr=-1e-3"), ["train.lr"]),
        ("benchmark-suite_missing_task.yaml", lambda x, t, o: ["benchmark", str(_suite(x, t)), "--out", str(o),
                                                               *QUIET], ["no-such-train.jsonl"]),
        ("align-one_column_dictionary.csv", lambda x, t, o: [
            "align", "--model", str(x.bert), "--source", str(CROSS / "en.txt"), "--target", str(CROSS / "de.txt"),
            "--dictionary", str(BAD / "one_column_dictionary.csv"), "--out", str(o)],
         ["one_column_dictionary.csv", ":1"]),
        ("report-garbage-metrics.json", lambda x, t, o: [
            "report", str(_report_run(t, {"metrics.json": "garbage_metrics.json"})), "--out", str(o)],
         ["metrics.json"]),
        ("report-garbage-config.yaml", lambda x, t, o: [
            "report", str(_report_run(t, {"config.yaml": "garbage_recipe.yaml"})),
            "--out", str(o)], ["config.yaml"]),
        ("report-nul_bytes.csv", lambda x, t, o: [
            "report", str(_report_run(t, {"table.csv": "nul_bytes.csv"})),
            "--out", str(o)], ["table.csv"]),
        ("report-invalid_utf8.csv", lambda x, t, o: [
            "report", str(_report_run(t, {"table.csv": "invalid_utf8.txt"})),
            "--out", str(o)], ["table.csv"]),
    ]
    # hostile files inside model folders: the fine-tuned run (evaluate / predict) and the plain HF backbone
    for rel, bad in [("config.json", "garbage_config.json"), ("task.json", "garbage_task.json"),
                     ("model.safetensors", "corrupt.safetensors")]:
        names = [rel]
        c += [(f"evaluate-model-{bad}", lambda x, t, o, r=rel, b=bad: [
                  "evaluate", "--model", str(_copy_with(x.tuned, t / "m", {r: b})), "--eval", x.task["eval"],
                  "--out", str(o)], names),
              (f"predict-model-{bad}", lambda x, t, o, r=rel, b=bad: [
                  "predict", "--model", str(_copy_with(x.tuned, t / "m", {r: b})), x.task["eval"], "--out", str(o)],
               names)]
        if rel == "task.json":
            continue
        c += [(f"finetune-model-{bad}", lambda x, t, o, r=rel, b=bad: [
                  "finetune", "--model", str(_copy_with(x.bert, t / "m", {r: b})), "--task",
                  "sequence-classification", "--train", x.task["train"], "--eval", x.task["eval"], "--out", str(o),
                  "--max-steps", "1", *QUIET], names),
              (f"embed-model-{bad}", lambda x, t, o, r=rel, b=bad: [
                  "embed", "--model", str(_copy_with(x.bert, t / "m", {r: b})), x.task["eval"], "--out", str(o)],
               names),
              (f"align-model-{bad}", lambda x, t, o, r=rel, b=bad: [
                  "align", "--model", str(_copy_with(x.bert, t / "m", {r: b})), "--source", str(CROSS / "en.txt"),
                  "--target", str(CROSS / "de.txt"), "--dictionary", str(CROSS / "dictionary.csv"),
                  "--out", str(o)], names)]
    return c


XFAIL: dict[str, str] = {  # case id -> what it does instead today (tracked; remove the entry once fixed)
}


def _params() -> list:
    return list(_gen_params())


def _gen_params():
    for cid, build, names in _cases():
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[cid])] if cid in XFAIL else []
        yield pytest.param(build, names, id=cid, marks=marks)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted([path] if path.is_file() else path.rglob("*")):
        h.update(str(f.relative_to(path.parent)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _check(argv: list[str], names: list[str], out: Path, watched: list[Path], capfd) -> None:
    before = {p: _digest(p) for p in watched}
    beside = set(out.parent.iterdir())
    code = main(argv)
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("selfsup: error: "), err[-2000:]
    for name in names:
        assert name in lines[0], f"{name!r} not in: {lines[0]}"
    assert not out.exists(), f"{out} was created"
    left = {p.name for p in set(out.parent.iterdir()) - beside if p.name.startswith(f".{out.name}")}
    assert not left, f"left beside --out: {left}"
    for p in watched:
        assert _digest(p) == before[p], f"{p} changed"


@pytest.mark.parametrize("build,names", _params())
def test_bad_input_is_one_line_exit_2(build, names, ctx, tmp_path, capfd, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / ("target.html" if request.node.callspec.id.startswith("report") else "target")
    out.parent.mkdir()
    argv = build(ctx, tmp_path, out)
    inputs = [Path(a) for a in argv if a.startswith(str(tmp_path)) and Path(a).exists()]
    _check(argv, names, out, [ctx.tuned, ctx.bert, *inputs], capfd)


def test_pickled_checkpoint_is_refused_on_resume(ctx, tmp_path, capfd, monkeypatch):
    """checkpoints/last.ckpt made by torch.save of a dict with a custom-class object: never unpickled, one line,
    the run folder left exactly as it was."""
    monkeypatch.chdir(tmp_path)
    run = _resume_folder(tmp_path)
    before = _digest(run)
    code = main(["pretrain", str(run / "config.yaml"), "--data", str(ctx.text), "--out", str(run), "--resume",
                 "--no-progress"])
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert "last.ckpt" in lines[0] and "weights_only" in lines[0], lines[0]
    assert _digest(run) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]

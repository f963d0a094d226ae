"""A new user follows the README top to bottom: every example of its bash and python blocks runs, in README
order, in one fresh folder, on tiny data made from what ships with selfsup (the Austen novels, the synthesized
speech words, scikit-learn's digits and breast-cancer table, tests/data's English/German fortunes), and exits 0.

Only sizes change: each command is run as written with tiny overrides appended (argparse keeps the last value:
`--max-steps 3`, the TINY `--set` list of conftest.py, one epoch, ...); never another verb, flag or path. A
command's outputs are the next ones' inputs (pretrain -> runs/bert -> finetune --model runs/bert -> evaluate /
predict runs/sentiment), so the chain is tested. Commands run in-process through `selfsup.cli.main` (a
subprocess costs seconds of imports); a pipe's tail, a heredoc and plain shell lines run in bash. What cannot run
here is in SKIP with the reason (and the test that covers it)."""
from __future__ import annotations

import contextlib
import io
import json
import lzma
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ASSETS, TINY
from readme_examples import README_PATH, Example, readme_examples

EXAMPLES = readme_examples()
DATA = Path(__file__).parent / "data" / "crosslingual"
_INSTALLED = "installs selfsup: the tests run inside that install (.ci/run runs this line; test_readme.py checks)"
SKIP = {  # an example's first line (whitespace collapsed) -> why it does not run here, and what covers it
    "python3 -m pip install -c constraints.txt -e .": _INSTALLED,
    'python3 -m pip install -c constraints.txt -e ".[test]"': _INSTALLED,
    "python3 -m pytest": "the test suite itself (this file is part of it)",
    "selfsup demo": "minutes at full size; tests/test_demo.py runs `selfsup demo --steps 4` end to end",
    "selfsup pretrain mlm --data corpus/ --out runs/bert2 --set train.devices=2 --set train.strategy=ddp":
        "two DDP processes that re-launch the running program (pytest, in-process); tests/test_training.py "
        "runs this command (devices=2, strategy=ddp) in a subprocess",
}
# what `...` stands for in `selfsup finetune ... --method M`: the usual model, task and files; the line's own
# flags come after it, so its own --out wins
ELLIPSIS = "--model runs/bert --task sequence-classification --train train.jsonl --eval eval.jsonl --out runs/{method}"

# tiny sizes, appended to the README's own command (argparse keeps the last --max-steps / --epochs)
PRETRAIN_SETS = {
    "text": [f"--set={o}" for o in TINY],
    "images": [f"--set={o}" for o in ("data.image_size=16", "train.batch_size=32", "train.eval_every=1000",
                                      "train.checkpoint_every=1000", "train.eval_batches=1", "train.warmup_steps=1",
                                      "model.embedding_size=16", "model.hidden_sizes=[16,32]", "model.depths=[1,1]")],
    "speech": [f"--set={o}" for o in ("model.hidden_size=32", "model.num_layers=2", "train.batch_size=16",
                                      "train.eval_every=1000", "train.checkpoint_every=1000", "train.eval_batches=1")],
    "tables": [f"--set={o}" for o in ("train.batch_size=32", "train.eval_every=1000", "train.checkpoint_every=1000",
                                      "train.warmup_steps=1")],
}
PRETRAIN_SETS["voice"] = [f"--set={o}" for o in ("model.hidden_size=16", "model.num_blocks=1", "train.batch_size=8",
                                                  "train.eval_every=1000", "train.checkpoint_every=1000",
                                                  "train.warmup_steps=1")]
PRETRAIN_SETS["summaries"] = [f"--set={o}" for o in ("train.batch_size=8", "train.eval_every=1000",
                                                     "train.checkpoint_every=1000", "train.warmup_steps=1")]
RECIPE_MODALITY = {"mlm": "text", "gpt": "text", "simclr": "images", "mockingjay": "speech", "vqvae": "tables",
                   "adain_vc": "voice", "text_as_code": "summaries"}
FINETUNE_SETS = ["--set=max_length=32", "--set=batch_size=16", "--no-progress"]


def key(example: Example) -> str:
    return " ".join(example.text.splitlines()[0].split())


def last_value(argv: list[str], flag: str) -> str | None:
    """The value argparse keeps for `flag` (its last one), or None."""
    return argv[len(argv) - argv[::-1].index(flag)] if flag in argv else None


def tiny(argv: list[str]) -> list[str]:
    """The README's argv (after `selfsup`) with tiny sizes appended; `...` filled in (ELLIPSIS)."""
    verb = argv[0]
    if "..." in argv:
        method = argv[argv.index("--method") + 1]
        at = argv.index("...")
        argv = argv[:at] + shlex.split(ELLIPSIS.format(method=method)) + argv[at + 1:]
    if verb == "pretrain":
        recipe = argv[1]
        if recipe.endswith((".yaml", ".yml")):  # a run's config.yaml: its sizes are already tiny
            return argv + ["--max-steps", "6", "--no-progress"]
        assert recipe in RECIPE_MODALITY, f"give the README's recipe {recipe!r} tiny sizes in RECIPE_MODALITY"
        return argv + ["--max-steps", "3", "--no-progress", *PRETRAIN_SETS[RECIPE_MODALITY[recipe]]]
    if verb in ("finetune", "distill"):
        steps = ["--epochs", "1"] if "--epochs" in argv else ["--max-steps", "2"]
        return argv + steps + FINETUNE_SETS
    if verb == "evaluate" and "superb" in argv:
        return argv + ["--epochs", "1"]
    if verb == "multitask":
        return argv + ["--set=epochs=1", "--set=max_length=32", "--no-progress"]
    if verb == "early-exit":
        return argv + ["--repeats", "1"]
    if verb == "units":
        return argv + ["--clusters", "8"]
    if argv[:2] == ["anomaly", "fit"]:
        return argv + ["--max-steps", "3"]
    if verb == "convert":
        return argv + ["--iterations", "2"]
    return argv


# ---------------------------------------------------------------------------------------------------------------
# the files the README refers to, at tiny size, from shipped data

def _novel(name: str, chars: int) -> str:
    text = lzma.decompress((ASSETS / f"austen-{name}.txt.xz").read_bytes()).decode("utf-8")
    return text[len(text) // 10: len(text) // 10 + chars]  # past the front matter


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_inputs(folder: Path) -> None:
    """corpus/, notes.jsonl, train/eval/test.jsonl (pos / neg), unlabeled.jsonl, new.txt, dna.csv, dna-eval.csv,
    train.npz, eval.npz, suite.yaml, mixture.yaml, en.txt, de.txt, en-de.csv and runs/bilingual."""
    from selfsup.data.austen import austen_mark_task, austen_speech_task
    from selfsup.data.images import digits_split
    from test_symbol_map import dna_rows, write_csv

    (folder / "corpus").mkdir()
    (folder / "corpus" / "persuasion.txt").write_text(_novel("persuasion", 60_000), encoding="utf-8")
    (folder / "corpus" / "emma.txt").write_text(_novel("emma", 60_000), encoding="utf-8")
    notes = [p for p in _novel("northangerabbey", 60_000).split("\n\n") if p.strip()]
    _write_jsonl(folder / "notes.jsonl", [{"id": i, "body": " ".join(p.split())} for i, p in enumerate(notes)])

    # the README's labels are pos / neg: real Austen sentences, spoken by a character (pos) or the narrator (neg)
    task = austen_speech_task(folder / "work" / "speech", train_per_class=24, eval_per_class=16,
                              novels=["persuasion", "emma"])
    relabel = {"speech": "pos", "narration": "neg"}
    train = [{"text": r["text"], "label": relabel[r["label"]]} for r in map(json.loads, open(task["train"]))]
    held = [{"text": r["text"], "label": relabel[r["label"]]} for r in map(json.loads, open(task["eval"]))]
    _write_jsonl(folder / "train.jsonl", train[:40])
    _write_jsonl(folder / "unlabeled.jsonl", [{"text": r["text"]} for r in train[40:]])
    _write_jsonl(folder / "eval.jsonl", held[0::2])
    _write_jsonl(folder / "test.jsonl", held[1::2])
    (folder / "new.txt").write_text("How very kind of you!\nShe walked home alone.\n", encoding="utf-8")

    write_csv(folder / "dna.csv", dna_rows(32, 0))  # random ACGT, GATTACA planted in half (test_symbol_map.py)
    write_csv(folder / "dna-eval.csv", dna_rows(16, 1))

    tr, ev = digits_split(folder / "work" / "digits", n_train=300)
    shutil.copy(tr, folder / "train.npz")
    shutil.copy(ev, folder / "eval.npz")

    (folder / "suite.yaml").write_text("""out: runs/bench
defaults: {max_steps: 2, set: [max_length=32, batch_size=16]}
tasks:
  - {name: sentiment, task: sequence-classification, train: train.jsonl, eval: eval.jsonl}
models:
  - {name: bert, model: runs/bert, inits: [pretrained, scratch]}
""")
    question = austen_mark_task(folder / "question", "?", train_per_class=4, eval_per_class=8,
                                novels=["persuasion"])
    (folder / "mixture.yaml").write_text(f"""train:
  - name: sentiment
    train: train.jsonl
    eval: eval.jsonl
    prompts:
      - {{template: "{{text}} Was it said aloud? {{mask}}.", verbalizer: {{pos: yes, neg: no}}}}
zero_shot:
  - name: question
    eval: {Path(question["eval"]).relative_to(folder)}
    template: "{{text}} Is that a question? {{mask}}."
    verbalizer: {{question: yes, statement: no}}
""")

    for lang in ("en", "de"):  # the first 400 fortunes of each language
        lines = (DATA / f"{lang}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / f"{lang}.txt").write_text("".join(lines[:400]), encoding="utf-8")
    shutil.copy(DATA / "dictionary.csv", folder / "en-de.csv")
    # the README's runs/bilingual (a multilingual encoder the user has): a tiny MLM on the two languages
    from selfsup.engine.pretrain import pretrain

    pretrain("mlm", [str(folder / "en.txt"), str(folder / "de.txt")], folder / "runs" / "bilingual", max_steps=3,
             progress=False, overrides=list(TINY))


# ---------------------------------------------------------------------------------------------------------------
# running the examples

@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def inside(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _bash(text: str, folder: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", text], cwd=folder, input=stdin, capture_output=True, text=True,
                          timeout=300, env=env)


def _selfsup(command: str, folder: Path) -> Outcome:
    """`selfsup ARGS [| tail]`: ARGS through selfsup.cli.main in `folder`; a pipe's tail reads its stdout."""
    from selfsup.cli import main

    head, _, tail = command.partition(" | ")
    argv = tiny(shlex.split(head)[1:])
    out, err = io.StringIO(), io.StringIO()
    with inside(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if tail and code == 0:
        res = _bash(tail, folder, stdin=out.getvalue())
        return Outcome(res.returncode, res.stdout, err.getvalue() + res.stderr)
    written = last_value(argv, "--out")
    if code == 0 and written and not (folder / written).exists():
        return Outcome(1, out.getvalue(), err.getvalue() + f"\n(walk) exit 0 but --out {written} is not there")
    return Outcome(code, out.getvalue(), err.getvalue())


def _tiny_api(mp: pytest.MonkeyPatch) -> None:
    """The API calls of the README's python blocks get the same tiny sizes as its commands."""
    import selfsup

    pretrain, finetune, detector = selfsup.pretrain, selfsup.finetune, selfsup.AutoEncoderDetector
    mp.setattr(selfsup, "pretrain", lambda *a, overrides=(), **kw: pretrain(
        *a, **{**kw, "max_steps": 3, "progress": False, "overrides": [*overrides, *TINY]}))
    mp.setattr(selfsup, "finetune", lambda *a, overrides=(), **kw: finetune(
        *a, **{**kw, "max_steps": 2, "overrides": [*overrides, "max_length=32", "batch_size=16"]}))
    mp.setattr(selfsup, "AutoEncoderDetector", lambda **kw: detector(**{**kw, "max_steps": 3}), raising=False)


def _python(source: str, line: int, folder: Path) -> Outcome:
    """A ```python block, in-process in `folder`, with tiny sizes injected into its API calls (_tiny_api)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        _tiny_api(mp)
        with inside(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(source, f"{README_PATH}:{line}", "exec"), {"__name__": "__readme__"})
    return Outcome(0, out.getvalue(), err.getvalue())


class Walk:
    """The README's examples run once each, in order, in one folder; asking for example i runs the ones before."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.outcomes: dict[int, Outcome] = {}
        self.ready: bool | BaseException = False

    def run_through(self, index: int) -> Outcome:
        if isinstance(self.ready, BaseException):
            raise RuntimeError("making the README's input files failed (see the first failure)") from self.ready
        if not self.ready:
            try:
                make_inputs(self.folder)
            except BaseException as e:
                self.ready = e
                raise
            self.ready = True
        for i in range(index + 1):
            if i not in self.outcomes and key(EXAMPLES[i]) not in SKIP:
                self.outcomes[i] = self._run(EXAMPLES[i])
        return self.outcomes[index]

    def _run(self, example: Example) -> Outcome:
        try:
            if example.kind == "python":
                return _python(example.text, example.line, self.folder)
            if example.text.startswith("selfsup "):
                return _selfsup(example.text, self.folder)
            res = _bash(example.text, self.folder)
            return Outcome(res.returncode, res.stdout, res.stderr)
        except (Exception, SystemExit) as e:  # a traceback (or argparse's exit) where the README promised a result
            import traceback

            return Outcome(99, "", "".join(traceback.format_exception(e)))


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Iterator[Walk]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: on 2 shared cores a second thread only spins (10x slower, not 2x)
    yield Walk(tmp_path_factory.mktemp("readme-walk"))
    torch.set_num_threads(threads)


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=[e.label[:90] for e in EXAMPLES])
def test_readme_example_runs(walk, index):
    example = EXAMPLES[index]
    if key(example) in SKIP:
        pytest.skip(SKIP[key(example)])
    outcome = walk.run_through(index)
    assert outcome.code == 0, (f"README.md:{example.line} `{key(example)}` exited {outcome.code}:\n"
                               f"{outcome.stderr[-3000:]}")
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]  # a user sees results or one-line errors


def test_the_walk_found_every_kind_of_example():
    """The extraction keeps README order, joins continuation lines and keeps heredoc bodies and python blocks."""
    text = README_PATH.read_text(encoding="utf-8")
    assert sum(e.kind == "python" for e in EXAMPLES) == text.count("```python\n")
    keys = [key(e) for e in EXAMPLES]
    made = next(i for i, k in enumerate(keys) if k.startswith("selfsup pretrain mlm --data corpus/ --out runs/bert "))
    used = next(i for i, k in enumerate(keys) if "--model runs/bert " in k)
    assert made < used
    assert all(not e.text.rstrip().endswith("\\") for e in EXAMPLES)
    heredocs = [e for e in EXAMPLES if "<<'" in e.text]
    assert heredocs and all(e.text.splitlines()[-1] == e.text.splitlines()[0].split("<<'")[1].strip("'")
                            for e in heredocs)


def test_every_skip_names_a_readme_example():
    """A stale SKIP entry (its command left the README) fails, so the table stays the list of what is not run."""
    keys = {key(e) for e in EXAMPLES}
    assert set(SKIP) <= keys, set(SKIP) - keys


def test_tiny_only_appends_sizes():
    argv = shlex.split("finetune --model runs/bert --task sequence-classification --train a --eval b --out o --seeds 3")
    assert tiny(argv)[:len(argv)] == argv
    filled = tiny(["finetune", "...", "--out", "runs/exit", "--method", "early-exit"])
    assert last_value(filled, "--out") == "runs/exit" and last_value(filled, "--model") == "runs/bert"
    assert last_value(tiny(["pretrain", "mlm", "--data", "c", "--out", "o", "--max-steps", "2000"]), "--max-steps") == "3"
    with pytest.raises(AssertionError, match="tiny sizes"):
        tiny(["pretrain", "no-such-recipe", "--data", "x", "--out", "y"])

"""The README's commands are a contract: every `selfsup ...` line of its bash blocks names a real verb with flags
and choices the CLI accepts (argparse parses it exactly as written), every built-in recipe it names exists,
and the install and test commands are the ones `.ci/run` uses. (The commands' behaviour is tested verb by verb
in the other test files, on tiny data, and test_readme_walk.py runs them all in README order.)"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from readme_examples import README_PATH, bash_commands
from selfsup.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = README_PATH.read_text(encoding="utf-8")
SELFSUP = [c for c in bash_commands(README) if c.startswith("selfsup ")]


def test_the_readme_shows_the_verbs():
    assert len(SELFSUP) > 30
    verbs = {shlex.split(c)[1] for c in SELFSUP}
    assert {"pretrain", "finetune", "evaluate", "predict", "demo", "report", "multitask", "align"} <= verbs


@pytest.mark.parametrize("command", [c for c in SELFSUP if " ... " not in c])
def test_every_readme_command_parses(command, capsys):
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"argparse refused `{command}`: {capsys.readouterr().err.strip().splitlines()[-1:]} ({e})")
    assert getattr(args, "func", None) is not None or argv[-1] in ("--help", "-h")


def test_recipes_the_readme_names_exist():
    from selfsup.recipes import list_recipes

    known = set(list_recipes())
    named = {shlex.split(c)[2] for c in SELFSUP if shlex.split(c)[1] == "pretrain"
             and not shlex.split(c)[2].endswith((".yaml", ".yml"))}
    assert named and named <= known, named - known


def test_ci_runs_the_readmes_test_command():
    test_lines = [c for c in bash_commands(README) if "pytest" in c]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_lines and any(line in ci for line in test_lines), (test_lines, ci[-500:])


def test_the_readme_suite_example_is_a_valid_suite(tmp_path):
    """The README's YAML suite block loads with the suite loader (its wildcard model needs export folders)."""
    import re

    from selfsup.adapt.tools.suite import load_suite

    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if "tasks:" in b]
    assert blocks, "README.md shows no suite (a ```yaml block with tasks:)"
    for step in (100, 200):
        (tmp_path / "runs" / "bert" / "exports" / f"step-{step}").mkdir(parents=True)
    (tmp_path / "suite.yaml").write_text(blocks[0])
    suite, _ = load_suite(tmp_path / "suite.yaml")
    assert [t.name for t in suite.tasks] == ["sentiment", "tags"] and suite.tasks[1].epochs == 5
    assert [m.name for m in suite.models] == ["bert", "embryo@step-100", "embryo@step-200"]

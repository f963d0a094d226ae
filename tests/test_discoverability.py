"""Finding one's way and a quiet terminal: `selfsup recipes NAME` (every key with its meaning and default, as YAML
that `pretrain` takes), `--print-config` (the resolved recipe, nothing run), docs/recipe-keys.md generated from
the schemas, `--quiet` on every verb, and progress that never puts `\\r` frames where a log reads them."""
from __future__ import annotations

import argparse

import pytest
import yaml

from conftest import ROOT, TINY, run_cli

REFERENCE = ROOT / "docs" / "recipe-keys.md"


def _recipe_names() -> list[str]:
    from selfsup.recipes import list_recipes

    return list(list_recipes())


def test_every_recipe_prints_as_commented_yaml_that_loads_back_identically():
    from selfsup.recipes import load_recipe
    from selfsup.recipes.reference import commented_yaml

    for name in _recipe_names():
        recipe = load_recipe(name)
        text = commented_yaml(recipe)
        data = yaml.safe_load(text)
        assert load_recipe(data).to_dict() == recipe.to_dict(), name
        # every key of every schema is written, the YAML file's omissions included
        assert set(data["train"]) == {f for f in recipe.to_dict()["train"]}
        assert set(data["model"]) == set(recipe.to_dict()["model"]), name
    mlm = commented_yaml(load_recipe("mlm"))
    line = next(x for x in mlm.splitlines() if x.strip().startswith("batch_size:"))
    assert "# global batch per optimizer step" in line and "default 32" in line, line
    line = next(x for x in mlm.splitlines() if x.strip().startswith("holdout_fraction:"))  # not set by mlm.yaml
    assert line.strip().startswith("holdout_fraction: 0.02") and "default 0.05" in line, line
    assert "one of token, whole-word, span" in mlm


def test_recipes_name_on_the_command_line_and_pretrain_accepts_its_output(tmp_path, capsys):
    from selfsup.cli import main

    res = run_cli("recipes", "gpt")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    path = tmp_path / "gpt_full.yaml"
    path.write_text(res.stdout)
    assert main(["pretrain", str(path), "--data", str(tmp_path / "unread.txt"), "--out", str(tmp_path / "run"),
                 "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(res.stdout)
    assert not (tmp_path / "run").exists()


def test_unknown_recipe_name_is_one_line_with_close_names(capsys):
    from selfsup.cli import main

    assert main(["recipes", "mlm_wwn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mlm_wwm" in err and "unknown recipe" in err, err


def test_print_config_resolves_overrides_without_reading_data_or_writing(tmp_path, capsys):
    from selfsup.cli import main

    out = tmp_path / "run"
    code = main(["pretrain", "mlm", "--data", str(tmp_path / "no-such-file.txt"), "--out", str(out),
                 "--set", "train.lr=5e-4", "--set", "model.hidden_size=64", "--max-steps", "7", "--seed", "3",
                 "--print-config"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    cfg = yaml.safe_load(captured.out)
    assert cfg["train"]["lr"] == 5e-4 and cfg["model"]["hidden_size"] == 64
    assert cfg["train"]["max_steps"] == 7 and cfg["train"]["seed"] == 3
    assert cfg["train"]["warmup_steps"] == 0  # mlm's 30 warm-up steps, shortened as the run would
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # a bad --set is the usual one-line error
    assert main(["pretrain", "mlm", "--data", "x", "--out", str(out), "--set", "train.lr=-1", "--print-config"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_reference_doc_is_generated_from_the_schemas():
    from selfsup.cli import _reference
    from selfsup.recipes.reference import REFERENCE_COMMAND

    text = _reference()
    assert REFERENCE.read_text(encoding="utf-8") == text, (
        f"docs/recipe-keys.md is stale: regenerate it with `{REFERENCE_COMMAND}`")
    for needle in ("| `train.lr` |", "### objective.name: simclr", "### model.type: resnet, vit", "`data.block_size`",
                   "### every method", "| `lora_r` |"):
        assert needle in text, needle


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def test_every_verb_takes_quiet():
    from selfsup.cli import build_parser

    leaves = list(_leaf_parsers(build_parser()))
    assert len(leaves) > 15
    for path, parser in leaves:
        assert "--quiet" in parser._option_string_actions, " ".join(path)
    assert {"pretrain", "finetune", "evaluate", "predict", "embed", "benchmark", "demo"} <= {p[0] for p, _ in leaves}
    assert ("anomaly", "fit") in {p for p, _ in leaves} and ("data", "artificial") in {p for p, _ in leaves}


def test_quiet_drops_info_keeps_warnings_and_is_undone_after_the_command(capsys):
    from selfsup.console import info, is_quiet, quiet_mode, warn

    with quiet_mode():
        info("an informational line")
        warn("a warning that changes what a result means")
        assert is_quiet()
    info("said again")
    err = capsys.readouterr().err
    assert "informational" not in err and "selfsup: warning: a warning" in err and "selfsup: said again" in err
    assert not is_quiet()


def test_quiet_pretrain_and_recipes_write_nothing_on_stderr(tmp_path, persuasion):
    from selfsup.recipes import load_recipe
    from selfsup.recipes.reference import commented_yaml

    full = tmp_path / "mlm_full.yaml"  # what `selfsup recipes mlm` prints, as the recipe of a real run
    full.write_text(commented_yaml(load_recipe("mlm")))
    res = run_cli("pretrain", str(full), "--data", str(persuasion), "--out", str(tmp_path / "run"),
                  "--max-steps", "2", "--quiet", *[x for kv in TINY for x in ("--set", kv)])
    assert res.returncode == 0 and res.stderr == "", res.stderr[-3000:]
    assert "\r" not in res.stdout and "done: steps=2" in res.stdout
    assert (tmp_path / "run" / "model").is_dir()
    res = run_cli("recipes", "--quiet")
    assert res.returncode == 0 and res.stderr == "" and "mlm" in res.stdout, res.stderr


def test_progress_off_a_terminal_is_plain_step_lines_on_stderr(tmp_path, persuasion):
    res = run_cli("pretrain", "mlm", "--data", str(persuasion), "--out", str(tmp_path / "run"), "--max-steps", "4",
                  *[x for kv in [*TINY, "train.log_every=2"] for x in ("--set", kv)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "\r" not in res.stdout and "\r" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines[:2]] == ["2/4", "4/4"], res.stderr
    assert "loss " in lines[1] and "tokens/s " in lines[1] and "eta " in lines[1], lines[1]
    shown = [line for line in res.stdout.splitlines() if line.strip()]  # results only on stdout
    assert shown[0].startswith("done: steps=4") and shown[1].startswith("wrote "), res.stdout


@pytest.mark.parametrize("every, expected", [(3, ["3/7", "6/7", "7/7"]), (1, [f"{i}/7" for i in range(1, 8)])])
def test_plain_lines_every_n_steps_and_the_last(every, expected):
    import io

    from selfsup.engine.progress import StepProgress

    stream = io.StringIO()
    bar = StepProgress(every, stream=stream)
    for step in range(1, 8):
        bar.show(step, 7, f"loss {1 / step:.4f}")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == expected and "\r" not in stream.getvalue()


def test_finetune_print_config_shows_every_set_key_resolved(tmp_path, capsys):
    from selfsup.cli import main

    args = ["finetune", "--model", str(tmp_path / "no-model"), "--task", "sequence-classification", "--train",
            str(tmp_path / "a.csv"), "--eval", str(tmp_path / "b.csv"), "--out", str(tmp_path / "ft"), "--epochs", "5"]
    assert main([*args, "--method", "lora", "--set", "lr=3e-4", "--set", "lora_r=4", "--print-config", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    cfg = yaml.safe_load(out)
    assert (cfg["lr"], cfg["lora_r"], cfg["epochs"], cfg["batch_size"], cfg["lora_alpha"]) == (3e-4, 4, 5, 32, 16)
    assert "# rank r; default 8" in out and list(tmp_path.iterdir()) == []
    assert main([*args, "--set", "lora_r=4", "--print-config"]) == 2  # --method full has no lora_r
    assert "--method lora" in capsys.readouterr().err

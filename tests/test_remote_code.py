"""Remote code runs only with the command-line flag: a recipe file, a run's config.yaml or --set that switch
trust_remote_code on are refused (one line naming the key, exit 2, nothing written); the flag allows them."""
from __future__ import annotations

import yaml
from conftest import run_cli

from selfsup.engine.pretrain import check_remote_code
from selfsup.recipes import load_recipe


def test_a_recipe_file_cannot_switch_remote_code_on(tmp_path, persuasion):
    recipe = load_recipe("mlm").to_dict()
    recipe["model"]["trust_remote_code"] = True
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(recipe))
    res = run_cli("pretrain", str(path), "--data", str(persuasion), "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "model.trust_remote_code" in res.stderr and "--trust-remote-code" in res.stderr
    assert not (tmp_path / "run").exists()
    res = run_cli("pretrain", "mlm", "--data", str(persuasion), "--out", str(tmp_path / "run"),
                  "--set", "data.tokenizer.trust_remote_code=true")
    assert res.returncode == 2 and "data.tokenizer.trust_remote_code" in res.stderr
    assert not (tmp_path / "run").exists()


def test_the_flag_allows_it_and_plain_recipes_need_nothing():
    recipe = load_recipe("mlm", ["model.trust_remote_code=true", "data.tokenizer.trust_remote_code=true"])
    check_remote_code(recipe, trusted=True)
    check_remote_code(load_recipe("mlm"), trusted=False)
    check_remote_code(load_recipe("simclr"), trusted=False)  # no such keys: nothing to check

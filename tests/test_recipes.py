"""Recipe validation: unknown keys, wrong types and impossible values name the key."""
from __future__ import annotations

import pytest

from selfsup.errors import SelfsupError
from selfsup.recipes import list_recipes, load_recipe


def test_every_builtin_recipe_loads_and_has_a_description():
    recipes = list_recipes()
    assert {"mlm", "gpt", "bert_nsp", "albert_sop", "mlm_wwm", "mlm_span"} <= set(recipes)
    for name, description in recipes.items():
        r = load_recipe(name)
        assert description and r.name


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr: must be > 0"),
    ("objective.mask_rate=1.5", "objective.mask_rate: must be <= 1"),
    ("objective.mask_rate=0", "objective.mask_rate: must be > 0"),
    ("train.batch_size=many", "train.batch_size: expected int"),
    ("train.bogus=1", "train.bogus: unknown key"),
    ("model.num_heads=3", "model.hidden_size: 128 is not divisible by num_heads=3"),
    ("objective.masking=words", "objective.masking: must be one of"),
    ("data.block_size=512", "data.block_size: 512 exceeds model.max_length"),
    ("model.type=gpt2", "model.type: mlm needs an encoder"),
    ("objective.name=nonsense", "objective.name: unknown objective 'nonsense'"),
    ("data.tokenizer.kind=pretrained", "data.tokenizer.pretrained: required"),
    ("objective.mask_token_prob=0.95", "mask_token_prob + random_token_prob"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(SelfsupError, match=message.replace("(", r"\(").replace("+", r"\+")):
        load_recipe("mlm", [override])


def test_unknown_top_level_key_and_unknown_recipe(tmp_path):
    with pytest.raises(SelfsupError, match="optimiser: unknown key"):
        load_recipe({"objective": "mlm", "optimiser": {}})
    with pytest.raises(SelfsupError, match="nope: unknown recipe"):
        load_recipe("nope")
    bad = tmp_path / "r.yaml"
    bad.write_text("objective: [unclosed\n")
    with pytest.raises(SelfsupError, match=r"r.yaml: line \d+ invalid YAML"):
        load_recipe(str(bad))


def test_overrides_parse_yaml_values_and_dotted_keys():
    r = load_recipe("mlm", ["train.lr=5e-4", "objective.masking=whole-word", "model.num_layers=3"])
    assert r.train.lr == 5e-4 and r.objective.masking == "whole-word" and r.model.num_layers == 3
    assert r.to_dict()["objective"]["name"] == "mlm"

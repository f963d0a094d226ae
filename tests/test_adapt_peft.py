"""Parameter-efficient fine-tuning (`--method lora|adapter|prefix|soft-prompt`): LoRA equals its base at init,
Houlsby adapters start near the identity, trainable-parameter counts match the formulas, LoRA learns a real
task, the saved artifact is small and reloads (alone, or several onto one shared backbone), and unsupported
method/family combinations are one-line errors."""
from __future__ import annotations

import json

import pytest
import torch

from selfsup.adapt.core.evaluation import evaluate_finetuned, predict


from selfsup.adapt.core.run import finetune
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.core.models import build_model, count_parameters, load_tokenizer
from selfsup.adapt.core.options import split_overrides
from selfsup.adapt.registry import get_method
from selfsup.adapt.shared.shared_backbone import load_shared, use_task
from selfsup.data.austen import austen_novels_task
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=48", "batch_size=16"]
H, LAYERS, FFN = 32, 2, 64  # the tiny checkpoints of make_checkpoint
HEAD = (H * H + H) + (H * 2 + 2)  # BERT's pooler (absent from a masked-LM checkpoint) + 2-label classifier


@pytest.fixture(scope="module")
def bert(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    return make_checkpoint(tmp_path_factory.mktemp("ck"), "bert", texts)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, bert):
    """A backbone with features (the random tiny checkpoint has none a frozen-backbone method can use): the
    encoder of a short full fine-tune on another pair of novels (Persuasion or Northanger Abbey?)."""
    import transformers as tf

    d = tmp_path_factory.mktemp("tuned")
    other = austen_novels_task(d / "task", train_per_class=150, eval_per_class=10,
                               novels=["persuasion", "northangerabbey"])
    finetune(bert, "sequence-classification", other["train"], other["eval"], d / "run", epochs=4,
             overrides=FAST + ["lr=2e-3", "keep_best=false"])
    tf.AutoModelForSequenceClassification.from_pretrained(d / "run" / "model").bert.save_pretrained(d / "bb")
    load_tokenizer(d / "run" / "model").save_pretrained(d / "bb")
    return d / "bb"


@pytest.fixture(scope="module")
def novels(tmp_path_factory):
    return austen_novels_task(tmp_path_factory.mktemp("novels"), train_per_class=150, eval_per_class=50,
                              novels=["persuasion", "emma"])


def wrap(model, method: str, head: set, kind: str, sets: list, source):
    """The registered method's `prepare` with its options parsed from `--set` pairs."""
    adapter = get_method(method)
    _, (opts,) = split_overrides(sets, own=(adapter.Options,))
    adapter.check(model.config.model_type, kind, opts)
    return adapter.prepare(model, head, kind, opts, source)


def _model(path, kind="sequence-classification", labels=("a", "b")):
    tok = load_tokenizer(path)
    model, head = build_model(path, kind, list(labels), tok)
    batch = tok(["Anne walked to Bath in the evening .", "Captain Wentworth wrote"], padding=True,
                return_tensors="pt")
    return model.eval(), head, {k: batch[k] for k in ("input_ids", "attention_mask")}


def _wrapped(path, method, sets=()):
    model, head, batch = _model(path)
    with torch.no_grad():
        ref = model(**batch).logits
    wrapped, backbone = wrap(model, method, head, "sequence-classification", list(sets), path)
    return wrapped.eval(), ref, batch, backbone


def test_lora_equals_its_base_at_init(bert):
    model, ref, batch, _ = _wrapped(bert, "lora")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref)


def test_adapter_at_init_is_near_identity(bert):
    model, ref, batch, _ = _wrapped(bert, "adapter")
    with torch.no_grad():
        diff = (model(**batch).logits - ref).abs().max().item()
    assert diff < 1e-3
    assert sum("_adapter." in n for n, _ in model.named_parameters()) == 4 * 2 * LAYERS  # 2 sites x (down, up)


@pytest.mark.parametrize("method,sets,expected", [
    # LoRA: r * (in + out) per targeted Linear (query and value of each layer)
    ("lora", ["lora_r=4"], 2 * LAYERS * 4 * (H + H)),
    # Houlsby: (h*m + m + m*h + h) per site, 2 sites per layer; plus every LayerNorm (embeddings + 2 per layer)
    ("adapter", ["adapter_size=8"], 2 * LAYERS * (2 * H * 8 + 8 + H) + (1 + 2 * LAYERS) * 2 * H),
    # prefix: a key and a value vector per virtual token per layer
    ("prefix", ["num_virtual_tokens=5"], 5 * LAYERS * 2 * H),
    # prompt tuning: one input embedding per virtual token
    ("soft-prompt", ["num_virtual_tokens=5"], 5 * H),
])
def test_trainable_parameter_counts_are_exact(bert, method, sets, expected):
    model, _, batch, backbone = _wrapped(bert, method, sets)
    trainable, _ = count_parameters(model)
    assert trainable == expected + HEAD
    assert backbone == sum(p.numel() for p in build_model(bert, "sequence-classification", ["a", "b"],
                                                             load_tokenizer(bert))[0].parameters()) - HEAD
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)


def test_lora_learns_saves_a_small_artifact_and_reloads(tuned, novels, tmp_path):
    m = finetune(tuned, "sequence-classification", novels["train"], novels["eval"], tmp_path / "run", epochs=4,
                 method="lora", overrides=FAST + ["lr=1e-2", "lora_r=16", "keep_best=false"])
    # it learns: the training passages are fitted well above chance (held-out accuracy on 100 passages from
    # a tiny random-init backbone is too noisy to bound tightly; it must not fall below chance)
    fitted = evaluate_finetuned(tmp_path / "run", novels["train"])["eval"]["accuracy"]
    assert fitted >= 0.65 and m["eval"]["accuracy"] >= 0.5
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"] - 0.03
    assert m["trainable_parameters"] == 2 * LAYERS * 16 * 2 * H + (H * 2 + 2)  # this checkpoint has a pooler
    assert m["trainable_percent"] == pytest.approx(100 * m["trainable_parameters"] / m["backbone_parameters"], abs=1e-4)
    saved = tmp_path / "run" / "model"
    assert (saved / "adapter_config.json").is_file() and not (saved / "model.safetensors").exists()
    assert m["artifact_bytes"] * 5 < (tuned / "model.safetensors").stat().st_size
    again = evaluate_finetuned(tmp_path / "run", novels["eval"])
    assert again["eval"]["accuracy"] == m["eval"]["accuracy"]
    preds = list(predict(tmp_path / "run", novels["eval"]))
    assert len(preds) == 100 and set(preds[0]["probabilities"]) == {"emma", "persuasion"}


def test_adapter_run_saves_only_adapters_and_reloads(bert, novels, tmp_path):
    m = finetune(bert, "sequence-classification", novels["train"], novels["eval"], tmp_path / "run", max_steps=3,
                 method="adapter", overrides=FAST + ["adapter_size=8"])
    saved = tmp_path / "run" / "model"
    desc = json.loads((saved / "adapters.json").read_text())
    assert len(desc["sites"]) == 2 * LAYERS and not (saved / "model.safetensors").exists()
    assert evaluate_finetuned(tmp_path / "run", novels["eval"])["eval"]["accuracy"] == m["eval"]["accuracy"]


@pytest.mark.parametrize("method,sets", [("lora", ["lr=1e-2"]), ("adapter", ["lr=1e-2", "adapter_size=8"])])
def test_two_task_artifacts_share_one_backbone(bert, tmp_path, method, sets):
    three = austen_novels_task(tmp_path / "three", train_per_class=20, eval_per_class=8,
                               novels=["persuasion", "emma", "northangerabbey"])
    two = austen_novels_task(tmp_path / "two", train_per_class=20, eval_per_class=8,
                             novels=["persuasion", "emma"])
    for name, task, extra in (("a", two, []), ("b", three, ["adapter_size=4"] * (method == "adapter"))):
        finetune(bert, "sequence-classification", task["train"], task["eval"], tmp_path / name, max_steps=3,
                 method=method, seed=len(name), overrides=FAST + sets + extra)
    shared, tok, infos = load_shared([tmp_path / "a", tmp_path / "b"])
    backbone = {n: p.data_ptr() for n, p in shared.named_parameters()
                if not any(w in n for w in ("classifier", "pooler", "adapter", "lora", "LayerNorm"))}
    assert [len(i["labels"]) for i in infos.values()] == [2, 3]
    batch = tok(["Anne walked to Bath.", "Emma sat at Hartfield."], padding=True, return_tensors="pt")
    for name, folder in zip(infos, ("a", "b")):
        use_task(shared, infos, name)
        alone, _, _ = load_finetuned(tmp_path / folder)
        with torch.no_grad():
            got = shared(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            want = alone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert got.shape == want.shape == (2, len(infos[name]["labels"]))
        assert torch.allclose(got, want, atol=1e-5)
        # switching tasks leaves the one backbone where it was: no copy per task
        assert {n: p.data_ptr() for n, p in shared.named_parameters() if n in backbone} == backbone


def test_artifacts_of_two_kinds_cannot_share_a_backbone(bert, tmp_path):
    two = austen_novels_task(tmp_path / "two", train_per_class=8, eval_per_class=4, novels=["persuasion", "emma"])
    for method in ("lora", "adapter", "full"):
        finetune(bert, "sequence-classification", two["train"], two["eval"], tmp_path / method, max_steps=1,
                 method=method, overrides=FAST)
    for folders, words in (([tmp_path / "lora", tmp_path / "adapter"], "cannot share"),
                           ([tmp_path / "lora", tmp_path / "full"], "--method full")):
        with pytest.raises(SelfsupError) as e:
            load_shared(folders)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_unsupported_method_family_is_a_one_line_error(tmp_path, persuasion, novels):
    texts = [t for t in persuasion.read_text().split("\n\n")[:100] if t.strip()]
    albert = make_checkpoint(tmp_path, "albert", texts)
    with pytest.raises(SelfsupError) as e:
        finetune(albert, "sequence-classification", novels["train"], novels["eval"], tmp_path / "run", max_steps=1,
                 method="prefix", overrides=FAST)
    assert "prefix" in str(e.value) and "albert" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(SelfsupError, match="soft-prompt.*token-classification"):
        model, head, _ = _model(albert, "token-classification", ["O", "B-PER"])
        wrap(model, "soft-prompt", head, "token-classification", [], albert)
    with pytest.raises(SelfsupError, match="--method"):
        finetune(albert, "sequence-classification", novels["train"], novels["eval"], tmp_path / "x", method="nosuch")

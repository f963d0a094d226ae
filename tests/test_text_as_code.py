"""Text as the code (objectives/text_as_code.py): the straight-through Gumbel code is exactly one-hot forward
with the soft sample's gradient backward, and the whole code passes gradients to the generator; ROUGE on a
hand example equals its formula; a short run on the shipped package-summaries set lowers the held-out
reconstruction loss (by over 1 nat per word from the untrained model's); the export reloads with identical codes and
log-probabilities; bad documents are a one-line error (exit 2) and nothing is written."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

SOURCE = "selfsup:package-summaries"
STEPS = 30
FAST = ["train.batch_size=16", "train.eval_every=1000", "train.checkpoint_every=1000", "train.warmup_steps=5",
        "train.threads=1", "train.log_every=5", "model.hidden_size=32", "model.embedding_size=16",
        "model.discriminator_channels=16", "data.vocab_size=1000", "data.max_document_words=24", "train.lr=5e-3"]


def _objective(overrides=()):
    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    recipe = load_recipe("text_as_code", [*FAST, *overrides])
    cls = get_objective("text_as_code")
    prepared = cls.prepare(recipe, [SOURCE])
    return cls(recipe, prepared), prepared


def test_straight_through_code_is_one_hot_and_passes_the_soft_gradient():
    from selfsup.objectives.onehot_autoencoder import gumbel_onehot

    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5]], requires_grad=True)
    w = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    torch.manual_seed(3)
    hard = gumbel_onehot(logits, 0.8)
    torch.manual_seed(3)  # the same Gumbel noise: the soft sample the straight-through step differentiates
    soft = F.gumbel_softmax(logits, tau=0.8, hard=False)
    assert torch.equal(hard.detach(), F.one_hot(soft.argmax(-1), 4).float())
    (g_hard,) = torch.autograd.grad((hard * w).sum(), logits)
    (g_soft,) = torch.autograd.grad((soft * w).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)
    # by hand: d/dl_j sum_i w_i s_i = s_j (w_j - sum_i w_i s_i) / tau
    s = soft.detach()
    torch.testing.assert_close(g_hard, s * (w - (w * s).sum()) / 0.8)

    model, prepared = _objective()
    model.train()
    batch = model.make_batch(list(prepared.train[:4]), [np.random.default_rng(i) for i in range(4)])
    code = model.code(batch["document"])
    assert set(code.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(code.detach().sum(-1), torch.ones(4, model.options.code_words))
    assert not code.detach()[..., :4].any()  # never a special token
    # the last word's reconstruction loss reaches the generator's encoder through every earlier word
    loss, _ = model.reconstruction(code[:, -1:], batch["document"])
    loss.backward()
    assert model.gen_encoder.gru.weight_ih_l0.grad.abs().sum() > 0
    assert model.discriminator.conv.weight.grad is None  # the reconstruction never trains the discriminator


def test_rouge_on_a_hand_example_equals_the_formula():
    from rouge_score import rouge_scorer

    reference, candidate = "the cat sat on the mat", "the cat on the mat"
    s = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(reference, candidate)
    f = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    assert s["rouge1"].fmeasure == pytest.approx(f(5 / 5, 5 / 6))  # the, the, cat, on, mat all match
    assert s["rouge2"].fmeasure == pytest.approx(f(3 / 4, 3 / 5))  # "the cat", "on the", "the mat"
    assert s["rougeL"].fmeasure == pytest.approx(f(5 / 5, 5 / 6))  # LCS "the cat on the mat"


def test_one_optimizer_each_term_reaches_only_its_own_model():
    model, prepared = _objective()
    model.train()
    batch = model.make_batch(list(prepared.train[:8]), [np.random.default_rng(i) for i in range(8)])
    d_params, g_params = list(model.discriminator.parameters()), list(model.gen_decoder.parameters())

    def grads(weight: float, recon_only: bool = False):
        model.options.adversarial_weight = weight
        torch.manual_seed(0)  # the same dropout and Gumbel noise each time
        if recon_only:
            loss = model.reconstruction(model.code(batch["document"]), batch["document"])[0]
        else:
            loss = model(batch)["loss"]
        return torch.autograd.grad(loss, d_params + g_params, allow_unused=True)

    with_adv, without, recon = grads(0.3), grads(0.0), grads(0.0, recon_only=True)
    n = len(d_params)
    # the generator's adversarial term (discriminator parameters detached) never moves the discriminator ...
    for a, b in zip(with_adv[:n], without[:n]):
        torch.testing.assert_close(a, b)
    # ... but moves the generator; and the discriminator's term (codes detached) never moves the generator
    assert any(not torch.allclose(a, b) for a, b in zip(with_adv[n:], without[n:]))
    for a, b in zip(without[n:], recon[n:]):
        torch.testing.assert_close(a, b)


def test_short_run_lowers_reconstruction_and_reloads_identically(tmp_path, capsys):
    import selfsup
    from selfsup.cli import main
    from selfsup.data.summaries import PAD
    from selfsup.objectives.text_as_code import load_text_as_code, summarize

    run = tmp_path / "run"
    metrics = selfsup.pretrain("text_as_code", SOURCE, run, max_steps=STEPS, overrides=FAST, progress=False)
    assert metrics["steps"] == STEPS and math.isfinite(metrics["heldout_recon_loss"])
    model, prepared = _objective()
    model.eval()
    batch = model.make_batch(list(prepared.heldout), [])

    def heldout_recon() -> float:
        with torch.no_grad():
            return float(model.reconstruction(model.code(batch["document"]), batch["document"])[0])

    untrained = heldout_recon()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("objective."): v for k, v in state.items()})
    model.eval()
    trained = heldout_recon()  # the held-out documents' reconstruction from their own (argmax) codes
    assert trained < untrained - 1.0, (trained, untrained)
    loaded = load_text_as_code(run)
    with torch.no_grad():
        code, code2 = model.code(batch["document"]), loaded.code(batch["document"])
        assert torch.equal(code, code2)
        assert torch.equal(model.reconstruction_logits(code, batch["document"]),
                           loaded.reconstruction_logits(code2, batch["document"]))
    docs = [loaded.vocab.decode(d) for d in prepared.heldout[:5]]
    assert summarize(loaded, docs) == [model.vocab.decode(c) for c in code[:5].argmax(-1)]
    assert (batch["document"] != PAD).any()

    assert main(["summarize", "--model", str(run), "--data", SOURCE]) == 0
    assert capsys.readouterr().out.count("\n") == len(prepared.train) + len(prepared.heldout)


@pytest.mark.parametrize("content, message", [("", "empty (no documents)"),
                                              ('{"document": "a b c", "title": "x"}\n', "no key 'summary'")])
def test_bad_documents_are_one_line_errors_and_write_nothing(tmp_path, capsys, content, message):
    from selfsup.cli import main

    docs = tmp_path / "docs.jsonl"
    docs.write_text(content)
    out = tmp_path / "out"
    assert main(["pretrain", "text_as_code", "--data", str(docs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(docs) in err and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]

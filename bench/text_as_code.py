"""Text as the code (unsupervised summarization, Wang & Lee 2018) on the shipped package-summaries set.

Trains `text_as_code` through `selfsup pretrain` (and the ablation without the discriminator's term,
adversarial_weight=0), then on the held-out documents (the recipe's own split; their summaries are never seen
in training, not even by the discriminator) reports:

* reconstruction: cross-entropy and token accuracy of the document given its own code, and given the code of
  another held-out document (a shuffle: how much the code tells about its document);
* the code's per-word perplexity under a small language model (selfsup `clm`, a tiny GPT-2 with a byte-level
  BPE, trained here on the *training* documents and summaries, lowercased words as the model sees them), next
  to the reference summaries cut to the same K words, the lead-K and random-K baselines;
* ROUGE-1/2/L F1 (the `rouge-score` package, Google's re-implementation of ROUGE-1.5.5) against the reference
  summaries, for the codes, the first K words of the document (lead-K) and K random words of it (kept in
  document order, seeded);
* code statistics: distinct codes, words copied from the document, repeated words.

    OMP_NUM_THREADS=1 python bench/text_as_code.py [--steps 500] [--lm-steps 400] [--also-weight 1.0]
        [--out bench/results/text_as_code]   (finished runs in --out are reused)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

SOURCE = "selfsup:package-summaries"
COMMON = ["train.checkpoint_every=100000", "train.threads=1", "train.log_every=50"]


def rouge_f1(candidates: list[str], references: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(r, c) for c, r in zip(candidates, references)]
    return {k: float(np.mean([s[k].fmeasure for s in scores])) for k in ("rouge1", "rouge2", "rougeL")}


def word_perplexity(lm_dir: Path, texts: list[str]) -> float:
    """exp(total negative log-likelihood / total words), each text scored after the end-of-text token (a new
    document), so texts cut into different numbers of BPE pieces are compared per word."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(lm_dir)).eval()
    start = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    nll, n_words = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[start] + tok(text, add_special_tokens=False)["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            n_words += len(text.split())
    return math.exp(nll / max(1, n_words))


def reconstruction(model, docs: list[np.ndarray], codes: list[np.ndarray]) -> tuple[float, float]:
    """Token-weighted cross-entropy and accuracy of each document from the given code (word ids)."""
    import torch
    import torch.nn.functional as F

    loss_sum, correct, total = 0.0, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(docs), 64):
            batch = model.make_batch(docs[start:start + 64], [])["document"]
            code = F.one_hot(torch.from_numpy(np.stack(codes[start:start + 64])), len(model.vocab)).float()
            n = int((batch != 0).sum())
            loss, acc = model.reconstruction(code, batch)
            loss_sum, correct, total = loss_sum + float(loss) * n, correct + float(acc) * n, total + n
    return loss_sum / total, correct / total


def code_stats(codes: list[str], docs: list[list[str]]) -> dict[str, float]:
    copied = [np.mean([w in set(d) for w in c.split()]) for c, d in zip(codes, docs)]
    repeated = [1 - len(set(c.split())) / max(1, len(c.split())) for c in codes]
    return {"distinct_codes": len(set(codes)) / len(codes), "copied_from_document": float(np.mean(copied)),
            "repeated_words": float(np.mean(repeated))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lm-steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/text_as_code")
    p.add_argument("--also-weight", type=float, action="append", default=[], metavar="W",
                   help="one more row: the recipe with objective.adversarial_weight=W (repeatable)")
    args = p.parse_args()
    try:
        import rouge_score  # noqa: F401
    except ImportError:
        print("bench/text_as_code.py needs rouge-score: pip install 'selfsup[rouge]' (or pip install rouge-score)",
              file=sys.stderr)
        return 2
    import torch

    import selfsup
    from selfsup.data.summaries import read_pairs
    from selfsup.objectives.base import split_indices
    from selfsup.objectives.text_as_code import load_text_as_code, summarize

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = selfsup.load_recipe("text_as_code")
    k = recipe.objective.code_words
    pairs = read_pairs([SOURCE])
    train, held = split_indices(len(pairs), recipe.data.holdout_fraction, args.seed, "document")
    held_docs = [pairs[i].document[:recipe.data.max_document_words] for i in held]
    references = [" ".join(pairs[i].summary) for i in held]
    rng = np.random.default_rng(args.seed)
    baselines = {"lead-K": [" ".join(d[:k]) for d in held_docs],
                 "random-K": [" ".join(d[j] for j in np.sort(rng.choice(len(d), min(k, len(d)), replace=False)))
                              for d in held_docs]}
    rows: dict[str, dict] = {}
    variants = [("text-as-code", []), ("no discriminator", ["objective.adversarial_weight=0"]),
                *((f"adversarial weight {w:g}", [f"objective.adversarial_weight={w}"]) for w in args.also_weight)]
    for name, extra in variants:
        run = out / name.replace(" ", "-")
        t0 = time.perf_counter()
        if not (run / "metrics.json").is_file():
            selfsup.pretrain("text_as_code", SOURCE, run, max_steps=args.steps, seed=args.seed,
                             overrides=COMMON + extra, progress=False)
        seconds = time.perf_counter() - t0
        model = load_text_as_code(run)
        codes = summarize(model, [" ".join(d) for d in held_docs])
        ids = [model.vocab.encode(d) for d in held_docs]
        code_ids = [model.vocab.encode(c.split()) for c in codes]
        shuffled = code_ids[1:] + code_ids[:1]
        ce, acc = reconstruction(model, ids, code_ids)
        ce_shuf, acc_shuf = reconstruction(model, ids, shuffled)
        rows[name] = {"codes": codes, "recon_ce": ce, "recon_accuracy": acc, "recon_ce_shuffled_codes": ce_shuf,
                      "recon_accuracy_shuffled_codes": acc_shuf, "train_seconds": round(seconds, 1),
                      **code_stats(codes, held_docs), **rouge_f1(codes, references)}
    for name, texts in baselines.items():
        rows[name] = {"codes": texts, **code_stats(texts, held_docs), **rouge_f1(texts, references)}
    rows["reference (first K words)"] = {"codes": [" ".join(pairs[i].summary[:k]) for i in held]}

    # the language model: training documents and summaries only, as the lowercase words the summarizer sees
    lm_data = out / "lm-train.jsonl"
    lm_data.write_text("".join(json.dumps({"text": " ".join(t)}) + "\n" for i in train
                               for t in (pairs[i].document, pairs[i].summary) if t))
    lm = out / "lm"
    if not (lm / "metrics.json").is_file():
        selfsup.pretrain("gpt", str(lm_data), lm, max_steps=args.lm_steps, seed=args.seed, progress=False,
                         overrides=COMMON + ["data.tokenizer.vocab_size=2000", "data.block_size=64",
                                             "model.max_length=64", "train.batch_size=16", "train.eval_every=100"])
    lm_metrics = json.loads((lm / "metrics.json").read_text())
    for name, row in rows.items():
        row["lm_perplexity_per_word"] = word_perplexity(lm / "model", row["codes"])

    result = {"k": k, "documents": len(pairs), "train_documents": len(train), "heldout_documents": len(held),
              "steps": args.steps, "lm_steps": args.lm_steps, "lm_heldout_perplexity_per_token":
              lm_metrics.get("heldout_perplexity"), "rows": rows,
              "examples": [{"reference": references[j], "document": " ".join(held_docs[j][:40]),
                            **{n: rows[n]["codes"][j] for n in rows if n != "reference (first K words)"}}
                           for j in range(min(6, len(held)))]}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(held)} held-out documents of {len(pairs)}, K = {k} words; LM per-token held-out perplexity "
          f"{lm_metrics.get('heldout_perplexity', float('nan')):.1f}\n")
    print("| code | ROUGE-1 F1 | ROUGE-2 F1 | ROUGE-L F1 | LM perplexity / word | recon CE (shuffled codes) "
          "| recon token acc. (shuffled) | distinct codes | copied words | repeated words |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cell = lambda key, f="{:.3f}": f.format(r[key]) if key in r else "–"  # noqa: E731
        recon = f"{r['recon_ce']:.2f} ({r['recon_ce_shuffled_codes']:.2f})" if "recon_ce" in r else "–"
        racc = f"{r['recon_accuracy']:.3f} ({r['recon_accuracy_shuffled_codes']:.3f})" if "recon_ce" in r else "–"
        print(f"| {name} | {cell('rouge1')} | {cell('rouge2')} | {cell('rougeL')} | "
              f"{cell('lm_perplexity_per_word', '{:.0f}')} | {recon} | {racc} | {cell('distinct_codes', '{:.2f}')} "
              f"| {cell('copied_from_document', '{:.2f}')} | {cell('repeated_words', '{:.2f}')} |")
    print("\nexamples (held-out):")
    for ex in result["examples"]:
        print(json.dumps(ex))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Discrete speech units into a text model (issue 10, item 6): a frozen speech upstream's k-means units, written
as words of a text-pretrained BERT's vocabulary (`selfsup units`), fine-tune that BERT for keyword spotting on
unseen voices — against the same BERT architecture from scratch, same units, same budget, 3 seeds.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/speech_units.py --threads 2

Data: the shipped synthesized command words; 2 of the 8 voices held out (the demo's split). Upstream: a speech
run folder (`--upstream`, e.g. bench/results/speech_ssl/hubert), or a fresh `--upstream-recipe` pretrained on
the training voices. Text model: `--text-model`, or the demo's recipe (BERT with rotary positions, MLM)
pretrained on the six Austen novels shipped with selfsup. Writes bench/results/speech_units/results.json and
prints the markdown table of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

HELD_OUT_VOICES = ["en-us+f5", "en-gb-scotland+m1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", default=None, help="a speech run folder (default: pretrain --upstream-recipe)")
    ap.add_argument("--upstream-recipe", default="hubert")
    ap.add_argument("--upstream-steps", type=int, default=300)
    ap.add_argument("--text-model", default=None, help="a text run folder (default: pretrain the demo recipe)")
    ap.add_argument("--text-steps", type=int, default=600)
    ap.add_argument("--clusters", type=int, default=50)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/speech_units")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from selfsup import finetune, pretrain
    from selfsup.adapt.tools.speech_units import speech_units
    from selfsup.data.audio import split_manifest
    from selfsup.data.speech_synth import embedded_speech
    from selfsup.demo import DEMO_RECIPE, embedded_corpus

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train, held = split_manifest(embedded_speech("speech-words") / "manifest.csv", out / "train.csv",
                                 out / "eval.csv", "speaker", HELD_OUT_VOICES)
    quiet = [f"train.threads={args.threads}", "train.eval_every=100000", "train.checkpoint_every=100000"]
    started = time.perf_counter()
    upstream = Path(args.upstream) if args.upstream else out / args.upstream_recipe
    if args.upstream is None:
        pretrain(args.upstream_recipe, [str(train)], upstream, max_steps=args.upstream_steps, progress=False,
                 overrides=quiet)
    text_model = Path(args.text_model) if args.text_model else out / "text-bert"
    if args.text_model is None:
        pretrain(DEMO_RECIPE, embedded_corpus(), text_model, max_steps=args.text_steps, progress=False,
                 overrides=quiet)
    info = speech_units(upstream, [str(train)], [str(held)], out / "units", text_model=text_model,
                        clusters=args.clusters, layer=args.layer)
    results: dict = {"units": {k: info[k] for k in info if k != "unit_words"}}
    for init in ("pretrained", "scratch"):
        m = finetune(text_model, "sequence-classification", str(out / "units" / "train.csv"),
                     str(out / "units" / "eval.csv"), out / f"bert-{init}", init=init, text_column="text",
                     label_column="word", epochs=args.epochs, seeds=args.seeds,
                     overrides=[f"threads={args.threads}"])
        results[init] = {"eval": m["eval"], "eval_std": m.get("eval_std", {})}
        print(init, json.dumps(results[init]), flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    print(f"\n| text model on {args.clusters} speech units | KWS accuracy, 2 unseen voices (mean ± std, "
          f"{args.seeds} seeds) |\n|---|---|")
    for init in ("pretrained", "scratch"):
        r = results[init]
        print(f"| BERT {'pretrained on Austen (MLM)' if init == 'pretrained' else 'from scratch'} | "
              f"{r['eval']['accuracy']:.3f} ± {r['eval_std'].get('accuracy', 0.0):.3f} |")


if __name__ == "__main__":
    main()

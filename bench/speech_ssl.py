"""Speech SSL benchmark: every speech method, same backbone size (hidden 96, 3 layers) and step budget, on the
synthesized command words and word strings (eSpeak NG, made at the start of the run), with voices and
speeds held out:

* keyword spotting on unseen voices (train: 12 voices of 3 accents, eval: the 4 voices of a 4th accent),
* speaker identification on an unseen speed (16 voices; train: slow + normal, eval: fast),
* a frame task on sentences (which word, or silence, each frame belongs to; eval on the unseen voices),

each a SUPERB-style probe (frozen upstream, learned softmax-weighted layer sum, light head; the utterance
tasks read x-vector statistics pooling, mean and std over frames, like the log-mel baseline's features) against pooled
log-mel + logistic regression and against the random-init upstream of the same architecture; time per epoch of
`selfsup pretrain` against a bare PyTorch loop of the same method (bench/bare_loop.py); codebook health of
the quantizers from their pretraining metrics. Pretraining sees the words and sentences of the 12
training voices (no labels); every probe uses the same epochs and learning rate.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/speech_ssl.py --steps 600 --threads 2

With `--seeds 0,1,2` every method is pretrained once per seed, its random-init twin drawn with the same seed,
and both probed with that seed; the table then gives means over seeds and a paired comparison (pretrained minus
random init per seed: mean ± sd and wins), since single runs differ by a few clips of 120/160. `--keep` reuses
the runs already in `--out` (seed 0 lives in `<method>/`, seed s in `<method>-seed<s>/`).

Writes OUT/results.json (with --keep: OUT/results-METHODS[-layernorm].json) and prints the markdown table of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from bare_loop import bare_loop_per_s

METHODS = ["mockingjay", "tera", "apc", "temporal_gap", "cpc", "wav2vec2", "vq_wav2vec", "hubert", "data2vec",
           "best_rq", "delores", "speech_simclr"]
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-029"]
VARIANTS = ["m1", "m7", "f1", "f5"]
SPEEDS = {"slow": 130, "normal": 165, "fast": 200}
HELD_OUT_ACCENT = "en-029"
QUANTIZER_KEYS = ("codebook_perplexity", "used_codes", "dead_codes")


def make_splits(out: Path) -> dict[str, dict[str, str]]:
    """Synthesize the benchmark's set (larger than the shipped one): 10 words x 4 accents x 4 voice variants x
    3 speeds = 480 clips, and 200 sentences; the en-029 (Caribbean) accent's 4 voices are held out. A folder
    that already holds the split manifests (`--keep`) is reused as it is."""
    from selfsup.data.audio import split_manifest
    from selfsup.data.speech_synth import COMMAND_WORDS, make_sentence_set, make_word_set

    names = [out / f"{t}-{part}.csv" for t in ("kws", "spk", "frame") for part in ("train", "eval")]
    if all(p.is_file() for p in names):
        kws, spk, frame = names[0:2], names[2:4], names[4:6]
    else:
        voices = dict(accents=ACCENTS, variants=VARIANTS, speeds=SPEEDS)
        words = make_word_set(out / "words", COMMAND_WORDS, **voices)
        sentences = make_sentence_set(out / "sentences", 200, COMMAND_WORDS, **voices, seed=1)
        held = [f"{HELD_OUT_ACCENT}+{v}" for v in VARIANTS]
        kws = split_manifest(words, out / "kws-train.csv", out / "kws-eval.csv", "speaker", held)
        spk = split_manifest(words, out / "spk-train.csv", out / "spk-eval.csv", "speed", ["fast"])
        frame = split_manifest(sentences, out / "frame-train.csv", out / "frame-eval.csv", "speaker", held)
    return {"kws": {"train": str(kws[0]), "eval": str(kws[1]), "label": "word", "task": "utterance",
                    "pooling": "mean+std"},
            "speaker": {"train": str(spk[0]), "eval": str(spk[1]), "label": "speaker", "task": "utterance",
                        "pooling": "mean+std"},
            "frame": {"train": str(frame[0]), "eval": str(frame[1]), "label": "alignment", "task": "frame"}}


def probe_all(upstream, splits: dict, seed: int, epochs: int | None, lr: float,
              layer_norm: bool = False) -> dict[str, float]:
    from selfsup.evaluation.superb import superb_probe

    out = {}
    for name, sp in splits.items():
        m = superb_probe(upstream, [sp["train"]], [sp["eval"]], sp["label"], task=sp["task"], seed=seed,
                         epochs=epochs, lr=lr, pooling=sp.get("pooling", "mean"), layer_norm=layer_norm)
        out[name] = m["eval"]["accuracy"]
    return out


def run_folder(out: Path, method: str, seed: int) -> Path:
    return out / (method if seed == 0 else f"{method}-seed{seed}")


def paired(rows: list[dict], task: str) -> dict:
    """Pretrained minus random init, per seed (same seed for the upstream's pretraining, its random twin and
    both probes): the mean difference, its sample sd, and in how many seeds the pretrained upstream is ahead."""
    import statistics

    diffs = [r[task] - r["random init"][task] for r in rows]
    return {"mean_diff": statistics.mean(diffs), "sd_diff": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs), "seeds": len(diffs),
            "pretrained_mean": statistics.mean(r[task] for r in rows),
            "random_mean": statistics.mean(r["random init"][task] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--bare-steps", type=int, default=20, help="0: no bare-loop timing")
    ap.add_argument("--probe-epochs", type=int, default=None,
                    help="default: the probe's own (5000 steps utterance, 30 epochs frame)")
    ap.add_argument("--probe-lr", type=float, default=2e-2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; each seed pretrains the upstream, draws its "
                                                 "random-init twin and seeds both probes (a paired comparison)")
    ap.add_argument("--keep", action="store_true", help="keep --out and reuse the pretrained runs already in it")
    ap.add_argument("--out", default="bench/results/speech_ssl")
    ap.add_argument("--probe-layer-norm", action="store_true",
                    help="layer-norm each layer's frames before the weighted sum (s3prl's Featurizer `normalize`), "
                         "for the pretrained upstream and its random twin alike")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for every pretraining run (e.g. objective.segment_seconds=0.3)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",")]

    from selfsup import pretrain
    from selfsup.evaluation.superb import logmel_baseline, random_like
    from selfsup.fileio import atomic_write_text

    out = Path(args.out)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(out)
    unlabeled = [splits["kws"]["train"], splits["frame"]["train"]]  # every clip of the 12 training voices
    common = [f"train.threads={args.threads}", "train.eval_every=100000", "train.checkpoint_every=100000",
              "train.log_every=5", "model.hidden_size=96", "model.num_layers=3", *args.set]
    results: dict[str, dict] = {"log-mel + logistic regression": {
        name: logmel_baseline([sp["train"]], [sp["eval"]], sp["label"], task=sp["task"]) for name, sp in splits.items()}}
    print(json.dumps(results), flush=True)
    per_seed: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        for seed in seeds:
            run = run_folder(out, method, seed)
            row: dict = {"seed": seed}
            if not (args.keep and (run / "metrics.json").is_file()):
                shutil.rmtree(run, ignore_errors=True)
                started = time.perf_counter()
                pretrain(method, unlabeled, run, max_steps=args.steps, seed=seed, progress=False, overrides=common)
                row["pretrain_seconds"] = round(time.perf_counter() - started, 1)
            m = json.loads((run / "metrics.json").read_text())
            probe = dict(epochs=args.probe_epochs, lr=args.probe_lr, layer_norm=args.probe_layer_norm)
            row.update(probe_all(run, splits, seed, **probe))
            row["random init"] = probe_all(random_like(run, seed=seed), splits, seed, **probe)
            row.update({"train_loss_first": m["train_loss_first"], "train_loss": m["train_loss"],
                        **{k: m[f"train_{k}"] for k in QUANTIZER_KEYS if f"train_{k}" in m}})
            if args.bare_steps and seed == seeds[0] and "pretrain_seconds" in row:
                bare = bare_loop_per_s(method, common + [f"train.max_steps={args.steps}"], unlabeled, args.bare_steps)
                audio_s = m["throughput_per_s"]
                row.update({"audio_s_per_s_selfsup": audio_s, "audio_s_per_s_bare": round(bare, 1),
                            "overhead_ratio": round(bare / audio_s, 3)})
            per_seed.setdefault(method, []).append(row)
            print(method, json.dumps(row), flush=True)
        pairs = {t: paired(per_seed[method], t) for t in splits}
        results[method] = {**per_seed[method][0], **{t: p["pretrained_mean"] for t, p in pairs.items()},
                           "random init": {t: p["random_mean"] for t, p in pairs.items()}, "paired": pairs}
        atomic_write_text(out / results_name(args), json.dumps({"args": vars(args), "splits": splits,
                                                                 "results": results, "per_seed": per_seed}, indent=2) + "\n")
    print_table(results)
    if len(seeds) > 1:
        print_paired(per_seed)


def results_name(args) -> str:
    """results.json; with --keep (runs shared by several invocations, possibly at once) one file per invocation's
    methods and probe, so two invocations never overwrite each other's record."""
    if not args.keep:
        return "results.json"
    return f"results-{args.methods.replace(',', '+')}{'-layernorm' if args.probe_layer_norm else ''}.json"


def print_paired(per_seed: dict[str, list[dict]]) -> None:
    print("\n| upstream | seeds | KWS: pretrained − random init (mean ± sd), wins | speaker ID: same | frame: same | "
          "beats random init on KWS and speaker (mean over seeds)? |")
    print("|---|---|---|---|---|---|")
    for method, rows in per_seed.items():
        cells, beats = [], True
        for task in ("kws", "speaker", "frame"):
            p = paired(rows, task)
            cells.append(f"{p['pretrained_mean']:.3f} − {p['random_mean']:.3f} = {p['mean_diff']:+.3f} ± "
                         f"{p['sd_diff']:.3f}, {p['wins']}/{p['seeds']}")
            beats &= task == "frame" or p["mean_diff"] > 0
        print(f"| {method} | {len(rows)} | " + " | ".join(cells) + f" | {'yes' if beats else 'no'} |")


def print_table(results: dict) -> None:
    print("\n| upstream | KWS unseen voices | speaker ID unseen speed | frame (unseen voices) | random init: KWS / "
          "speaker / frame | loss first → last | selfsup / bare loop time | codebook perplexity (used/dead) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rnd = r.get("random init")
        rand = f"{rnd['kws']:.3f} / {rnd['speaker']:.3f} / {rnd['frame']:.3f}" if rnd else "–"
        loss = f"{r['train_loss_first']:.3f} → {r['train_loss']:.3f}" if "train_loss" in r else "–"
        timing = f"{r['overhead_ratio']:.2f}x" if "overhead_ratio" in r else "–"
        cb = (f"{r['codebook_perplexity']:.1f} ({r['used_codes']:.0f}/{r['dead_codes']:.0f})"
              if "codebook_perplexity" in r else "–")
        print(f"| {name} | {r['kws']:.3f} | {r['speaker']:.3f} | {r['frame']:.3f} | {rand} | {loss} | {timing} | {cb} |")


if __name__ == "__main__":
    main()

"""Voice conversion benchmark (AdaIN-VC): does converted speech carry the target voice and keep the word?

Data: eSpeak NG words (10 command words + 10 digits) in 8 voices of one accent (en-us, variants m1 m2 m3 m7 f1 f2
f4 f5: the voices differ in timbre and pitch, not in pronunciation) at 4 speeds, synthesized at the start of
the run. Clips at the speeds 130, 165 and 200 wpm are held in: the AdaIN-VC model (`selfsup pretrain adain_vc`)
trains on all of them; the classifiers on one of them per (word, voice), drawn at random:

* speaker ID and keyword spotting by the speech benchmark's log-mel baseline (mean and std over time of each
  log-mel band, standardized, logistic regression);
* keyword spotting on the word's shape: the log-mel frames normalized per utterance (each band's mean and std
  over the clip removed), averaged over 10 equal time segments, then the same logistic regression. The pooled
  baseline reads each band's mean and spread over the clip — for a one-word clip these identify the word, and
  they are exactly the statistics AdaIN imposes from the speaker clip, so it can mistake the reference clip's
  word for the content; the shape classifier does not see them.

The classifiers are trained on *resynthesized* held-in clips: each clip's log-mel frames turned back into audio by the same mel inversion +
Griffin-Lim as the conversions (adapt/tools/voice_conversion.py), so the vocoder's artefacts are matched.
The 150 wpm clips are held out; on them:

* unconverted: each held-out clip, resynthesized (no model): the classifiers' ceiling;
* reconstructed: each clip through the model with its own speaker vector (what the model loses by itself);
* converted: each clip's content with the speaker vector of a held-out clip of another voice (drawn at random,
  a different word), resynthesized: "hears the target" = the speaker classifier names the target voice,
  "hears the source" = it names the clip's own voice; keyword accuracy = it still names the clip's word,
  "reference word" = it names the speaker clip's word instead.

    SELFSUP_CACHE=/tmp/selfsup-cache OMP_NUM_THREADS=1 python bench/voice_conversion.py --steps 1000

Writes bench/results/voice_conversion/results.json and prints the markdown table of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ACCENT = "en-us"
VARIANTS = ["m1", "m2", "m3", "m7", "f1", "f2", "f4", "f5"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPEEDS = {"slow": 130, "medium": 150, "normal": 165, "fast": 200}
HELD_OUT_SPEED = "medium"


def make_splits(out: Path) -> tuple[Path, Path]:
    from selfsup.data.audio import split_manifest
    from selfsup.data.speech_synth import COMMAND_WORDS, make_word_set

    words = make_word_set(out / "words", COMMAND_WORDS + DIGITS, accents=[ACCENT], variants=VARIANTS, speeds=SPEEDS)
    return split_manifest(words, out / "train.csv", out / "eval.csv", "speed", [HELD_OUT_SPEED])


def read_rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def features(audio: np.ndarray, spec, segments: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(pooled, shape): the log-mel baseline's input (mean and std over time of each band), and the
    utterance-normalized frames averaged over `segments` equal stretches of time."""
    from selfsup.data.audio_features import log_mel, normalize_utterance

    x = log_mel(audio, spec)
    shape = np.concatenate([part.mean(0) for part in np.array_split(normalize_utterance(x), segments)])
    return np.concatenate([x.mean(0), x.std(0)]), shape


def classifier(x: np.ndarray, y: list[str]):
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=32, help="Griffin-Lim iterations")
    ap.add_argument("--set", action="append", default=[], help="extra recipe overrides for the VC model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/voice_conversion")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from selfsup import pretrain
    from selfsup.adapt.tools.voice_conversion import mel_to_audio, read_clip
    from selfsup.data.audio_features import log_mel
    from selfsup.objectives.voice_conversion import load_vc_model

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train_csv, eval_csv = make_splits(out)
    started = time.perf_counter()
    m = pretrain("adain_vc", [str(train_csv)], out / "vc", max_steps=args.steps, progress=False, seed=args.seed,
                 overrides=[f"train.threads={args.threads}", "train.eval_every=100000",
                            "train.checkpoint_every=100000", *args.set])
    train_seconds = time.perf_counter() - started
    vc = load_vc_model(out / "vc")
    spec = vc.front.spec

    def clips(manifest: Path) -> tuple[list[dict], list[np.ndarray]]:
        rows = read_rows(manifest)
        return rows, [log_mel(read_clip(manifest.parent / r["path"] if not Path(r["path"]).is_absolute()
                                        else r["path"], spec, "clip"), spec) for r in rows]

    def resynth(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return features(mel_to_audio(frames, spec, args.iterations), spec)

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    train_rows = read_rows(train_csv)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in train_rows:
        groups.setdefault((r["word"], r["speaker"]), []).append(r)
    picked = [g[int(rng.integers(len(g)))] for g in groups.values()]
    picked_csv = out / "classifier-train.csv"
    with open(picked_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(train_rows[0]))
        w.writeheader()
        w.writerows(picked)
    train_rows, train_mels = clips(picked_csv)
    eval_rows, eval_mels = clips(eval_csv)
    print(f"VC model trained ({train_seconds:.0f} s); resynthesizing {len(train_mels)} held-in clips for the "
          "classifiers", file=sys.stderr, flush=True)
    pooled, shape = map(np.stack, zip(*[resynth(f) for f in train_mels]))
    speaker_clf = classifier(pooled, [r["speaker"] for r in train_rows])
    word_clf = classifier(pooled, [r["word"] for r in train_rows])
    shape_clf = classifier(shape, [r["word"] for r in train_rows])

    by_voice: dict[str, list[int]] = {}
    for i, r in enumerate(eval_rows):
        by_voice.setdefault(r["speaker"], []).append(i)
    pairs = []
    for i, r in enumerate(eval_rows):
        target = str(rng.choice(sorted(v for v in by_voice if v != r["speaker"])))
        refs = [j for j in by_voice[target] if eval_rows[j]["word"] != r["word"]]
        pairs.append((i, int(rng.choice(refs))))

    sets = {"unconverted (resynthesized)": [(f, r["speaker"]) for f, r in zip(eval_mels, eval_rows)],
            "reconstructed (own speaker vector)": [(vc.convert(f, f), r["speaker"])
                                                   for f, r in zip(eval_mels, eval_rows)],
            "converted (another voice's vector)": [(vc.convert(eval_mels[i], eval_mels[j]),
                                                    eval_rows[j]["speaker"]) for i, j in pairs]}
    results = {}
    word = np.array([r["word"] for r in eval_rows])
    reference_word = {"unconverted (resynthesized)": word, "reconstructed (own speaker vector)": word,
                      "converted (another voice's vector)": np.array([eval_rows[j]["word"] for _, j in pairs])}
    for name, items in sets.items():
        print(f"{name}: resynthesizing {len(items)} clips", file=sys.stderr, flush=True)
        pooled, shape = map(np.stack, zip(*[resynth(f) for f, _ in items]))
        spk, words, shapes = speaker_clf.predict(pooled), word_clf.predict(pooled), shape_clf.predict(shape)
        source = np.array([r["speaker"] for r in eval_rows])
        target = np.array([t for _, t in items])
        results[name] = {"hears_target": float((spk == target).mean()), "hears_source": float((spk == source).mean()),
                         "keyword_accuracy": float((words == word).mean()),
                         "keyword_reference_word": float((words == reference_word[name]).mean()),
                         "shape_keyword_accuracy": float((shapes == word).mean()),
                         "shape_keyword_reference_word": float((shapes == reference_word[name]).mean()),
                         "clips": len(items)}
        print(name, json.dumps(results[name]), flush=True)
    summary = {"args": vars(args), "vc_train_clips": len(read_rows(train_csv)), "classifier_train_clips": len(train_rows),
               "eval_clips": len(eval_rows),
               "voices": len(by_voice), "words": len({r["word"] for r in eval_rows}),
               "vc_train_seconds": round(train_seconds, 1), "measure_seconds": round(time.perf_counter() - started, 1),
               "vc_train_loss_first": m["train_loss_first"], "vc_train_loss": m["train_loss"],
               "vc_heldout_loss": m.get("heldout_loss"), "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_table(summary)


def print_table(s: dict) -> None:
    print(f"\n{s['eval_clips']} held-out clips ({s['voices']} voices x {s['words']} words); VC training "
          f"{s['vc_train_seconds']:.0f} s, loss {s['vc_train_loss_first']:.3f} → {s['vc_train_loss']:.3f} "
          f"(held-out {s['vc_heldout_loss']:.3f})\n")
    print("| audio | speaker ID: target voice | speaker ID: source voice | keyword, pooled log-mel: source word "
          "(reference word) | keyword, word shape: source word (reference word) |")
    print("|---|---|---|---|---|")
    for name, r in s["results"].items():
        same = name.startswith(("unconverted", "reconstructed"))  # target = source, reference = source there
        target = "–" if same else f"{r['hears_target']:.3f}"
        ref, shape_ref = ("", "") if same else (f" ({r['keyword_reference_word']:.3f})",
                                                f" ({r['shape_keyword_reference_word']:.3f})")
        print(f"| {name} | {target} | {r['hears_source']:.3f} | {r['keyword_accuracy']:.3f}{ref} | "
              f"{r['shape_keyword_accuracy']:.3f}{shape_ref} |")
    chance_v, chance_w = 1 / s["voices"], 1 / s["words"]
    print(f"| chance | {chance_v:.3f} | {chance_v:.3f} | {chance_w:.3f} | {chance_w:.3f} |")


if __name__ == "__main__":
    main()

"""`selfsup anomaly fit | score`: auto-encoder anomaly detection on tables, images and audio frames
(selfsup.adapt.tools.anomaly).

Imports nothing heavy at module level (the CLI imports this module to build its parser)."""
from __future__ import annotations

import argparse
from typing import Any

METHOD_CHOICES = ("ae", "dae", "vae", "vqvae", "binary", "onehot")


def _fit(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.anomaly import fit_anomaly

    info = fit_anomaly(args.data, args.out, args.method, max_steps=args.max_steps, seed=args.seed,
                       overrides=args.set, contamination=args.contamination, progress=not args.no_progress)
    print(f"{info['method']} ({info['objective']}) on {info['train_rows']} normal rows: threshold "
          f"{info['threshold']:.4g} (the {100 * (1 - info['contamination']):.0f}th percentile of their scores)\n"
          f"wrote {args.out}/model, {args.out}/{'anomaly.json'}\n"
          f"next: selfsup anomaly score --model {args.out} --data DATA --out DIR")
    return 0


def _score(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.anomaly import score_anomaly

    normal = [v.strip() for v in ",".join(args.normal).split(",") if v.strip()] if args.normal else None
    m = score_anomaly(args.model, args.data, args.out, label_column=args.label_column, normal=normal)
    shown = ", ".join(f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}"
                      for k in ("rows", "anomalies", "flagged", "auroc", "auprc", "f1") if k in m)
    print(f"{shown}\nwrote {args.out}/scores.csv, {args.out}/metrics.json, {args.out}/scores.png")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("anomaly", help="anomaly detection on tables, images or audio frames with auto-encoders "
                                       "(fit | score)",
                       description="Fit an auto-encoder on normal rows (table rows, images, or windows of log-mel "
                                   "frames; --set data.modality=... when the source's kind does not say; threshold: "
                                   "a percentile of their scores), then score new rows: reconstruction error, or a "
                                   "VAE's negative ELBO.")
    verbs = p.add_subparsers(dest="anomaly_verb", metavar="fit|score", required=True)
    f = verbs.add_parser("fit", help="train on normal rows and choose the threshold on them")
    f.add_argument("--data", action="append", required=True, metavar="DATA",
                   help="a table (.csv, .tsv, .parquet, .npz (x), hf:NAME, sklearn:breast_cancer), images (a "
                        "folder, .npz (N,H,W[,C]), IDX, sklearn:digits) or audio (files, a folder, a manifest with "
                        "data.modality=audio_frames, selfsup:speech-words); repeatable")
    f.add_argument("--out", required=True, metavar="DIR", help="a new run folder")
    f.add_argument("--method", choices=METHOD_CHOICES, default="ae",
                   help="ae (auto-encoder), dae (denoising), vae, vqvae, binary (straight-through Bernoulli "
                        "code), onehot (Gumbel-softmax code) (default ae)")
    f.add_argument("--max-steps", type=int, metavar="N")
    f.add_argument("--seed", type=int, metavar="S")
    f.add_argument("--contamination", type=float, default=0.05, metavar="P",
                   help="threshold = the (1 - P) quantile of the training scores (default 0.05)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set data.columns=a,b,c; repeatable")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_fit)
    s = verbs.add_parser("score", help="score rows with a fitted model (AUROC / AUPRC / F1 when labelled)")
    s.add_argument("--model", required=True, metavar="DIR", help="a `selfsup anomaly fit` folder (or its model/)")
    s.add_argument("--data", action="append", required=True, metavar="DATA", help="the model's kind of data")
    s.add_argument("--label-column", metavar="COL", help="0 = normal, 1 = anomaly (default: the model's label "
                   "column when the data has it; .npz: y; image folders: the class sub-folder; audio: a manifest "
                   "column)")
    s.add_argument("--normal", action="append", metavar="VALUE[,VALUE]",
                   help="label values of normal rows; every other labelled row is an anomaly (e.g. --normal 0 "
                        "on sklearn:digits: digit 0 normal); repeatable")
    s.add_argument("--out", required=True, metavar="DIR", help="a new folder: scores.csv, metrics.json, scores.png")
    s.set_defaults(func=_score)

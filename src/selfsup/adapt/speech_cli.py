"""`selfsup units`: speech -> discrete unit "text" for a text model (selfsup.adapt.tools.speech_units).

Imports nothing heavy at module level (the CLI imports this module to build its parser)."""
from __future__ import annotations

import argparse
from typing import Any


def _units(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.speech_units import speech_units

    info = speech_units(args.model, args.train, args.eval, args.out, text_model=args.text_model, layer=args.layer,
                        clusters=args.clusters, seed=args.seed)
    print(f"{info['clusters']} units from layer {info['layer']} of {info['upstream']}: {info['train_clips']} train "
          f"and {info['eval_clips']} eval clips, {info['mean_units_per_clip']:.1f} units per clip\n"
          f"wrote {args.out}/train.csv, {args.out}/eval.csv, {args.out}/units.json\n"
          f"next: selfsup finetune --task sequence-classification --model {args.text_model or 'TEXT_MODEL'} "
          f"--train {args.out}/train.csv --eval {args.out}/eval.csv --label-column LABEL --out RUN")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("units", help="turn speech into discrete unit 'text' for a text model (k-means on a layer)",
                       description="Cluster a frozen speech upstream's layer with k-means fitted on --train, write "
                                   "each clip as a sequence of unit words (consecutive repeats merged) with its "
                                   "manifest columns, ready for `selfsup finetune` of a text model.")
    p.add_argument("--model", required=True, metavar="DIR", help="a speech run folder, its model/, or an HF "
                   "wav2vec2/HuBERT/data2vec-audio/WavLM folder")
    p.add_argument("--train", action="append", required=True, metavar="DATA", help="audio to fit k-means on")
    p.add_argument("--eval", action="append", required=True, metavar="DATA", help="audio to convert with it")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder: train.csv, eval.csv, units.json")
    p.add_argument("--text-model", metavar="DIR", help="write unit k as the k-th single-token word of this "
                   "model's vocabulary (default: u0, u1, ...)")
    p.add_argument("--layer", type=int, metavar="L", help="upstream layer to cluster (default: the last)")
    p.add_argument("--clusters", type=int, default=50, metavar="K", help="number of units (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_units)

"""`selfsup convert`: one-shot voice conversion with an AdaIN-VC model (selfsup.adapt.tools.voice_conversion).

Imports nothing heavy at module level (the CLI imports this module to build its parser)."""
from __future__ import annotations

import argparse
from typing import Any


def _convert(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.voice_conversion import convert_voice

    info = convert_voice(args.model, args.content, args.speaker, args.out, n_iter=args.iterations)
    print(f"wrote {info['out']}: {info['seconds']:.2f} s at {info['sample_rate']} Hz (content clip "
          f"{info['content_seconds']:.2f} s)")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="voice conversion: one clip's words in another clip's voice (AdaIN-VC)",
                       description="Encode --content with the content encoder and --speaker with the speaker "
                                   "encoder of a `selfsup pretrain adain_vc` model, decode, and write a WAV "
                                   "(Griffin-Lim through librosa).")
    p.add_argument("--model", required=True, metavar="RUN", help="an adain_vc run folder (or its model/)")
    p.add_argument("--content", required=True, metavar="AUDIO", help="the clip whose words are kept")
    p.add_argument("--speaker", required=True, metavar="AUDIO", help="a clip of the target voice")
    p.add_argument("--out", required=True, metavar="OUT.wav", help="a new WAV file")
    p.add_argument("--iterations", type=int, default=32, metavar="N", help="Griffin-Lim iterations (default 32)")
    p.set_defaults(func=_convert)

"""`selfsup evaluate`, three uses of one verb:

* `--model RUN --probe linear|knn --train DATA --eval DATA`: frozen features of an exported image encoder or of
  an auto-encoder's encoder (tables, images, audio frames: the bottleneck code of examples preprocessed with the
  model's saved preprocessing; `--label-column`), a linear or kNN probe, collapse diagnostics -> `metrics.json`
  (`eval.accuracy`);
* `--model SPEECH --probe superb --train DATA --eval DATA --label-column C [--task utterance|frame|ctc]`: a
  SUPERB probe (learned weighted sum of the frozen layers + a light head, `selfsup.evaluation.superb`) ->
  `metrics.json` (`eval.accuracy` or `eval.wer`/`eval.cer`, `layer_weights`) and `layer_weights.png`;
* `--model FINETUNED --eval FILE`: a model made by `selfsup finetune` on a labeled file -> its task metrics
  (`selfsup.adapt.cli.evaluate_text`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

def evaluate(model: str | Path, probe: str, train: list[str], eval_data: list[str], out: str | Path | None = None,
             k: int = 20, temperature: float = 0.07, label_column: str | None = None) -> dict[str, Any]:
    """Probe the encoder in `model` (a run folder or its `model/`); writes and returns metrics.json's dict."""
    import torch

    from selfsup.adapt.core.ae_encoder import ae_export_folder
    from selfsup.diagnostics import diagnose
    from selfsup.evaluation.probes import run_probe
    from selfsup.fileio import atomic_write_json

    if probe not in ("linear", "knn"):
        raise SelfsupError(f"--probe: must be linear or knn, got {probe!r}")
    if k < 1 or temperature <= 0:
        raise SelfsupError("--k must be >= 1 and --temperature > 0")
    model = Path(model)
    if not model.is_dir():
        raise SelfsupError(f"{model}: no such model folder")
    if out is not None and (Path(out) / "metrics.json").exists():
        raise SelfsupError(f"{Path(out) / 'metrics.json'}: already exists; choose another --out")
    if sorted(map(str, train)) == sorted(map(str, eval_data)):  # a score on the fitted data says little
        import sys

        print(f"selfsup: warning: the probe is fitted and scored on the same data ({', '.join(map(str, train))}); "
              "give held-out --eval data for a real estimate", file=sys.stderr)
    started = time.perf_counter()
    probed = ae_probe_data if ae_export_folder(model) is not None else image_probe_data
    train_x, train_y, eval_x, eval_y = probed(model, list(train), list(eval_data), label_column)
    accuracy = run_probe(probe, train_x, train_y, eval_x, eval_y, k=k, temperature=temperature)
    result: dict[str, Any] = {
        "eval": {"accuracy": accuracy, "probe": probe, "n_train": int(len(train_x)), "n_eval": int(len(eval_x)),
                 **({"k": k, "temperature": temperature} if probe == "knn" else {"classifier": "logistic regression"})},
        "diagnostics": diagnose(torch.from_numpy(eval_x)).as_dict(),
        "model": str(model), "train_data": list(train), "eval_data": list(eval_data),
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(output_dir(model, probe, out) / "metrics.json", result)
    return result


def image_probe_data(model: Path, train: list[str], eval_data: list[str], label_column: str | None = None):
    """(train features, labels, eval features, labels) of an exported image encoder."""
    import torch

    from selfsup.adapt.core.encoders import load_image_encoder
    from selfsup.data.images import ImageDataConfig, load_images
    from selfsup.evaluation.probes import encoder_features

    encoder, prep = load_image_encoder(model)
    cfg = ImageDataConfig(image_size=int(prep["image_size"]), channels=int(prep["channels"]), holdout_fraction=0.0,
                          **({"label_column": label_column} if label_column else {}))
    tr, ev = load_images(train, cfg), load_images(eval_data, cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return (encoder_features(encoder, tr.images, prep["mean"], prep["std"], device=device), tr.labels,
            encoder_features(encoder, ev.images, prep["mean"], prep["std"], device=device), ev.labels)


def ae_probe_data(model: Path, train: list[str], eval_data: list[str], label_column: str | None = None):
    """(train codes, labels, eval codes, labels) of an auto-encoder: both sets preprocessed with its saved
    preprocessing, labels numbered over the training labels' classes."""
    from selfsup.adapt.core.ae_encoder import ae_examples, ae_features, label_ids, load_ae_encoder

    encoder, _ = load_ae_encoder(model)
    tr_in, tr_labels = ae_examples(encoder, train, label_column)
    ev_in, ev_labels = ae_examples(encoder, eval_data, label_column)
    train_y, eval_y, _ = label_ids(tr_labels, ev_labels)
    return ae_features(encoder, tr_in), train_y, ae_features(encoder, ev_in), eval_y


def output_dir(model: str | Path, probe: str, out: str | Path | None) -> Path:
    """--out, or `eval-PROBE` inside the run folder (beside `model/`)."""
    if out is not None:
        return Path(out)
    model = Path(model)
    return (model.parent if (model / "preprocessing.json").is_file() else model) / f"eval-{probe}"


def evaluate_text(args: argparse.Namespace) -> int:
    """`selfsup evaluate --model FINETUNED --eval FILE`: a fine-tuned text model's task metrics."""
    from selfsup.adapt.core.evaluation import evaluate_finetuned

    if len(args.eval) != 1:
        raise SelfsupError("--eval: give one labeled file to evaluate a fine-tuned model on")
    m = evaluate_finetuned(args.model, args.eval[0], args.out, text_column=args.text_column,
                           pair_column=args.pair_column, label_column=args.label_column,
                           batch_size=args.batch_size or 64, overrides=args.set)
    print(f"eval: {', '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}' for k, v in m['eval'].items())}")
    if args.out:
        out = str(args.out)
        print(f"wrote {out if out.endswith('.json') else out + '/metrics.json'}")
    return 0


def evaluate_speech(args: argparse.Namespace) -> int:
    """`selfsup evaluate --probe superb`: a SUPERB probe of a frozen speech upstream."""
    from selfsup.evaluation.superb import superb_probe

    probe = f"superb-{args.task}"
    out = output_dir(args.model, probe, args.out)
    result = superb_probe(args.model, args.train, args.eval, args.label_column, args.task, epochs=args.epochs,
                          lr=args.lr, batch_size=args.batch_size or 32, seed=args.seed, layer_norm=args.layer_norm,
                          pooling=args.pooling, out=out)
    e = result["eval"]
    shown = ", ".join(f"eval.{k}={e[k]:.4f}" for k in ("accuracy", "wer", "cer") if k in e)
    weights = " ".join(f"{w:.2f}" for w in result["layer_weights"])
    print(f"superb {args.task} probe ({e['label_column']}): {shown} (train {e['n_train']}, eval {e['n_eval']}); "
          f"layer weights {weights}\nwrote {out / 'metrics.json'}, {out / 'layer_weights.png'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.probe is None:
        return evaluate_text(args)
    if not args.train:
        raise SelfsupError("--train: a probe needs labelled data to fit on")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.probe == "superb":
        return evaluate_speech(args)
    result = evaluate(args.model, args.probe, args.train, args.eval, args.out, k=args.k, temperature=args.temperature,
                      label_column=args.label_column)
    d = result["diagnostics"]
    out = output_dir(args.model, args.probe, args.out)
    print(f"{args.probe} probe: eval.accuracy={result['eval']['accuracy']:.4f} (train {result['eval']['n_train']}, "
          f"eval {result['eval']['n_eval']}); feature_std={d['feature_std']:.3f} effective_rank="
          f"{d['effective_rank']:.1f}{' COLLAPSED' if d['collapsed'] else ''}"
          f"\nwrote {out / 'metrics.json'}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model: a probe on frozen features, or a fine-tuned model's task",
                       description="With --probe linear|knn: fit a linear (logistic regression) or cosine-kNN probe "
                                   "on the frozen features of an exported image encoder (metrics.json with "
                                   "eval.accuracy). With --probe superb: a SUPERB probe of a frozen speech model "
                                   "(learned weighted sum of its layers + a linear head). Without: the task metrics "
                                   "of a model made by `selfsup finetune` on --eval.")
    p.add_argument("--model", required=True, metavar="DIR", help="a pretrain/finetune run folder or its model/ "
                   "(superb: also a Hugging Face wav2vec2 / HuBERT / data2vec-audio / WavLM folder)")
    p.add_argument("--probe", choices=["linear", "knn", "superb"],
                   help="probe frozen features: linear or knn (image encoders, auto-encoders on tables, images or "
                        "audio frames), superb (speech encoders)")
    p.add_argument("--train", action="append", metavar="DATA",
                   help="labelled data to fit the probe on: images (folder, .npz, IDX, hf:NAME, sklearn:digits) or, "
                        "for superb, audio (folder, manifest, hf:NAME, selfsup:speech-words)")
    p.add_argument("--eval", action="append", required=True, metavar="DATA", help="labelled data to score")
    p.add_argument("--out", metavar="DIR", help="where metrics.json goes (default: RUN/eval-PROBE for probes)")
    p.add_argument("--k", type=int, default=20, help="kNN neighbours (default 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature (default 0.07)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    text = p.add_argument_group("fine-tuned text models (no --probe); --label-column and --batch-size also superb")
    text.add_argument("--text-column", metavar="C")
    text.add_argument("--pair-column", metavar="C")
    text.add_argument("--label-column", metavar="C",
                      help="text: the label column; linear/knn on an auto-encoder: the class column (default: "
                           "the model's label column, label); superb: the class column (utterance, e.g. word or speaker), the "
                           "alignment column (frame, default alignment) or the transcript column (ctc, default "
                           "transcript)")
    text.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help="default 64 (fine-tuned text models), 32 (superb)")
    text.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    speech = p.add_argument_group("superb probe (speech encoders, --probe superb)")
    speech.add_argument("--task", choices=["utterance", "frame", "ctc"], default="utterance",
                        help="utterance: mean-pool + linear (keyword spotting, speaker ID; eval.accuracy); frame: "
                             "per-frame linear over alignment labels (eval.accuracy); ctc: per-frame linear over "
                             "characters + blank, CTC loss, greedy decoding (eval.wer, eval.cer)")
    speech.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="probe training epochs (default: 5000 steps' worth for utterance, 30 frame, 80 ctc)")
    speech.add_argument("--lr", type=float, default=2e-2, help="Adam learning rate (default 2e-2)")
    speech.add_argument("--seed", type=int, default=0, metavar="S", help="probe initialization and batch order")
    speech.add_argument("--pooling", choices=["mean", "mean+std"], default="mean",
                        help="utterance head: mean over frames (SUPERB), or mean and std (x-vector statistics "
                             "pooling, for speaker ID)")
    speech.add_argument("--layer-norm", action="store_true",
                        help="layer-norm every layer before the weighted sum (s3prl's normalize option; off)")
    p.set_defaults(func=_run)

"""Fine-tuning defaults on small real data sets of the non-text kinds (issue 15, item 1): `selfsup finetune` as
shipped against an lr sweep and a tuned plain PyTorch loop on the same pretrained model and data, in one run.
(bench/small_data_defaults.py does the same for the text kinds.)

Tasks (real data; the pretrained model is made here, on the task's training inputs without labels):
  digits        image-classification: scikit-learn's 8x8 digit scans at 16x16, 300 training / 597 evaluation
                images (a fixed permutation); model: the `simclr` ResNet, 250 steps on 1,200 training images
  kws           audio-classification: 10 command words (eSpeak NG, bench/speech_ssl.py's set), 12 training
                voices -> 4 voices of an unseen accent (360 / 120 clips); model: `mockingjay`, 600 steps on the
                training voices' clips (hidden 96, 3 layers, as in bench/speech_ssl.py)
  speaker       audio-classification: which of 16 voices, slow + normal speed -> fast (320 / 160 clips); same model
  cancer        table-classification: Wisconsin breast cancer (sklearn:breast_cancer@train / @test); model: the
                `autoencoder` recipe on the training rows
  digits-table  table-classification: the same digits as 64-column rows (300 / 597); model: `autoencoder`

Rows per task (accuracy on the evaluation file of the weights after the last epoch: every selfsup row with
`keep_best=false`, so none picks its epoch on the evaluation set):
  selfsup defaults          `selfsup finetune --method full` as shipped
  selfsup lr=...            the sweep (`--grid`, seed 0)
  plain loop (tuned)        the same classifier (selfsup's encoder loader + linear head; transformers'
                            AutoModelForAudioClassification for speech) trained by a bare loop: AdamW at a
                            constant lr, batch 16, no augmentation, the best of lr x epochs on the evaluation set
  HF Trainer defaults       `transformers.Trainer` as shipped (lr 5e-5, batch 8, 3 epochs, linear decay) on the
                            same classifier
  most frequent label       the majority-class baseline

Usage:  SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/small_data_kinds.py [--tasks digits,kws,speaker,cancer,
            digits-table] [--seeds 2] [--work DIR] [--grid "lr=1e-4,3e-4,1e-3,3e-3"] [--plain-lrs ...]
            [--plain-epochs 5,20]
            [--threads 1] [--speech-model DIR] [--rows selfsup,plain,trainer]
Writes bench/results/small_data_kinds.{json,md}.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from small_data_defaults import add_plain_rows, parse_grid, print_task, write_results  # noqa: E402

KIND = {"digits": "image-classification", "kws": "audio-classification", "speaker": "audio-classification",
        "cancer": "table-classification", "digits-table": "table-classification"}
THREADS = 1


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    p = np.random.default_rng(0).permutation(len(d.target))
    return d, p, np.rint(d.images * 255 / 16).astype(np.uint8)


def make_task(name: str, work: Path, speech_model: str | None) -> dict:
    """{model, train, eval, label} for `name`; the pretrained model is made once per work folder."""
    from selfsup import pretrain

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    common = [f"train.threads={THREADS}"]
    if name in ("digits", "digits-table"):
        d, p, pixels = digits_split()
        if name == "digits":
            for part, rows in (("pretrain", p[:1200]), ("train", p[:300]), ("eval", p[1200:])):
                np.savez(folder / f"{part}.npz", x=pixels[rows], y=d.target[rows])
            recipe, sets, data = "simclr", ["data.image_size=16", "train.batch_size=128"], folder / "pretrain.npz"
            steps = 250
        else:
            import pandas as pd

            for part, rows in (("pretrain", p[:1200]), ("train", p[:300]), ("eval", p[1200:])):
                frame = pd.DataFrame(d.data[rows], columns=[f"px{i}" for i in range(64)])
                if part != "pretrain":  # a table auto-encoder's own label column means normal / anomaly
                    frame["label"] = d.target[rows]
                frame.to_csv(folder / f"{part}.csv", index=False)
            recipe, sets, data, steps = "autoencoder", [], folder / "pretrain.csv", 600
        task = {"train": str(folder / f"train.{data.suffix[1:]}"), "eval": str(folder / f"eval.{data.suffix[1:]}"),
                "label": None}
    elif name == "cancer":
        recipe, sets, data, steps = "autoencoder", [], "sklearn:breast_cancer@train", 600
        task = {"train": "sklearn:breast_cancer@train", "eval": "sklearn:breast_cancer@test", "label": None}
    else:
        from speech_ssl import make_splits

        splits = make_splits(work / "speech")
        sp = splits["kws" if name == "kws" else "speaker"]
        task = {"train": sp["train"], "eval": sp["eval"], "label": sp["label"]}
        if speech_model:
            task["model"] = speech_model
            return task
        folder = work / "speech"
        recipe, data, steps = "mockingjay", None, 600
        sets = ["model.hidden_size=96", "model.num_layers=3", "train.log_every=5"]
    run = folder / f"{recipe}-model"
    if not (run / "metrics.json").is_file():
        sources = ([splits["kws"]["train"], splits["frame"]["train"]] if data is None else [str(data)])
        pretrain(recipe, sources, run, max_steps=steps, seed=0, progress=False, overrides=common + sets)
    return {**task, "model": str(run)}


def labels_of(name: str, task: dict) -> tuple[list[str], list[str]]:
    """Training and evaluation labels as strings, read the way selfsup reads them."""
    kind = KIND[name]
    if kind == "image-classification":
        return ([str(v) for v in np.load(task["train"])["y"]], [str(v) for v in np.load(task["eval"])["y"]])
    if kind == "table-classification":
        from selfsup.adapt.core.ae_encoder import ae_examples, load_ae_encoder

        encoder, _ = load_ae_encoder(task["model"])
        return tuple(ae_examples(encoder, [task[p]], task["label"])[1] for p in ("train", "eval"))
    import pandas as pd

    return tuple(pd.read_csv(task[p])[task["label"]].astype(str).tolist() for p in ("train", "eval"))


def majority(name: str, task: dict) -> float:
    train, ev = labels_of(name, task)
    top = Counter(train).most_common(1)[0][0]
    return sum(v == top for v in ev) / len(ev)


def selfsup_accuracy(name: str, task: dict, out: Path, seed: int, sets: list[str]) -> float:
    from selfsup.adapt.core.run import finetune

    if (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
    else:
        metrics = finetune(task["model"], KIND[name], task["train"], task["eval"], out, seed=seed,
                           label_column=task["label"], overrides=[f"threads={THREADS}", "keep_best=false", *sets])
    return float(metrics["eval"]["accuracy"])


def classifier_and_data(name: str, task: dict, seed: int):
    """(model, train inputs, train labels, eval inputs, eval labels, batch function): the classifier selfsup
    fine-tunes, built from the same export, and the inputs selfsup's readers give it."""
    import torch

    kind = KIND[name]
    if kind == "image-classification":
        from selfsup.adapt.core.images import build_classifier, load_encoder, load_image_data

        encoder, prep, _ = load_encoder(task["model"], "pretrained", seed)
        data = load_image_data(task["train"], task["eval"], prep)
        m = torch.tensor(prep["mean"]).view(1, -1, 1, 1)
        s = torch.tensor(prep["std"]).view(1, -1, 1, 1)

        def pixels(images):
            return (torch.from_numpy(np.array(images)).float() / 255 - m) / s

        x_train, x_eval = pixels(data.images_train), pixels(data.images_eval)
        model = build_classifier(encoder, len(data.labels), seed)
        batch = lambda x, idx: (x[idx],)  # noqa: E731
    elif kind == "table-classification":
        from selfsup.adapt.core.table_tasks import TableClassifier, load_table_data
        from selfsup.adapt.core.ae_encoder import load_ae_encoder

        data = load_table_data(task["train"], task["eval"], Path(task["model"]), task["label"])
        encoder, _ = load_ae_encoder(task["model"])
        model = TableClassifier(encoder, len(data.labels), seed)
        x_train, x_eval = torch.from_numpy(data.x_train), torch.from_numpy(data.x_eval)
        batch = lambda x, idx: (x[idx],)  # noqa: E731
    else:
        import transformers as tf

        from selfsup.adapt.core.audio import clip_batch, encoder_folder, front_end, load_audio_data

        folder = encoder_folder(task["model"])
        data = load_audio_data(task["train"], task["eval"], front_end(folder), None, task["label"])
        torch.manual_seed(seed)
        tf.logging.set_verbosity_error()
        model = tf.AutoModelForAudioClassification.from_pretrained(str(folder), num_labels=len(data.labels))
        x_train, x_eval = data.train_set, data.eval_set

        def batch(clips, idx):
            b = clip_batch(clips, data.front, idx, "cpu")
            return (b.pop(next(iter(b))),), b

    index = {lab: i for i, lab in enumerate(data.labels)}
    y_train = torch.tensor([index[e.label] for e in data.train])
    return model, x_train, y_train, x_eval, torch.from_numpy(np.asarray(data.y_eval)), batch


def logits_of(model, inputs) -> "torch.Tensor":
    args, kwargs = (inputs, {}) if not isinstance(inputs[-1], dict) else inputs
    out = model(*args, **kwargs)
    return out if hasattr(out, "shape") else out.logits


def plain_loop_accuracy(name: str, task: dict, *, lr: float, epochs: int, seed: int, batch_size: int = 16) -> float:
    """A bare PyTorch loop on selfsup's classifier: AdamW at a constant lr, shuffled batches, no augmentation."""
    import torch

    model, x_train, y_train, x_eval, y_eval, batch = classifier_and_data(name, task, seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y_train)).split(batch_size):
            loss = torch.nn.functional.cross_entropy(logits_of(model, batch(x_train, idx.numpy())), y_train[idx])
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    right = 0
    with torch.no_grad():
        for idx in np.array_split(np.arange(len(y_eval)), max(1, len(y_eval) // 64)):
            right += int((logits_of(model, batch(x_eval, idx)).argmax(-1) == y_eval[idx]).sum())
    return right / len(y_eval)


def trainer_accuracy(name: str, task: dict, seed: int) -> float:
    """`transformers.Trainer` with its own defaults (lr 5e-5, batch 8, 3 epochs, linear decay) on the same
    classifier and inputs (a wrapper gives the Trainer its {loss, logits})."""
    import torch
    import transformers as tf

    model, x_train, y_train, x_eval, y_eval, batch = classifier_and_data(name, task, seed)

    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, idx, labels):
            logits = logits_of(self.inner, batch(x_train, idx.numpy()))
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    rows = [{"idx": i, "labels": int(y)} for i, y in enumerate(y_train)]
    collate = lambda chunk: {k: torch.tensor([r[k] for r in chunk]) for k in ("idx", "labels")}  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        args = tf.TrainingArguments(output_dir=tmp, report_to=[], save_strategy="no", seed=seed, disable_tqdm=True,
                                    logging_strategy="no", use_cpu=True, remove_unused_columns=False)
        tf.Trainer(model=WithLoss(), args=args, train_dataset=rows, data_collator=collate).train()
    model.eval()
    with torch.no_grad():
        right = sum(int((logits_of(model, batch(x_eval, idx)).argmax(-1) == y_eval[idx]).sum())
                    for idx in np.array_split(np.arange(len(y_eval)), max(1, len(y_eval) // 64)))
    return right / len(y_eval)


def cached(path: Path, compute) -> float:
    """A baseline's accuracy, kept in `path` so an interrupted or extended bench does not train it again."""
    if path.is_file():
        return float(json.loads(path.read_text())["accuracy"])
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"accuracy": value}))
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits,kws,speaker,cancer,digits-table")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--work", help="keep runs here (an interrupted bench goes on where it stopped)")
    ap.add_argument("--grid", default="lr=1e-4,3e-4,1e-3,3e-3",
                    help="selfsup's sweep (seed 0): key=v1,v2;key2=... (`--set` keys; every combination)")
    ap.add_argument("--plain-lrs", default="1e-4,3e-4,1e-3,3e-3")
    ap.add_argument("--plain-epochs", default="5,20")
    ap.add_argument("--rows", default="selfsup,plain,trainer",
                    help="which rows: selfsup (defaults + lr sweep), plain (the tuned loop), trainer (HF Trainer)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every run")
    ap.add_argument("--speech-model", help="a speech encoder run to fine-tune (default: mockingjay pretrained here)")
    args = ap.parse_args()
    import torch

    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    seeds = range(args.seeds)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for name in args.tasks.split(","):
            task = make_task(name, work, args.speech_model)
            runs = work / "runs" / name
            rows: dict[str, list[float]] = {"most frequent label": [majority(name, task)]}
            which = args.rows.split(",")
            if "selfsup" in which:
                rows["selfsup defaults"] = [selfsup_accuracy(name, task, runs / f"default-{s}", s, []) for s in seeds]
                grid = parse_grid(args.grid)
                for values in itertools.product(*grid.values()):
                    sets = [f"{k}={v}" for k, v in zip(grid, values)]
                    folder = runs / ("-".join(k.replace("_", "") + v for k, v in zip(grid, values)) + "-0")
                    rows["selfsup " + " ".join(sets)] = [selfsup_accuracy(name, task, folder, 0, sets)]
            if "trainer" in which:
                rows["HF Trainer defaults"] = [
                    cached(runs / f"trainer-{s}.json", lambda: trainer_accuracy(name, task, s)) for s in seeds]
            if "plain" in which:
                grid = {(lr, ep): [cached(runs / f"plain-{lr:g}-{ep}-{s}.json",
                                          lambda: plain_loop_accuracy(name, task, lr=lr, epochs=ep, seed=s))
                                   for s in seeds]
                        for lr, ep in itertools.product(map(float, args.plain_lrs.split(",")),
                                                        map(int, args.plain_epochs.split(",")))}
                add_plain_rows(rows, grid)
            results[name] = rows
            print_task(name, KIND[name], task["model"], rows)
    write_results("small_data_kinds", results)


if __name__ == "__main__":
    main()

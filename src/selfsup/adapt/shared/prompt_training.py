"""Training, saving and loading a prompt model (the LM whose head fills the template's blank): what
`--method prompt` does per seed, and what `--method pet` does for each of its pattern-verbalizer pairs."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from selfsup.adapt.shared.prompts import PromptSpec, build_spec, load_lm, reserved_positions
from selfsup.errors import SelfsupError

PROMPT_LR = 1e-4  # as --method full; LM-BFF used 1e-5 on RoBERTa-large
POOL_TEXTS = "demonstrations.jsonl"  # saved next to the model: the pool of demonstrations
POOL_EMBEDDINGS = "demonstrations.npy"


def train_prompt_seed(source: Path, data, cfg, spec: PromptSpec, *, init: str, seed: int, out: Path,
                      train_examples: list, progress: bool, method: str = "prompt") -> dict[str, Any]:
    """Fine-tune the whole LM so its head fills the blank with the right label word; writes `out/model`
    (the LM in HF format + task.json), `metrics.json` and `curves.png`; returns the metrics record."""
    import numpy as np

    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.features import collate, model_positions
    from selfsup.adapt.core.fit import fit
    from selfsup.adapt.core.kinds import main_metric
    from selfsup.adapt.core.models import count_parameters, load_tokenizer, save_task
    from selfsup.adapt.core.runs import device_of, seed_record, write_seed
    from selfsup.adapt.shared.prompt_inputs import DemonstrationPool, PromptTokenizer, sentence_embeddings
    from selfsup.adapt.shared.prompts import PromptClassifier

    tok = load_tokenizer(source)
    lm = load_lm(source, spec.lm_kind, tok, init=init, seed=seed, dropout=cfg.dropout)
    model = PromptClassifier(lm, spec, tok.mask_token_id, tok.pad_token_id)
    trainable, total = count_parameters(model)
    device = device_of(cfg)
    max_length = min(cfg.max_length, model_positions(lm.config, tok) - reserved_positions(spec))
    prompts = PromptTokenizer(tok, spec)
    label2id = {lab: i for i, lab in enumerate(data.labels)}
    if spec.demonstrations:  # embeddings of the checkpoint as loaded, once, before any update
        lm.to(device)
        pool_emb = sentence_embeddings(lm, tok, train_examples, max_length, cfg.eval_batch_size, device)
        lm.cpu()
        prompts.pool = DemonstrationPool(
            list(train_examples), [label2id[e.label] for e in train_examples], pool_emb,
            lambda exs: sentence_embeddings(lm, tok, exs, max_length, cfg.eval_batch_size,
                                            next(lm.parameters()).device))
        train_feats = prompts.encode_prompts(train_examples, data.labels, max_length, exclude_self=True)
    else:
        train_feats = prompts.encode_prompts(train_examples, data.labels, max_length)
    eval_feats = prompts.encode_prompts(data.eval, data.labels, max_length)
    pad_id = tok.pad_token_id
    metric = main_metric(data.kind)
    lr = cfg.lr or PROMPT_LR
    started = time.perf_counter()
    result = fit(model, train_feats, cfg, lr=lr, seed=seed, main_metric=metric, progress=progress,
                 loss_fn=lambda m, batch: m(**batch).loss,
                 collate_fn=lambda chunk, dev: collate(chunk, pad_id, dev),
                 eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id,
                                            next(m.parameters()).device))
    seconds = time.perf_counter() - started
    folder = out / "model"
    lm.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    if prompts.pool is not None:
        rows = [{"text": e.text, "pair": e.pair, "label": e.label} for e in prompts.pool.examples]
        (folder / POOL_TEXTS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                         encoding="utf-8")
        np.save(folder / POOL_EMBEDDINGS, prompts.pool.embeddings.numpy().astype(np.float32))
    save_task(folder, {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                       "pair_column": data.columns.pair, "label_column": data.columns.label,
                       "max_length": max_length, "source_model": str(source), "init": init, "method": method,
                       **spec.info()})
    record = seed_record(kind=data.kind, source=source, init=init, method=method, seed=seed, eval=dict(result.eval),
                         main_metric=metric, trainable=trainable, total=total, history=result.history,
                         steps=result.steps, epochs=result.epochs, lr=lr, train_examples=len(train_examples),
                         eval_examples=len(data.eval), labels=data.labels, seconds=seconds,
                         best_epoch=result.best_epoch, backbone_parameters=total,
                         trainable_percent=round(100 * trainable / total, 4), **spec.info())
    return write_seed(out, record, {init: result.history}, title=f"{data.kind} (prompt)")


def load_prompt_model(folder: Path, info: dict, tokenizer):
    """A prompt model's folder -> (PromptClassifier in eval mode, PromptTokenizer) for evaluate / predict."""
    import numpy as np
    import torch

    from selfsup.adapt.core.tasks import TextExample
    from selfsup.adapt.shared.prompt_inputs import DemonstrationPool, PromptTokenizer, sentence_embeddings
    from selfsup.adapt.shared.prompts import PromptClassifier

    lm_kind = info.get("lm_kind") or "mlm"
    spec = build_spec(tokenizer, lm_kind, info["kind"], info["labels"], info.get("template"), info.get("verbalizer"),
                      bool(info.get("demonstrations")))
    lm = load_lm(folder, lm_kind, tokenizer)
    model = PromptClassifier(lm, spec, tokenizer.mask_token_id, tokenizer.pad_token_id).eval()
    prompts = PromptTokenizer(tokenizer, spec)
    if spec.demonstrations:
        rows = [json.loads(line) for line in (folder / POOL_TEXTS).read_text(encoding="utf-8").splitlines() if line]
        examples = [TextExample(r["text"], r.get("pair"), r["label"], f"{folder / POOL_TEXTS}:{i + 1}")
                    for i, r in enumerate(rows)]
        label2id = {lab: i for i, lab in enumerate(info["labels"])}
        embedder: dict[str, Any] = {}

        def embed(exs: Sequence) -> torch.Tensor:  # the source checkpoint, as at training time
            if "lm" not in embedder:
                src = Path(info.get("source_model", ""))
                if not (src / "config.json").is_file():
                    raise SelfsupError(f"{src}: the source checkpoint (task.json source_model) is needed to "
                                       "choose demonstrations for new inputs, and is not there")
                embedder["lm"] = load_lm(src, lm_kind, tokenizer).eval()
            return sentence_embeddings(embedder["lm"], tokenizer, exs, info["max_length"])

        prompts.pool = DemonstrationPool(examples, [label2id[e.label] for e in examples],
                                         torch.from_numpy(np.load(folder / POOL_EMBEDDINGS)), embed)
    return model, prompts

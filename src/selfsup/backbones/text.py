"""Text backbones from `transformers` configs: BERT, ALBERT (factorized embeddings, cross-layer sharing),
RoBERTa, RoFormer (BERT with rotary position embeddings), GPT-2 and BART, built at recipe size or loaded from any local HF checkpoint folder.

The model object *is* the HF model with the head the objective asks for (`masked-lm`, `pretraining`,
`causal-lm`, `seq2seq-lm`), so `save_pretrained` output loads with plain `transformers.AutoModelFor*`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.registry import register_backbone

Head = Literal["masked-lm", "pretraining", "causal-lm", "seq2seq-lm"]
_HEADS_BY_TYPE = {
    "bert": {"masked-lm": "BertForMaskedLM", "pretraining": "BertForPreTraining"},
    "albert": {"masked-lm": "AlbertForMaskedLM", "pretraining": "AlbertForPreTraining"},
    "roberta": {"masked-lm": "RobertaForMaskedLM"},
    "roformer": {"masked-lm": "RoFormerForMaskedLM"},
    "gpt2": {"causal-lm": "GPT2LMHeadModel"},
    "bart": {"seq2seq-lm": "BartForConditionalGeneration"},
}
_AUTO_BY_HEAD = {"masked-lm": "AutoModelForMaskedLM", "pretraining": "AutoModelForPreTraining",
                 "causal-lm": "AutoModelForCausalLM", "seq2seq-lm": "AutoModelForSeq2SeqLM"}


@register_backbone("bert", "albert", "roberta", "roformer", "gpt2", "bart")
class TextBackbone:
    modality = "text"

    @dataclasses.dataclass
    class Config:
        type: Literal["bert", "albert", "roberta", "roformer", "gpt2", "bart"] = "bert"
        hidden_size: int = bounded(128, gt=0)
        num_layers: int = bounded(2, gt=0, doc="encoder layers (and decoder layers for BART)")
        num_heads: int = bounded(2, gt=0)
        intermediate_size: int = bounded(512, gt=0)
        max_length: int = bounded(128, ge=8, doc="position embeddings")
        dropout: float = bounded(0.1, ge=0, lt=1)
        embedding_size: int | None = bounded(None, gt=0, doc="ALBERT factorized embedding size")
        share_layers: bool | None = None  # ALBERT cross-layer sharing; default on for albert
        from_pretrained: str | None = None  # continue pretraining a local HF checkpoint folder (or hub name)
        trust_remote_code: bool = False

        def validate(self) -> None:
            if self.hidden_size % self.num_heads:
                raise SelfsupError(f"hidden_size: {self.hidden_size} is not divisible by num_heads={self.num_heads}")
            if self.type != "albert" and (self.embedding_size is not None or self.share_layers):
                raise SelfsupError("embedding_size/share_layers: only for type: albert")


def _hf_config(cfg: TextBackbone.Config, vocab_size: int, ids: dict):
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    if cfg.type in ("bert", "albert", "roberta", "roformer"):
        kw = dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                  hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, **common)
        if cfg.type == "bert":
            return tf.BertConfig(max_position_embeddings=cfg.max_length, type_vocab_size=2, **kw)
        if cfg.type == "roformer":  # BERT with rotary position embeddings (Su et al. 2021)
            return tf.RoFormerConfig(max_position_embeddings=cfg.max_length, type_vocab_size=2,
                                     embedding_size=cfg.hidden_size, **kw)
        if cfg.type == "roberta":  # RoBERTa offsets positions by padding_idx + 1
            return tf.RobertaConfig(max_position_embeddings=cfg.max_length + ids["pad"] + 2, type_vocab_size=1, **kw)
        share = True if cfg.share_layers is None else cfg.share_layers
        return tf.AlbertConfig(max_position_embeddings=cfg.max_length, type_vocab_size=2,
                               embedding_size=cfg.embedding_size or cfg.hidden_size,
                               num_hidden_groups=1 if share else cfg.num_layers, inner_group_num=1,
                               classifier_dropout_prob=cfg.dropout, **kw)
    if cfg.type == "gpt2":
        return tf.GPT2Config(n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                             n_inner=cfg.intermediate_size, n_positions=cfg.max_length, resid_pdrop=cfg.dropout,
                             embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, **common)
    return tf.BartConfig(d_model=cfg.hidden_size, encoder_layers=cfg.num_layers, decoder_layers=cfg.num_layers,
                         encoder_attention_heads=cfg.num_heads, decoder_attention_heads=cfg.num_heads,
                         encoder_ffn_dim=cfg.intermediate_size, decoder_ffn_dim=cfg.intermediate_size,
                         max_position_embeddings=cfg.max_length, dropout=cfg.dropout,
                         attention_dropout=cfg.dropout, decoder_start_token_id=ids["eos"],
                         forced_eos_token_id=ids["eos"], **common)


def build_text_model(cfg: TextBackbone.Config, head: Head, tokenizer):
    """A fresh HF model of recipe size with `head`, or the checkpoint at `cfg.from_pretrained`."""
    import transformers as tf

    from selfsup.data.tokenizer import special_ids

    if cfg.from_pretrained:
        auto = getattr(tf, _AUTO_BY_HEAD[head])
        try:
            model = auto.from_pretrained(cfg.from_pretrained, trust_remote_code=cfg.trust_remote_code)
        except Exception as e:
            msg = str(e).splitlines()[0][:200] if str(e) else ""
            raise SelfsupError(f"model.from_pretrained: cannot load {cfg.from_pretrained} as {head} "
                               f"({type(e).__name__}: {msg})") from None
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        return model.train()  # from_pretrained returns eval mode, which would silently disable dropout
    classes = _HEADS_BY_TYPE[cfg.type]
    if head not in classes:
        raise SelfsupError(f"model.type: {cfg.type!r} has no {head} head (use one of: "
                           f"{', '.join(t for t, h in _HEADS_BY_TYPE.items() if head in h)})")
    config = _hf_config(cfg, len(tokenizer), special_ids(tokenizer))
    return getattr(tf, classes[head])(config)


def masked_lm_parts(model):
    """(encoder, prediction head) of an HF masked-LM, so logits can be computed at masked positions only;
    None for an architecture we do not know (then the full forward is used)."""
    for enc_name, head_path in (("bert", "cls"), ("albert", "predictions"), ("roberta", "lm_head"),
                                ("roformer", "cls")):
        enc = getattr(model, enc_name, None)
        if enc is None:
            continue
        head = model
        for part in head_path.split("."):
            head = getattr(head, part, None)
        if head is not None and hasattr(head, "predictions"):  # BertForPreTraining: cls.predictions
            head = head.predictions
        if head is not None:
            return enc, head
    return None


def local_checkpoint(path: str) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()

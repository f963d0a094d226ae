"""Tokenizers: train WordPiece / BPE / byte-level BPE on the corpus with `tokenizers`, or load an HF one.

Trained tokenizers are wrapped as `PreTrainedTokenizerFast` so `AutoTokenizer.from_pretrained(run/model)`
loads them; every one has [PAD] [UNK] [CLS] [SEP] [MASK] (bos = [CLS], eos = [SEP]).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Literal

from selfsup.config import bounded
from selfsup.errors import SelfsupError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclasses.dataclass
class TokenizerConfig:
    kind: Literal["wordpiece", "bpe", "byte-level-bpe", "pretrained"] = "wordpiece"
    vocab_size: int = bounded(8000, ge=64)
    lowercase: bool = True
    min_frequency: int = bounded(2, ge=1)
    # as SentencePiece's input_sentence_size: the tokenizer learns from a bounded sample, so its memory does not
    # grow with the corpus (the whole corpus is still tokenized)
    train_chars: int = bounded(50_000_000, ge=1000, doc="characters of text, spread over the corpus, the "
                               "tokenizer is trained on")
    pretrained: str | None = None  # local folder or hub name, for kind: pretrained
    trust_remote_code: bool = False

    def validate(self) -> None:
        if self.kind == "pretrained" and not self.pretrained:
            raise SelfsupError("pretrained: required when kind is 'pretrained'")


def _canonical_ids(tok):
    """The same tokens with ids that depend only on the vocabulary: special tokens first, then by length and text.

    `tokenizers` (0.23) numbers the continuing-subword (`##x`) and end-of-word (`x</w>`) tokens in hash-map order,
    so two trainings on the same text give the same vocabulary under different ids (huggingface/tokenizers#1794,
    fix proposed in #2066) and a model initialized with one seed differs. On large vocabularies the hash order
    can also break ties between equally frequent merges differently, which no renumbering can undo."""
    import json

    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    rest = sorted((t for t in vocab if t not in SPECIAL_TOKENS), key=lambda t: (len(t), t))
    spec["model"]["vocab"] = ids = {t: i for i, t in enumerate([t for t in SPECIAL_TOKENS if t in vocab] + rest)}
    for added in spec.get("added_tokens") or []:
        added["id"] = ids[added["content"]]
    return Tokenizer.from_str(json.dumps(spec))


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], add_cls_sep: bool = True):
    """Train a tokenizer on `texts` and return it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if cfg.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase, strip_accents=cfg.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif cfg.kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if cfg.lowercase else []))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=SPECIAL_TOKENS, end_of_word_suffix="</w>", show_progress=False)
    else:  # byte-level-bpe, as GPT-2 / RoBERTa
        tok = Tokenizer(models.BPE())
        if cfg.lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS) + 1:
        raise SelfsupError("data: too little text to train a tokenizer")
    if cfg.kind != "byte-level-bpe":  # byte-level BPE registers its whole alphabet first: its ids are stable
        tok = _canonical_ids(tok)
    if add_cls_sep:
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")


def load_pretrained_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """An existing HF tokenizer (local folder, or hub name where the network allows)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise SelfsupError(f"{name_or_path}: cannot load tokenizer ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if not getattr(tok, "is_fast", False):
        raise SelfsupError(f"{name_or_path}: selfsup needs a fast tokenizer (word boundaries come from offsets)")
    return tok


def special_ids(tok) -> dict[str, int | None]:
    """The ids the pretext tasks need, whatever the tokenizer calls them."""
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (sep if sep is not None else 0)
    return {"cls": cls, "sep": sep, "pad": pad, "mask": tok.mask_token_id, "eos": tok.eos_token_id or sep,
            "bos": tok.bos_token_id or cls}

"""A hand-written WordPiece vocabulary, so sub-word splits in the tests are known exactly."""
from __future__ import annotations

WORDS = ["elinor", "the", "trunk", "hastily", "anne", "elliot", "walked", "to", "bath", "kellynch", "hall",
         "where", "did", "go", "?", ".", "captain", "wentworth", "wrote", "from", "lyme", "in", "evening", "and",
         "a", "letter", "un"]
PIECES = ["##pack", "##ed", "##s"]


def hand_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")

"""Tokenizers of the four backbone families trained in seconds, and tiny random model configs.

No real RoBERTa, DeBERTa-v3 or Longformer weights install offline, so their code paths are tested
on tokenizers trained here (the `tokenizers` library) and tiny randomly initialised models.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForQuestionAnswering,
    BertConfig,
    BertTokenizerFast,
    DebertaV2Config,
    DebertaV2TokenizerFast,
    LongformerConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaTokenizerFast,
)

FAMILIES = ("bert", "roberta", "deberta", "longformer")


def wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> BertTokenizerFast:
    """An uncased BERT WordPiece tokenizer (the bert-base-uncased / DistilBERT family)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    return BertTokenizerFast(vocab=tok.get_vocab(), do_lower_case=True)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> RobertaTokenizerFast:
    """A byte-level BPE tokenizer (the RoBERTa / Longformer family: no token_type_ids)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    merges = [
        tuple(m.split()) if isinstance(m, str) else tuple(m)
        for m in json.loads(tok.to_str())["model"]["merges"]
    ]
    return RobertaTokenizerFast(vocab=tok.get_vocab(), merges=merges)


def unigram_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> DebertaV2TokenizerFast:
    """A SentencePiece-style Unigram tokenizer (the DeBERTa-v3 family: offsets include the leading space)."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok.train_from_iterator(
        texts,
        trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="[UNK]"),
    )
    vocab = [tuple(item) for item in json.loads(tok.to_str())["model"]["vocab"]]
    return DebertaV2TokenizerFast(vocab=vocab)


def build_tokenizer(
    family: str, texts: list[str], vocab_size: int = 4000
) -> PreTrainedTokenizerBase:
    """The tokenizer of a backbone family, trained on ``texts``."""
    if family == "bert":
        return wordpiece_tokenizer(texts, vocab_size)
    if family in ("roberta", "longformer"):
        return bpe_tokenizer(texts, vocab_size)
    if family == "deberta":
        return unigram_tokenizer(texts, vocab_size)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def tiny_config(
    family: str, tokenizer: PreTrainedTokenizerBase, max_positions: int = 1100
) -> PretrainedConfig:
    """A tiny randomly initialised model config of a backbone family, sized to ``tokenizer``."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "bert":
        return BertConfig(max_position_embeddings=max_positions, **common)
    if family == "roberta":
        return RobertaConfig(
            max_position_embeddings=max_positions + 2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
            **common,
        )
    if family == "deberta":
        return DebertaV2Config(
            max_position_embeddings=max_positions,
            relative_attention=True,
            position_buckets=32,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
            **common,
        )
    if family == "longformer":
        return LongformerConfig(
            max_position_embeddings=max_positions + 2,
            attention_window=[16, 16],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            type_vocab_size=1,
            **common,
        )
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def save_tiny_backbone(
    family: str, texts: list[str], directory: Path, vocab_size: int = 2000
) -> Path:
    """Write a tiny random QA model and its tokenizer to ``directory`` (loadable by ``from_pretrained``)."""
    tokenizer = build_tokenizer(family, texts, vocab_size)
    model = AutoModelForQuestionAnswering.from_config(tiny_config(family, tokenizer))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory

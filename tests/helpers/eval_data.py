"""Real evaluation examples and features (MiniLM tokenizer) with random logits, and the reference
decoder's outputs on them: the inputs the decoding and metric tests compare on."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from helpers.reference_decode import logits_by_feature, postprocess_qa_predictions
from helpers.tokenizers import minilm_tokenizer
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import prepare_eval_features
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.decoding import StreamingDecoder

FEATURE_KEYS = ("input_ids", "attention_mask", "offset_mapping", "example_index", "cls_index")
DECODER_KEYS = (
    "start_logits",
    "end_logits",
    "offset_mapping",
    "cls_index",
    "example_index",
    "feature_index",
)
"""The batch fields ``StreamingDecoder.update`` takes, in its order."""
SQUAD_FILES = {"v1.1": ("dev-v1.1.json.gz", False), "v2.0": ("dev-v2.0.json.gz", True)}


@dataclass(frozen=True)
class EvalData:
    """Evaluation examples and their features (one dict per feature, in feature order)."""

    ids: list[str]
    contexts: list[str]
    answers: list[list[str]]
    features: list[dict[str, Any]]


@functools.cache
def load_eval_data(
    path: Path, limit: int | None = None, max_length: int = 384, doc_stride: int = 128
) -> EvalData:
    """The first ``limit`` questions of a SQuAD file and their eval features (MiniLM tokenizer)."""
    records = read_squad_file(path).records[:limit]
    columns = {key: [r[key] for r in records] for key in ("id", "question", "context", "answers")}
    feats = prepare_eval_features(columns, minilm_tokenizer(), max_length, doc_stride)
    features = [
        {key: feats[key][i] for key in FEATURE_KEYS} | {"feature_index": i}
        for i in range(len(feats["input_ids"]))
    ]
    answers = [list(a["text"]) for a in columns["answers"]]
    return EvalData(columns["id"], columns["context"], answers, features)


def random_batches(
    features: list[dict[str, Any]], batch_size: int, seed: int = 0, low: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """Collated batches with random logits (integers in ``[low, -low)`` when given, for ties)."""
    collate = QACollator(minilm_tokenizer())
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for first in range(0, len(features), batch_size):
        batch = collate(features[first : first + batch_size])
        shape = batch["input_ids"].shape
        for name in ("start_logits", "end_logits"):
            if low is None:
                batch[name] = torch.randn(shape, generator=generator)
            else:
                batch[name] = torch.randint(low, -low, shape, generator=generator).float()
        batches.append(batch)
    return batches


def reference_outputs(
    data: EvalData, batches: list[dict[str, torch.Tensor]], **kwargs: Any
) -> tuple:
    """The reference loop on the same logits (``batches`` cover ``data.features``)."""
    starts, ends = logits_by_feature(batches)
    return postprocess_qa_predictions(
        data.ids, data.contexts, data.features, starts, ends, **kwargs
    )


def feed(decoder: StreamingDecoder, batches: list[dict[str, torch.Tensor]]) -> StreamingDecoder:
    """``decoder`` after an ``update`` with every batch (collated features with logits)."""
    for batch in batches:
        decoder.update(*(batch[key] for key in DECODER_KEYS))
    return decoder

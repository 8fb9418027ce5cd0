"""The global attention the project sets for Longformer equals the model's own default (question
tokens: everything before the first separator) on real inputs of the published tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.models.longformer import modeling_longformer

from helpers.round_trip import flat_examples
from qa_lightning.data.features import InputLayout
from qa_lightning.hub import load_tokenizer
from qa_lightning.model.inputs import global_attention_mask


def test_global_attention_on_question_tokens_as_the_model_default(shared_data, shared_models):
    tokenizer = load_tokenizer(shared_models / "longformer-base-4096")
    assert InputLayout.of(tokenizer).question_first
    examples = flat_examples(Path(shared_data) / "squad" / "dev-v1.1.json.gz", 64)
    batch = tokenizer(
        examples["question"],
        examples["context"],
        truncation="only_second",
        max_length=4096,
        padding=True,
        return_tensors="pt",
    )
    ours = global_attention_mask(
        batch["input_ids"], batch["attention_mask"], tokenizer.sep_token_id
    )
    # the model's own rule, which counts three separators per row (it asserts so)
    default = modeling_longformer._compute_global_attention_mask(
        batch["input_ids"], tokenizer.sep_token_id
    )
    assert torch.equal(ours.bool(), default.bool())
    question_lengths = [len(tokenizer(q)["input_ids"]) - 1 for q in examples["question"]]
    assert ours.sum(dim=1).tolist() == question_lengths  # <s> + question tokens

"""The token-level span search and the character step apart; decoders that mask padding themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.eval_data import feed, load_eval_data, random_batches
from qa_lightning.decoding import (
    NEG_INF,
    SpanRules,
    StreamingDecoder,
    char_candidates,
    feature_candidates,
    mask_padding,
    offset_rules,
    token_spans,
)

# Token 2 has an empty character span; (2, 2) scores 18, (2, 3) and (1, 2) 10.
OFFSETS = torch.tensor([[(-1, -1), (0, 3), (4, 4), (5, 8)]])
START, END = torch.tensor([[0.0, 1.0, 9.0, 2.0]]), torch.tensor([[0.0, 3.0, 9.0, 1.0]])


@pytest.mark.parametrize("num_spans", [1, 20])
def test_rules_decide_validity_and_the_offsets_only_map_characters(num_spans: int) -> None:
    context_only = SpanRules(OFFSETS[..., 0] >= 0)
    spans = token_spans(START, END, context_only, k=4, num_spans=num_spans, max_len=2)
    assert spans.scores[0, 0].item() == 18.0
    assert (spans.start_token[0, 0].item(), spans.end_token[0, 0].item()) == (2, 2)

    spans = token_spans(START, END, offset_rules(OFFSETS), k=4, num_spans=num_spans, max_len=2)
    assert spans.scores[0, 0].item() == 10.0
    assert (spans.start_token[0, 0].item(), spans.end_token[0, 0].item()) == (2, 3)
    chars = char_candidates(spans, OFFSETS, torch.tensor([0.0]))
    assert (chars.start_char[0, 0].item(), chars.end_char[0, 0].item()) == (4, 8)
    if num_spans > 1:
        empty = spans.scores[0] == NEG_INF
        assert empty.any()
        assert (spans.start_token[0, empty] == -1).all() and (
            chars.start_char[0, empty] == -1
        ).all()


@pytest.mark.parametrize("low", [None, -3], ids=["random", "ties"])
def test_token_spans_are_the_candidates_tokens(shared_data: Path, low: int | None) -> None:
    """On real features: each candidate's characters are its tokens' offsets, and its scores
    their logits; the spans keep to the context, the order and the maximum length."""
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 150, 96, 32)
    for batch in random_batches(data.features, batch_size=64, seed=4, low=low):
        offsets, starts, ends = batch["offset_mapping"], batch["start_logits"], batch["end_logits"]
        for num_spans in (1, 20):
            spans = token_spans(starts, ends, offset_rules(offsets), 20, num_spans, max_len=30)
            candidates = feature_candidates(
                starts, ends, offsets, batch["cls_index"], 20, 30, num_spans
            )
            found = spans.scores > NEG_INF
            first, last = spans.start_token.clamp(min=0), spans.end_token.clamp(min=0)
            assert torch.equal(found, candidates.scores > NEG_INF)
            assert torch.equal(spans.scores, candidates.scores)
            assert torch.equal(
                candidates.start_char[found], offsets[..., 0].gather(1, first)[found]
            )
            assert torch.equal(candidates.end_char[found], offsets[..., 1].gather(1, last)[found])
            assert torch.equal(spans.start_logit[found], starts.gather(1, first)[found])
            assert torch.equal(spans.end_logit[found], ends.gather(1, last)[found])
            length = (last - first)[found]
            assert (length >= 0).all() and (length < 30).all()
            assert (offsets[..., 0].gather(1, last)[found] >= 0).all()


@pytest.mark.parametrize("with_nbest", [False, True])
def test_the_decoder_masks_padding_itself(shared_data: Path, with_nbest: bool) -> None:
    """``attention_mask`` given to the decoder, the caller masking, or both: the same answers."""
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 300, 96, 32)
    batches = random_batches(data.features, batch_size=24, seed=8)
    assert any((batch["attention_mask"] == 0).any() for batch in batches)
    decoded = []
    for decoder_masks, caller_masks in [(True, False), (False, True), (True, True)]:
        decoder = StreamingDecoder(with_nbest=with_nbest, chunk_rows=50)
        for batch in batches:
            mask = batch["attention_mask"]
            start, end = batch["start_logits"], batch["end_logits"]
            if caller_masks:
                start, end = mask_padding(start, mask), mask_padding(end, mask)
            decoder.update(
                start,
                end,
                batch["offset_mapping"],
                batch["cls_index"],
                batch["example_index"],
                batch["feature_index"],
                attention_mask=mask if decoder_masks else None,
            )
        decoded.append(decoder.decode(data.ids, data.contexts, version_2=True))
    assert decoded[0] == decoded[1] == decoded[2]


def test_drain_hands_over_every_feature_once(shared_data: Path) -> None:
    """Chunked, with deferred rows settled: each feature's candidates as one batch gives them."""
    data = load_eval_data(shared_data / "squad" / "dev-v1.1.json.gz", 200, 96, 32)
    batches = random_batches(data.features, batch_size=16, seed=2, low=-3)
    decoder = StreamingDecoder(n_best_size=3, chunk_rows=40)
    assert decoder.drain() is None
    feed(decoder, batches)
    assert decoder.deferred  # ties: some rows wait for the exact search
    drained = decoder.drain()
    assert drained is not None and not decoder.deferred
    assert sorted(drained.feature_index.tolist()) == list(range(len(data.features)))
    assert decoder.drain() is None
    assert decoder.decode(data.ids, data.contexts).predictions == {}
    for batch in batches:
        exact = feature_candidates(
            batch["start_logits"],
            batch["end_logits"],
            batch["offset_mapping"],
            batch["cls_index"],
            n_best_size=3,
            num_spans=1,
        )
        rows = [drained.feature_index.tolist().index(i) for i in batch["feature_index"].tolist()]
        ours = drained.candidates.select(torch.tensor(rows))
        for name, value in exact._asdict().items():
            assert torch.equal(getattr(ours, name), value), name

"""The vectorised decoder against the plain reference loop, on real SQuAD features and edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers.eval_data import (
    SQUAD_FILES,
    EvalData,
    feed,
    load_eval_data,
    random_batches,
    reference_outputs,
)
from helpers.reference_decode import logits_by_feature, postprocess_qa_predictions
from qa_lightning.decoding import (
    NEG_INF,
    NO_SPAN_SCORE,
    SpanCandidates,
    StreamingDecoder,
    decode,
    feature_candidates,
    merge_candidates,
)

FILLS = (NEG_INF, -1, -1, NEG_INF, NEG_INF)  # empty candidate slots, per SpanCandidates field


def streaming_decode(
    data: EvalData,
    batches: list[dict[str, torch.Tensor]],
    *,
    with_nbest: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    **kwargs: Any,
) -> Any:
    decoder = StreamingDecoder(n_best_size, max_answer_length, with_nbest=with_nbest)
    return feed(decoder, batches).decode(data.ids, data.contexts, **kwargs)


def distinct_spans(entries: list[dict]) -> list[dict]:
    """The first (best) entry of each character span: the reference lists a span reached from
    several windows once per window, ours once."""
    seen, out = set(), []
    for e in entries:
        if (e["start"], e["end"]) not in seen:
            seen.add((e["start"], e["end"]))
            out.append(e)
    return out


def assert_nbest_equal(ours: dict[str, list[dict]], reference: dict[str, list[dict]]) -> None:
    """Ours lists the reference's distinct spans first, in its order, then more distinct spans
    when the reference repeated some; the probabilities match where nothing was repeated."""
    assert ours.keys() == reference.keys()
    for qid, entries in reference.items():
        distinct = distinct_spans(entries)
        key = [(e["text"], e["score"], e["start"], e["end"]) for e in ours[qid]]
        expected = [(e["text"], e["score"], e["start"], e["end"]) for e in distinct]
        if len(distinct) < len(entries):
            spans = [k for k in key if k[3] > k[2]]
            expected_spans = [k for k in expected if k[3] > k[2]]
            assert spans[: len(expected_spans)] == expected_spans, qid
            assert len(set(key)) == len(key), qid
            assert len(spans) == len(set((k[2], k[3]) for k in spans)), qid
            continue
        assert key == expected, qid
        np.testing.assert_allclose(
            [e["probability"] for e in ours[qid]],
            [e["probability"] for e in entries],
            rtol=1e-5,
            atol=1e-7,
        )


def assert_agreement(data: EvalData, batches: list, version_2: bool, **params: Any) -> None:
    """Answers, score diffs and n-best lists of both decoders equal the reference's exactly.

    ``params``: ``n_best_size``, ``max_answer_length``, ``null_score_diff_threshold``. The
    reference ranks the null entry of its n-best lists by its raw score whatever the threshold;
    ours ranks it by the threshold rule, so the lists are compared at threshold 0.
    """
    predictions, diffs, nbest = reference_outputs(
        data, batches, version_2_with_negative=version_2, **params
    )
    fast = streaming_decode(data, batches, version_2=version_2, **params)
    full = streaming_decode(data, batches, version_2=version_2, with_nbest=True, **params)
    for decoded in (fast, full):
        assert decoded.predictions == predictions
        assert (decoded.na_probs or {}) == diffs
    for qid, entries in full.nbest.items():
        assert not entries or entries[0]["text"] == predictions[qid]
    if params.pop("null_score_diff_threshold", 0.0):
        _, _, nbest = reference_outputs(data, batches, version_2_with_negative=version_2, **params)
        full = streaming_decode(data, batches, version_2=version_2, with_nbest=True, **params)
    assert_nbest_equal(full.nbest, nbest)


@pytest.mark.parametrize("name", SQUAD_FILES)
@pytest.mark.parametrize(
    ("limit", "max_length", "doc_stride", "low"),
    [(2000, 384, 128, None), (600, 96, 32, None), (300, 96, 32, -3)],
    ids=["2000q-384", "600q-96-split", "300q-96-ties"],
)
def test_agrees_with_reference_on_real_features(
    shared_data: Path, name: str, limit: int, max_length: int, doc_stride: int, low: int | None
) -> None:
    file, version_2 = SQUAD_FILES[name]
    data = load_eval_data(shared_data / "squad" / file, limit, max_length, doc_stride)
    assert len(data.ids) == limit
    batches = random_batches(data.features, batch_size=48, seed=limit, low=low)
    assert_agreement(data, batches, version_2)


@pytest.mark.parametrize("name", SQUAD_FILES)
def test_agrees_with_reference_with_other_settings(shared_data: Path, name: str) -> None:
    file, version_2 = SQUAD_FILES[name]
    data = load_eval_data(shared_data / "squad" / file, 600, 96, 32)
    batches = random_batches(data.features, batch_size=33, seed=5)
    params = {"n_best_size": 5, "max_answer_length": 8, "null_score_diff_threshold": -0.5}
    assert_agreement(data, batches, version_2, **params)


@pytest.mark.parametrize(("max_unchecked", "chunk_rows"), [(1, 1), (10**6, 1), (10**6, 100)])
@pytest.mark.parametrize(
    ("n_best_size", "low"),
    [(3, None), (60, -3)],
    ids=["few-candidates", "ties-k-per-length"],
)
def test_streaming_settles_deferred_rows_of_batches_of_other_lengths(
    shared_data: Path, max_unchecked: int, chunk_rows: int, n_best_size: int, low: int | None
) -> None:
    """Rows the fast path cannot settle wait, padded, for one exact search: same answers.

    Each feature is its own question, so every unsettled row decides an answer. With 3
    candidates the best span over all tokens is often not a candidate; integer logits tie, and
    with 60 candidates ``k = min(60, L)`` differs between the length-sorted batches. With
    ``chunk_rows`` 100, batches of 16 wait and are decoded together, padded to the longest.
    """
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 300, 96, 32)
    features = [f | {"example_index": f["feature_index"]} for f in data.features]
    ids = [f"feature-{f['feature_index']}" for f in features]
    contexts = [data.contexts[f["example_index"]] for f in data.features]
    by_length = sorted(features, key=lambda f: -len(f["input_ids"]))  # as eval batches are
    batches = random_batches(by_length, batch_size=16, seed=3, low=low)
    assert len({batch["input_ids"].shape[1] for batch in batches}) > 3
    params = {"n_best_size": n_best_size, "max_answer_length": 30}
    decoder = feed(
        StreamingDecoder(**params, max_unchecked=max_unchecked, chunk_rows=chunk_rows), batches
    )
    waiting = decoder.deferred
    if max_unchecked == 1:
        assert not waiting
    else:
        assert sum(len(part.rows) for part in waiting) >= 10
        assert n_best_size < 20 or chunk_rows > 1 or len({part.k for part in waiting}) > 1
    decoded = decoder.decode(ids, contexts, version_2=True)
    starts, ends = logits_by_feature(batches)
    predictions, diffs, _ = postprocess_qa_predictions(
        ids, contexts, features, starts, ends, version_2_with_negative=True, **params
    )
    assert decoded.predictions == predictions
    assert decoded.na_probs == diffs


@pytest.mark.slow
@pytest.mark.parametrize("name", SQUAD_FILES)
def test_agrees_with_reference_on_full_dev_files(shared_data: Path, name: str) -> None:
    file, version_2 = SQUAD_FILES[name]
    data = load_eval_data(shared_data / "squad" / file)
    assert_agreement(data, random_batches(data.features, batch_size=64), version_2)


# --- edge cases ----------------------------------------------------------------------------------


def _offsets(spans: list[tuple[int, int]]) -> torch.Tensor:
    return torch.tensor([spans], dtype=torch.long)


def _single(start: list[float], end: list[float], spans: list[tuple[int, int]], **kwargs: Any):
    return feature_candidates(
        torch.tensor([start]), torch.tensor([end]), _offsets(spans), torch.tensor([0]), **kwargs
    )


def test_feature_shorter_than_n_best_size() -> None:
    spans = [(-1, -1), (0, 3), (4, 7), (8, 9), (-1, -1)]
    start, end = [5.0, 1.0, 3.0, 2.0, 9.0], [4.0, 0.5, 2.0, 6.0, 9.0]
    candidates = _single(start, end, spans)
    assert candidates.scores.shape == (1, 20)
    valid = candidates.scores[0][candidates.scores[0] > float("-inf")]
    # starts (1, 2, 3) x ends (1, 2, 3) with end >= start: 6 spans, best first.
    assert valid.tolist() == [9.0, 8.0, 7.0, 5.0, 3.0, 1.5]
    assert candidates.start_char[0, :3].tolist() == [4, 8, 0]
    assert candidates.end_char[0, :3].tolist() == [9, 9, 9]
    assert (candidates.start_char[0, 6:] == -1).all()
    assert candidates.null_score.tolist() == [9.0]
    assert _single(start, end, spans, num_spans=1).scores.tolist() == [[9.0]]


def test_max_answer_length_and_empty_char_spans_are_invalid() -> None:
    spans = [(-1, -1), (0, 3), (4, 4), (5, 8)]
    start, end = [0.0, 1.0, 9.0, 2.0], [0.0, 3.0, 9.0, 1.0]
    # Token 2 has an empty character span, so (2, 2) is invalid, and (1, 3) is 3 tokens long.
    # (2, 3) and (1, 2) both score 10: the better-ranked start (token 2) comes first.
    for num_spans in (20, 1):
        candidates = _single(start, end, spans, max_answer_length=2, num_spans=num_spans)
        found = candidates.scores[0] > float("-inf")
        assert candidates.scores[0, found].tolist() == [10.0, 10.0, 4.0, 3.0][:num_spans]
        assert candidates.start_char[0, found].tolist() == [4, 0, 0, 5][:num_spans]
        assert candidates.end_char[0, found].tolist() == [8, 4, 3, 8][:num_spans]


def test_no_context_token_means_no_answer() -> None:
    spans = [(-1, -1)] * 6
    logits = torch.randn(2, 6)
    offsets = torch.tensor([spans, spans])
    for num_spans in (1, 20):
        candidates = feature_candidates(
            logits, logits, offsets, torch.tensor([0, 0]), num_spans=num_spans
        )
        assert (candidates.scores == float("-inf")).all()
    candidates = feature_candidates(logits, logits, offsets, torch.tensor([0, 0]))
    decoded = decode(
        candidates,
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        ["a", "b"],
        ["xy", "zw"],
        version_2=True,
        with_nbest=True,
    )
    assert decoded.predictions == {"a": "", "b": ""}
    null = 2 * logits[:, 0]
    diffs = (null - NO_SPAN_SCORE).tolist()
    assert decoded.na_probs == {"a": diffs[0], "b": diffs[1]}
    assert decoded.nbest["a"] == [
        {"text": "", "score": null[0].item(), "probability": 1.0, "start": 0, "end": 0}
    ]
    v1 = decode(
        candidates,
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        ["a", "b"],
        ["xy", "zw"],
        with_nbest=True,
    )
    assert v1.predictions == {"a": "", "b": ""} and v1.nbest == {"a": [], "b": []}


def test_duplicated_and_split_features_decode_once(shared_data: Path) -> None:
    data = load_eval_data(shared_data / "squad" / "dev-v1.1.json.gz", 300, 96, 32)
    batches = random_batches(data.features, batch_size=len(data.features), seed=1)
    expected = streaming_decode(data, batches, with_nbest=True)
    # One feature per batch (every example split across batches), and every batch seen twice,
    # in a shuffled order, as DistributedSampler padding and gathering may deliver them.
    singles = [{k: v[i : i + 1] for k, v in batches[0].items()} for i in range(len(data.features))]
    order = torch.randperm(len(singles), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [singles[i] for i in order] + singles[: len(singles) // 2]
    assert streaming_decode(data, shuffled, with_nbest=True) == expected
    assert max(f["example_index"] for f in data.features) < len(data.ids)
    assert len(data.features) > len(data.ids)


def test_merge_keeps_the_best_spans_and_min_null_over_features() -> None:
    first = _single([0.0, 5.0, 1.0], [0.0, 1.0, 4.0], [(-1, -1), (0, 2), (3, 5)])
    second = _single([7.0, 0.0, 2.0], [1.0, 0.0, 2.5], [(-1, -1), (3, 5), (6, 9)])
    candidates = type(first).cat([first, second, first])
    merged, seen = merge_candidates(candidates, torch.tensor([1, 1, 1]), torch.tensor([4, 7, 4]), 3)
    assert seen.tolist() == [False, True, False]
    assert merged.scores[1, :4].tolist() == [9.0, 6.0, 5.0, 4.5]
    assert merged.start_char[1, :4].tolist() == [0, 0, 3, 6]
    assert merged.null_score[1].item() == 0.0
    assert merged.null_score[0].item() == float("inf")


@pytest.mark.parametrize("seed", range(5))
def test_merging_one_span_per_feature_equals_the_general_merge(seed: int) -> None:
    """The sort-free merge for one span per feature: ties, repeated features, empty examples."""
    generator = torch.Generator().manual_seed(seed)
    rows, num_examples = 300, 80
    scores = torch.randint(-3, 3, (rows, 1), generator=generator).float()
    scores[torch.rand(rows, generator=generator) < 0.1] = float("-inf")
    chars = torch.randint(0, 50, (rows, 2), generator=generator)
    candidates = SpanCandidates(
        scores,
        chars[:, :1],
        chars[:, 1:],
        torch.randn(rows, 1, generator=generator),
        torch.randn(rows, 1, generator=generator),
        torch.randn(rows, generator=generator),
    )
    feature_index = torch.randint(0, 200, (rows,), generator=generator)
    example_index = feature_index % num_examples  # a repeated feature keeps its example...
    first_row = {}
    for row, feature in enumerate(feature_index.tolist()):  # ...and its values
        first_row.setdefault(feature, row)
    same = torch.tensor([first_row[f] for f in feature_index.tolist()])
    candidates = candidates.select(same)
    fast, seen = merge_candidates(candidates, example_index, feature_index, num_examples)
    wider = SpanCandidates(
        *(
            torch.nn.functional.pad(field, (0, 2 - field.shape[1]), value=fill)
            for field, fill in zip(candidates[:-1], FILLS, strict=True)
        ),
        null_score=candidates.null_score,
    )
    general, general_seen = merge_candidates(wider, example_index, feature_index, num_examples)
    assert fast.scores.shape == (num_examples, 1)
    assert torch.equal(seen, general_seen) and not seen.all()
    for ours, theirs in zip(fast, general, strict=True):
        assert torch.equal(ours, theirs if theirs.dim() == 1 else theirs[:, :1])


@pytest.mark.parametrize(("threshold", "answer"), [(1.0, ""), (1.5, "abc"), (2.0, "abc")])
def test_v2_threshold_decision(threshold: float, answer: str) -> None:
    # best span score 4.0 (tokens 1..1 -> "abc"), null score 5.5: score_diff = 1.5
    candidates = _single([3.0, 2.5, 0.0], [2.5, 1.5, 0.0], [(-1, -1), (0, 3), (4, 6)])
    decoded = decode(
        candidates,
        torch.tensor([0]),
        torch.tensor([0]),
        ["q"],
        ["abc def"],
        version_2=True,
        null_score_diff_threshold=threshold,
    )
    assert decoded.predictions == {"q": answer}
    assert decoded.na_probs == {"q": 1.5}


@pytest.mark.parametrize("version_2", [False, True])
def test_nbest_probabilities_sum_to_one(shared_data: Path, version_2: bool) -> None:
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 200, 96, 32)
    decoded = streaming_decode(
        data, random_batches(data.features, 32, seed=3), version_2=version_2, with_nbest=True
    )
    for entries in decoded.nbest.values():
        assert sum(e["probability"] for e in entries) == pytest.approx(1.0, abs=1e-5)
        assert [e["score"] for e in entries] == sorted((e["score"] for e in entries), reverse=True)
        assert sum(e["text"] == "" for e in entries) == int(version_2)
        assert 1 <= len(entries) <= 20 + int(version_2)


def test_empty_decoder() -> None:
    decoded = StreamingDecoder(with_nbest=True).decode(["a"], ["x"], version_2=True)
    assert decoded.predictions == {} and decoded.na_probs == {} and decoded.nbest == {}


def test_example_index_out_of_range_is_an_error() -> None:
    candidates = _single([0.0, 1.0], [0.0, 1.0], [(-1, -1), (0, 2)])
    with pytest.raises(ValueError, match="out of range"):
        decode(candidates, torch.tensor([1]), torch.tensor([0]), ["only"], ["ab"])

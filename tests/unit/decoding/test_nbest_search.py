"""The n-best path's fast pieces against plain versions: the numpy span search, the merge that
takes single-window rows as they are, and the n-best lists (ties, short rows, several windows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers.eval_data import feed, load_eval_data, random_batches, reference_outputs
from qa_lightning.decoding import (
    NEG_INF,
    SpanCandidates,
    StreamingDecoder,
    mask_padding,
    merge_candidates,
    offset_rules,
)
from qa_lightning.decoding.candidates import SLOT_FILLS
from qa_lightning.decoding.nbest_search import stable_top
from qa_lightning.decoding.spans import top_spans

FLOAT32_MIN = float(np.finfo(np.float32).min)


def _awkward_rows(seed: int, rows: int = 64, length: int = 37) -> np.ndarray:
    """Float32 rows full of ties: small integers, +-0.0, -inf, the lowest float, short rows."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-3, 3, (rows, length)).astype(np.float32)
    values[rng.random((rows, length)) < 0.1] = -0.0
    values[rng.random((rows, length)) < 0.1] = NEG_INF
    values[rng.random((rows, length)) < 0.05] = FLOAT32_MIN
    values[: rows // 4, length // 3 :] = NEG_INF  # rows with fewer finite values than k
    values[rows // 2, :] = NEG_INF
    return values


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 2, 5, 20, 36, 37])
def test_stable_top_is_a_stable_descending_sort(seed: int, k: int) -> None:
    values = _awkward_rows(seed)
    expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
    assert np.array_equal(stable_top(values, k), expected)
    floats = np.random.default_rng(seed).standard_normal((50, 300)).astype(np.float32)
    assert np.array_equal(stable_top(floats, k), np.argsort(-floats, axis=1, kind="stable")[:, :k])


def _batches(shared_data: Path, low: int | None, seed: int) -> list[dict[str, torch.Tensor]]:
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 150, 96, 32)
    return random_batches(data.features, batch_size=40, seed=seed, low=low)


@pytest.mark.parametrize("low", [None, -3, -1], ids=["random", "ties", "all-tied"])
@pytest.mark.parametrize(
    ("k", "num_spans", "max_len"),
    [(20, 20, 30), (5, 3, 8), (3, 20, 30), (20, 20, 1), (96, 60, 30), (4, 16, 2), (20, 1, 30)],
    ids=["default", "few", "more-slots-than-pairs", "one-token", "k-is-L", "all-pairs", "one"],
)
def test_numpy_search_equals_the_torch_search(
    shared_data: Path, low: int | None, k: int, num_spans: int, max_len: int
) -> None:
    """Every field of every slot, empty slots included; padding masked (lowest float) or joined
    (``-inf``) too, so rows hold fewer real tokens than ``k``."""
    batches = _batches(shared_data, low, seed=11)
    for batch in batches[:2] if k >= 96 else batches:  # k = L: 96 x 96 pairs a row, fewer rows
        offsets = batch["offset_mapping"]
        starts, ends = batch["start_logits"], batch["end_logits"]
        masked = mask_padding(starts, batch["attention_mask"])
        variants = [
            (starts, ends),
            (masked, mask_padding(ends, batch["attention_mask"])),
            (masked.masked_fill(masked == FLOAT32_MIN, NEG_INF), ends),
        ]
        for start_logits, end_logits in variants:
            width = min(k, start_logits.shape[1])
            args = (start_logits, end_logits, offset_rules(offsets), width, num_spans, max_len)
            ours, theirs = top_spans(*args, use_numpy=True), top_spans(*args, use_numpy=False)
            for name, a, b in zip(ours._fields, ours, theirs, strict=True):
                assert a.dtype == b.dtype and torch.equal(a, b), name
            found = ours.scores > NEG_INF
            assert (ours.start_token[~found] == -1).all()
            assert (ours.start_logit[~found] == NEG_INF).all()
            if num_spans > width * width:
                assert not found[:, width * width :].any()


def plain_merge(
    candidates: SpanCandidates, example_index: list[int], feature_index: list[int], n: int
) -> dict[str, list[list[Any]]]:
    """Per example: its features once each (first row of each), in feature order; their slots
    in that order, each character span kept once (best score, earliest slot), a stable sort by
    score, the first ``K`` slots."""
    k = candidates.scores.shape[1]
    fields = {name: getattr(candidates, name).tolist() for name in SLOT_FILLS}
    first_row: dict[int, int] = {}
    for row, feature in enumerate(feature_index):
        first_row.setdefault(feature, row)
    merged = {name: [[fill] * k for _ in range(n)] for name, fill in SLOT_FILLS.items()}
    for example in range(n):
        rows = [first_row[f] for f in sorted(first_row) if example_index[first_row[f]] == example]
        slots = [{name: fields[name][r][j] for name in SLOT_FILLS} for r in rows for j in range(k)]
        best: dict[tuple[int, int], int] = {}
        for i, slot in enumerate(slots):
            if slot["scores"] == NEG_INF:
                continue
            span = (slot["start_char"], slot["end_char"])
            if span not in best or slot["scores"] > slots[best[span]]["scores"]:
                best[span] = i
        for i, slot in enumerate(slots):
            span = (slot["start_char"], slot["end_char"])
            if slot["scores"] > NEG_INF and best[span] != i:
                slots[i] = dict(SLOT_FILLS)
        ranked = sorted(slots, key=lambda slot: -slot["scores"])[:k]
        for j, slot in enumerate(ranked):
            for name in SLOT_FILLS:
                merged[name][example][j] = slot[name]
    return merged


@pytest.mark.parametrize("seed", range(6))
def test_merge_equals_a_plain_merge(seed: int) -> None:
    """Single-window examples (sorted or not, repeated spans or not), several windows, repeated
    features, examples without features, ties and empty slots."""
    generator = torch.Generator().manual_seed(seed)
    rows, k, num_examples = 240, 6, 120
    scores = torch.randint(-4, 4, (rows, k), generator=generator).float()
    scores[torch.rand(rows, k, generator=generator) < 0.15] = NEG_INF
    sort_rows = torch.rand(rows, generator=generator) < 0.7  # as the span search gives them
    scores[sort_rows] = scores[sort_rows].sort(1, descending=True).values
    start = torch.randint(0, 12, (rows, k), generator=generator)
    end = start + torch.randint(1, 4, (rows, k), generator=generator)  # repeated spans happen
    empty = scores == NEG_INF
    candidates = SpanCandidates(
        scores,
        start.masked_fill(empty, -1),
        end.masked_fill(empty, -1),
        torch.randn(rows, k, generator=generator).masked_fill(empty, NEG_INF),
        torch.randn(rows, k, generator=generator).masked_fill(empty, NEG_INF),
        torch.randn(rows, generator=generator),
    )
    feature_index = torch.randperm(rows, generator=generator)[:200]
    feature_index = torch.cat([feature_index, feature_index[:30]])  # repeated features
    example_index = torch.randint(0, num_examples, (rows,), generator=generator)
    example_index[example_index % 3 == 0] //= 2  # some examples get several windows
    row_of_feature = {}
    for row, feature in enumerate(feature_index.tolist()):
        row_of_feature.setdefault(feature, row)
    same = torch.tensor([row_of_feature[f] for f in feature_index.tolist()])
    candidates = candidates.select(same)  # a repeated feature repeats its values
    example_index = example_index[same]
    merged, seen = merge_candidates(candidates, example_index, feature_index, num_examples)
    expected = plain_merge(candidates, example_index.tolist(), feature_index.tolist(), num_examples)
    counts = torch.bincount(example_index, minlength=num_examples)
    assert (counts == 1).sum() > 20 and (counts > 1).sum() > 10 and not seen.all()
    assert seen.tolist() == (counts > 0).tolist()
    for name in SLOT_FILLS:
        assert getattr(merged, name).tolist() == expected[name], name


def _nbest(data: Any, batches: list, **params: Any) -> dict[str, list[dict]]:
    decoder = StreamingDecoder(
        params.get("n_best_size", 20), params.get("max_answer_length", 30), with_nbest=True
    )
    return (
        feed(decoder, batches)
        .decode(data.ids, data.contexts, version_2=params.get("version_2_with_negative", False))
        .nbest
    )


@pytest.mark.parametrize("version_2", [False, True], ids=["v1.1", "v2.0"])
@pytest.mark.parametrize(
    ("n_best_size", "max_answer_length", "low"),
    [(100, 2, -2), (20, 1, None), (3, 2, -1)],
    ids=["more-slots-than-spans", "one-token-answers", "all-tied"],
)
def test_nbest_lists_equal_the_reference_on_one_window_questions(
    shared_data: Path,
    version_2: bool,
    n_best_size: int,
    max_answer_length: int,
    low: int | None,
) -> None:
    """Each feature its own question (no repeated spans across windows): the lists are the
    reference loop's, entry for entry, probabilities within float32 rounding."""
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 120, 64, 16)
    features = [f | {"example_index": f["feature_index"]} for f in data.features]
    ids = [f"feature-{f['feature_index']}" for f in features]
    contexts = [data.contexts[f["example_index"]] for f in data.features]
    one_window = type(data)(ids, contexts, [], features)
    batches = random_batches(features, batch_size=24, seed=5, low=low)
    params = {
        "n_best_size": n_best_size,
        "max_answer_length": max_answer_length,
        "version_2_with_negative": version_2,
    }
    _, _, expected = reference_outputs(one_window, batches, **params)
    ours = _nbest(one_window, batches, **params)
    assert ours.keys() == expected.keys()
    lengths = []
    for qid, entries in expected.items():
        lengths.append(len(entries))
        key = [(e["text"], e["score"], e["start"], e["end"]) for e in ours[qid]]
        assert key == [(e["text"], e["score"], e["start"], e["end"]) for e in entries], qid
        np.testing.assert_allclose(
            [e["probability"] for e in ours[qid]],
            [e["probability"] for e in entries],
            rtol=1e-5,
            atol=1e-7,
        )
    assert min(lengths) < n_best_size  # some questions have fewer valid spans than slots


def test_nbest_lists_only_for_questions_with_features(shared_data: Path) -> None:
    data = load_eval_data(shared_data / "squad" / "dev-v1.1.json.gz", 60, 96, 32)
    batches = random_batches(data.features, batch_size=32, seed=2)
    kept = [{k: v[b["example_index"] % 2 == 0] for k, v in b.items()} for b in batches]
    for version_2 in (False, True):
        decoder = feed(StreamingDecoder(with_nbest=True), kept)
        decoded = decoder.decode(data.ids, data.contexts, version_2=version_2)
        assert decoded.nbest is not None
        assert decoded.nbest.keys() == decoded.predictions.keys()
        assert sorted(decoded.nbest) == sorted(data.ids[0::2])
        for qid, entries in decoded.nbest.items():
            context = data.contexts[data.ids.index(qid)]
            assert entries and all(context[e["start"] : e["end"]] == e["text"] for e in entries)


def test_numpy_search_with_no_rows_and_a_too_large_k() -> None:
    offsets = torch.tensor([[(-1, -1), (0, 3), (4, 7), (8, 9)]])
    logits = torch.tensor([[0.0, 2.0, 1.0, 3.0]])
    for rows in (0, 1):
        rules = offset_rules(offsets[:rows])
        ours = top_spans(logits[:rows], logits[:rows], rules, 4, 20, 30, use_numpy=True)
        theirs = top_spans(logits[:rows], logits[:rows], rules, 4, 20, 30, use_numpy=False)
        assert ours.scores.shape == (rows, 20)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    with pytest.raises(ValueError, match="row length 4, got 5"):
        top_spans(logits, logits, offset_rules(offsets), 5, 20, 30, use_numpy=True)

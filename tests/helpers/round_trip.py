"""The round-trip check of feature preparation on real SQuAD questions, shared by the tests of
trained and published tokenizers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from qa_lightning.data.features import (
    prepare_eval_features,
    prepare_train_features,
    tokenize_windows,
)
from qa_lightning.utils.io import read_json_file

MAX_LENGTH, STRIDE = 192, 64  # small windows: many answers fall outside some window


def flat_examples(path: Path, limit: int) -> dict[str, list]:
    """The first ``limit`` questions of an official-layout file, as hub-style columns."""
    data = read_json_file(path)["data"]
    cols: dict[str, list] = {"id": [], "context": [], "question": [], "answers": []}
    for article in data:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                cols["id"].append(qa["id"])
                cols["context"].append(para["context"])
                cols["question"].append(qa["question"])
                cols["answers"].append(
                    {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    }
                )
                if len(cols["id"]) == limit:
                    return cols
    return cols


def _token_starts_ends(offsets, first, last):
    return {offsets[i][0] for i in range(first, last + 1)}, {
        offsets[i][1] for i in range(first, last + 1)
    }


def check_round_trip(
    examples: dict[str, list], tok, max_length: int = MAX_LENGTH, stride: int = STRIDE
) -> Counter:
    """Assert the round-trip properties; return counts of what was seen."""
    n = len(examples["id"])
    feats = prepare_eval_features(examples, tok, max_length, stride, indices=list(range(n)))
    train = prepare_train_features(examples, tok, max_length, stride)
    assert train["input_ids"] == feats["input_ids"]
    assert train["start_positions"] == feats["start_positions"]
    assert train["end_positions"] == feats["end_positions"]

    # Feature count per example equals the tokenizer's own overflow.
    raw = tokenize_windows(examples, tok, max_length, stride)
    assert Counter(raw["overflow_to_sample_mapping"]) == Counter(feats["example_index"])
    assert feats["example_index"] == sorted(feats["example_index"])

    seen: Counter = Counter()
    for i, offsets in enumerate(feats["offset_mapping"]):
        ex = feats["example_index"][i]
        context = examples["context"][ex]
        cls = feats["cls_index"][i]
        start, end = feats["start_positions"][i], feats["end_positions"][i]
        assert tok.convert_ids_to_tokens(feats["input_ids"][i][cls]) == tok.cls_token
        ctx = [j for j, o in enumerate(offsets) if o[0] >= 0]
        first, last = ctx[0], ctx[-1]
        assert ctx == list(range(first, last + 1)), "context tokens must be contiguous"
        answers = examples["answers"][ex]
        if not answers["text"]:
            assert start == end == cls
            seen["unanswerable"] += 1
            continue
        a_start = answers["answer_start"][0]
        a_end = a_start + len(answers["text"][0])
        if not (offsets[first][0] <= a_start and offsets[last][1] >= a_end):
            assert start == end == cls, f"feature {i}: answer outside the window must point at CLS"
            seen["outside"] += 1
            continue
        assert first <= start <= end <= last
        span = context[offsets[start][0] : offsets[end][1]]
        gold = answers["text"][0]
        starts, ends = _token_starts_ends(offsets, first, last)
        gold_stripped_start = a_start + len(gold) - len(gold.lstrip())
        gold_stripped_end = a_end - (len(gold) - len(gold.rstrip()))
        if gold_stripped_start in starts and gold_stripped_end in ends:
            assert span.strip() == gold.strip(), f"feature {i}: {span!r} != {gold!r}"
            seen["exact"] += 1
        else:  # the answer starts or ends inside a token: the span is the tokens covering it
            assert offsets[start][0] <= gold_stripped_start and offsets[end][1] >= gold_stripped_end
            seen["inside_token"] += 1
    return seen

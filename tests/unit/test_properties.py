"""Property-based tests of feature preparation and decoding on arbitrary Unicode text.

With the packaged MiniLM tokenizer and small windows (``max_length`` 64, ``doc_stride`` 16):
empty, whitespace-only, zero-width and control-only texts, combining characters, emoji,
right-to-left scripts, questions longer than a window and contexts 20x longer than one.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.tokenizers import minilm_tokenizer
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import (
    NOT_CONTEXT,
    prepare_eval_features,
    prepare_train_features,
    tokenize_windows,
)
from qa_lightning.decoding import decode, feature_candidates
from qa_lightning.errors import DataFormatError

MAX_LENGTH, STRIDE, MAX_ANSWER = 64, 16, 30
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces of text from many scripts and categories; words are runs of these.
PIECES = [
    *"abcXYZ019",
    *".,;:!?'\"()-/",
    "é",
    "e\u0301",  # e + combining acute
    "n\u0303\u0323",  # two combining marks
    "ß",
    "İ",
    "ﬁ",
    "שלום",  # Hebrew (right-to-left)
    "مرحبا",  # Arabic (right-to-left)
    "\u200f",  # right-to-left mark
    "漢字",
    "東京",
    "🙂",
    "👍🏽",  # emoji + skin tone modifier
    "👨\u200d👩\u200d👧",  # zero-width-joiner sequence
    "\u200b",  # zero-width space
    "\x00",
    "\x07",
]
SEPARATORS = [" ", "  ", "\t", "\n", "\u00a0", "\u3000", " \n "]

word = st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("".join)


@st.composite
def texts(draw, max_words: int = 40) -> str:
    """Empty, whitespace-only, arbitrary, or words joined by assorted whitespace."""
    kind = draw(st.sampled_from(["words", "words", "words", "any", "blank"]))
    if kind == "blank":
        return draw(st.text(alphabet=" \t\n\u00a0\u3000\u200b", max_size=5))
    if kind == "any":
        return draw(st.text(max_size=60))  # any code point but lone surrogates
    words = draw(st.lists(word, min_size=1, max_size=max_words))
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, seps, strict=True)).strip(" ")


@st.composite
def contexts(draw) -> str:
    """Mostly short; one in three repeated into a context ~20x longer than a window."""
    text = draw(texts())
    if draw(st.integers(0, 2)) == 0 and text.strip():
        text = " ".join([text] * max(1, (20 * MAX_LENGTH) // max(1, len(text.split()))))
    return text


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


def columns(questions: list[str], contexts_: list[str], answers: list[dict] | None = None) -> dict:
    empty = {"text": [], "answer_start": []}
    return {
        "id": [str(i) for i in range(len(questions))],
        "question": questions,
        "context": contexts_,
        "answers": answers or [empty] * len(questions),
    }


def batch_of(features: dict, tokenizer) -> dict[str, torch.Tensor]:
    keys = [k for k in features if k not in ("start_positions", "end_positions")]
    rows = [{k: features[k][i] for k in keys} for i in range(len(features["input_ids"]))]
    return QACollator(tokenizer)(rows)


@SETTINGS
@given(questions=st.lists(texts(max_words=80), min_size=1, max_size=3), data=st.data())
def test_features_never_crash_and_map_offsets_into_the_context(tokenizer, questions, data):
    contexts_ = [data.draw(contexts()) for _ in questions]
    examples = columns(questions, contexts_)
    train = prepare_train_features(examples, tokenizer, MAX_LENGTH, STRIDE)
    features = prepare_eval_features(
        examples, tokenizer, MAX_LENGTH, STRIDE, indices=list(range(len(questions)))
    )
    assert len(train["input_ids"]) == len(features["input_ids"]) >= len(questions)
    assert set(features["example_index"]) == set(range(len(questions)))
    for ids, offsets, cls, example, start, end in zip(
        features["input_ids"],
        features["offset_mapping"],
        features["cls_index"],
        features["example_index"],
        train["start_positions"],
        train["end_positions"],
        strict=True,
    ):
        assert len(ids) <= MAX_LENGTH and len(offsets) == len(ids)
        assert start == end == cls  # no gold answers: every window points at CLS
        context = contexts_[example]
        for a, b in offsets:
            assert (a, b) == NOT_CONTEXT or 0 <= a <= b <= len(context)


@settings(SETTINGS, max_examples=40)
@given(
    question=texts(),
    contexts_=st.lists(contexts(), min_size=1, max_size=2),
    seed=st.integers(0, 2**16),
    version_2=st.booleans(),
)
def test_decoded_answers_are_substrings_of_their_context(
    tokenizer, question, contexts_, seed, version_2
):
    examples = columns([question] * len(contexts_), contexts_)
    features = prepare_eval_features(
        examples, tokenizer, MAX_LENGTH, STRIDE, indices=list(range(len(contexts_)))
    )
    batch = batch_of(features, tokenizer)
    generator = torch.Generator().manual_seed(seed)
    start, end = (torch.randn(batch["input_ids"].shape, generator=generator) for _ in range(2))
    candidates = feature_candidates(
        start, end, batch["offset_mapping"], batch["cls_index"], 5, MAX_ANSWER
    )
    decoded = decode(
        candidates,
        batch["example_index"],
        torch.arange(len(batch["input_ids"])),
        examples["id"],
        contexts_,
        version_2=version_2,
        with_nbest=True,
    )
    assert set(decoded.predictions) == set(examples["id"])
    for qid, context in zip(examples["id"], contexts_, strict=True):
        answer = decoded.predictions[qid]
        assert answer == "" or answer in context
        for entry in decoded.nbest[qid]:
            assert context[entry["start"] : entry["end"]] == entry["text"]
        best_span = next((e for e in decoded.nbest[qid] if e["end"] > e["start"]), None)
        if answer:
            assert best_span is not None and best_span["text"] == answer


@st.composite
def answered_examples(draw, tokenizer) -> tuple[str, str, int, int]:
    """A question, a non-empty context, and a gold answer on token boundaries: at the start or
    end of the context, at the last token of the first window or the first token of the second,
    or anywhere; at most ``doc_stride + 1`` tokens, so some window holds it whole."""
    question = draw(texts(max_words=12))
    context = draw(contexts())
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    offsets = [(a, b) for a, b in offsets if b > a]
    if not offsets:
        context = draw(word.filter(str.isalnum)) + " " + context
        offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
    n = len(offsets)
    length = draw(st.integers(1, min(n, STRIDE + 1)))
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    window = max(1, MAX_LENGTH - 3 - question_tokens)  # context tokens per window
    first = draw(
        st.sampled_from(
            [
                0,  # start of the context
                n - length,  # end of the context
                min(n, window) - length,  # ends at the first window's last token
                min(n - length, max(0, window - STRIDE)),  # starts the second window
                draw(st.integers(0, n - length)),
            ]
        )
    )
    first = max(0, min(first, n - length))
    return question, context, offsets[first][0], offsets[first + length - 1][1]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_gold_answers_that_fit_a_window_round_trip(tokenizer, data):
    question, context, start_char, end_char = data.draw(answered_examples(tokenizer))
    gold = context[start_char:end_char]
    answers = [{"text": [gold], "answer_start": [start_char]}]
    examples = columns([question], [context], answers)
    train = prepare_train_features(examples, tokenizer, MAX_LENGTH, STRIDE)
    features = prepare_eval_features(examples, tokenizer, MAX_LENGTH, STRIDE, indices=[0])
    pairs = zip(train["start_positions"], features["cls_index"], strict=True)
    hits = [i for i, (s, c) in enumerate(pairs) if s != c]
    assert hits, "some window holds the whole answer"
    for i in hits:
        offsets = features["offset_mapping"][i]
        s, e = train["start_positions"][i], train["end_positions"][i]
        assert context[offsets[s][0] : offsets[e][1]] == gold

    batch = batch_of(features, tokenizer)
    start = torch.zeros(batch["input_ids"].shape)
    end = torch.zeros(batch["input_ids"].shape)
    for i in range(len(start)):
        start[i, train["start_positions"][i]] = end[i, train["end_positions"][i]] = 10.0
    candidates = feature_candidates(start, end, batch["offset_mapping"], batch["cls_index"], 5, 30)
    decoded = decode(candidates, batch["example_index"], torch.arange(len(start)), ["0"], [context])
    assert decoded.predictions["0"] == gold


def test_long_questions_are_cut_to_fit_with_a_warning(tokenizer, caplog):
    question = "why " * 200
    features = prepare_eval_features(
        columns([question, "who?"], ["some context here", "the other context"]),
        tokenizer,
        MAX_LENGTH,
        STRIDE,
    )
    assert {len(ids) for ids in features["input_ids"]} <= set(range(MAX_LENGTH + 1))
    assert "1 of 2 questions are longer than 44 tokens: cut" in caplog.text


@pytest.mark.parametrize("field", ["question", "context"])
def test_undecodable_text_is_a_clear_error(tokenizer, field):
    # what Python makes of non-UTF-8 bytes in argv or a file read with surrogateescape
    text = b"caf\xe9 au lait".decode("utf-8", errors="surrogateescape")
    examples = columns(["Where?"], ["In a cafe."])
    examples[field] = [text]
    with pytest.raises(
        DataFormatError, match=rf"field '{field}'.*lone surrogate '\\udce9' at character 3"
    ):
        tokenize_windows(examples, tokenizer, MAX_LENGTH, STRIDE)

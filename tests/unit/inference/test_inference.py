"""QuestionAnswerer: offsets, windows, top-k, batching invariance, errors, pipeline compatibility.

Real MiniLM (a seeded random QA head) checks the plumbing; a scripted model whose logits peak on
chosen tokens checks which answer wins. Parity with the real transformers 4.x pipeline needs a
second venv (minutes), so ``bench/pipeline_parity.py`` checks it, not a test.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.scripted import TokenModel
from qa_lightning import QuestionAnswerer, answer_question
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.errors import DataFormatError
from qa_lightning.hub import load_tokenizer
from qa_lightning.model.module import QALightningModule

CONTEXTS = [
    "The Eiffel Tower was completed in 1889 in Paris. It was designed by the engineering firm "
    "of Gustave Eiffel and is 330 metres tall.",
    "Photosynthesis converts light energy into chemical energy. Plants, algae and some bacteria "
    "use it; oxygen is released as a by-product.",
    "Ada Lovelace wrote what is often called the first computer program in 1843, for Charles "
    "Babbage's proposed Analytical Engine.",
]
QUESTIONS = ["Who designed the tower?", "What is released?", "When was the program written?"]
FILLER = "The cat sat on the mat and looked at the garden for a while. "


@pytest.fixture(scope="module")
def module() -> QALightningModule:
    torch.manual_seed(0)
    return QALightningModule(pretrained="minilm").eval()


@pytest.fixture(scope="module")
def qa(module: QALightningModule) -> QuestionAnswerer:
    return QuestionAnswerer(module, load_tokenizer("minilm"), batch_size=4)


@pytest.fixture(scope="module")
def compat(qa: QuestionAnswerer) -> QuestionAnswerer:
    return QuestionAnswerer(qa.module, qa.tokenizer, batch_size=4, compat="pipeline")


def scripted(
    qa: QuestionAnswerer, start: str, end: str | None = None, compat: str | None = None, **logits
) -> QuestionAnswerer:
    """A QuestionAnswerer whose model peaks on the first token of ``start``, last of ``end``."""
    ids = qa.tokenizer(start, add_special_tokens=False)["input_ids"]
    end_ids = qa.tokenizer(end, add_special_tokens=False)["input_ids"] if end else ids
    model = TokenModel(ids[:1], end_ids[-1:], **logits)
    return QuestionAnswerer(model, qa.tokenizer, batch_size=2, compat=compat)


def check_answers(answers: list[dict], context: str, probabilities: bool = True) -> None:
    for a in answers:
        assert context[a["start"] : a["end"]] == a["answer"]
        if probabilities:
            assert 0.0 <= a["score"] <= 1.0
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True)


def test_import_stays_light() -> None:
    code = (
        "import sys, qa_lightning; assert 'torch' not in sys.modules; "
        "from qa_lightning import QuestionAnswerer, answer_question; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("handle_impossible_answer", [False, True])
def test_offsets_scores_and_top_k(qa: QuestionAnswerer, handle_impossible_answer: bool) -> None:
    results = qa(QUESTIONS, CONTEXTS, top_k=5, handle_impossible_answer=handle_impossible_answer)
    for answers, context in zip(results, CONTEXTS, strict=True):
        assert 1 <= len(answers) <= 5
        check_answers(answers, context)
        assert sum(a["score"] for a in answers) <= 1.0 + 1e-6
    first = qa(QUESTIONS, CONTEXTS, top_k=1, handle_impossible_answer=handle_impossible_answer)
    assert [r[:1] for r in results] == first


def test_compat_offsets_and_top_k(compat: QuestionAnswerer) -> None:
    for answers, context in zip(compat(QUESTIONS, CONTEXTS, top_k=4), CONTEXTS, strict=True):
        assert len(answers) == 4
        check_answers(answers, context, probabilities=False)
        assert all(a["score"] > 0 for a in answers)
        assert len({a["answer"].lower() for a in answers}) == 4  # equal texts are merged


def test_offsets_on_real_dev_questions(
    shared_data: Path, qa: QuestionAnswerer, compat: QuestionAnswerer
) -> None:
    records = read_squad_file(shared_data / "squad" / "dev-v2.0.json.gz").records[:20]
    qs, cs = [r["question"] for r in records], [r["context"] for r in records]
    for answerer in (qa, compat):
        results = answerer(qs, cs, top_k=3, handle_impossible_answer=True, max_length=256)
        for answers, context in zip(results, cs, strict=True):
            check_answers(answers, context, probabilities=answerer is qa)


@pytest.mark.parametrize("mode", [None, "pipeline"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_long_context_answer_in_any_window(qa: QuestionAnswerer, mode: str | None, where: str):
    parts = [FILLER * 40, FILLER * 40]
    position = {"start": 0, "middle": 1, "end": 2}[where]
    parts.insert(position, "The capital is Paris. ")
    context = "".join(parts)
    answerer = scripted(qa, "Paris", compat=mode)
    windows = qa.tokenizer(
        "Where?", context, truncation="only_second", max_length=64, stride=16,
        return_overflowing_tokens=True,
    )["input_ids"]  # fmt: skip
    assert len(windows) > 20
    [best] = answerer.answer("What is the capital?", context, max_length=64, doc_stride=16)
    assert (best["answer"], best["start"]) == ("Paris", context.index("Paris"))


def test_batching_invariance(qa: QuestionAnswerer, compat: QuestionAnswerer) -> None:
    long_context = FILLER * 15 + CONTEXTS[0]
    qs = [*QUESTIONS, "What was completed?", *QUESTIONS]
    cs = [*CONTEXTS, long_context, *reversed(CONTEXTS)]
    for answerer in (qa, compat):
        options = {"top_k": 3, "max_length": 128, "doc_stride": 32}
        batched = answerer(qs, cs, **options)
        single = [answerer.answer(q, c, **options) for q, c in zip(qs, cs, strict=True)]
        for b, s in zip(batched, single, strict=True):
            assert [(a["answer"], a["start"], a["end"]) for a in b] == [
                (a["answer"], a["start"], a["end"]) for a in s
            ]
            assert [a["score"] for a in b] == pytest.approx([a["score"] for a in s], rel=1e-4)


@pytest.mark.parametrize("mode", [None, "pipeline"])
def test_impossible_answer(qa: QuestionAnswerer, mode: str | None) -> None:
    answerer = scripted(qa, "Paris", peak=5.0, cls=8.0, compat=mode)
    context = "The capital of France is Paris."
    [span] = answerer.answer("Capital?", context)
    assert span["answer"] == "Paris"
    [empty] = answerer.answer("Capital?", context, handle_impossible_answer=True)
    assert (empty["answer"], empty["start"], empty["end"]) == ("", 0, 0)
    both = answerer.answer("Capital?", context, top_k=2, handle_impossible_answer=True)
    assert [a["answer"] for a in both] == ["", "Paris"]


def test_compat_scores_are_the_pipelines_probability_products(qa: QuestionAnswerer) -> None:
    context = "The capital of France is Paris."
    [best] = scripted(qa, "Paris", compat="pipeline").answer("Capital?", context)
    context_tokens = len(qa.tokenizer(context, add_special_tokens=False)["input_ids"])
    p = math.exp(10) / (math.exp(10) + context_tokens)  # context tokens and CLS share the softmax
    assert best["score"] == pytest.approx(p * p, rel=1e-5)


def test_compat_merges_equal_answers(qa: QuestionAnswerer) -> None:
    context = "Paris is big. Some say paris is the best city."
    [best] = scripted(qa, "Paris", compat="pipeline").answer("Which city?", context)
    others = len(qa.tokenizer(context, add_special_tokens=False)["input_ids"]) - 2 + 1  # + CLS
    p = math.exp(10) / (2 * math.exp(10) + others)
    assert (best["answer"], best["start"], best["end"]) == ("Paris", 0, 5)  # first occurrence
    assert best["score"] == pytest.approx(2 * p * p, rel=1e-5)  # both occurrences add up


def test_compat_aligns_to_words(qa: QuestionAnswerer) -> None:
    context = "It was unbelievably long."
    middle = qa.tokenizer.convert_tokens_to_ids(["##ie"])  # un ##bel ##ie ##va ##bly
    model = TokenModel(middle, middle)
    compat = QuestionAnswerer(model, qa.tokenizer, compat="pipeline")
    assert compat.answer("How long?", context)[0]["answer"] == "unbelievably"
    assert compat.answer("How long?", context, align_to_words=False)[0]["answer"] == "ie"
    assert QuestionAnswerer(model, qa.tokenizer).answer("How long?", context)[0]["answer"] == "ie"


def test_compat_default_max_answer_length_is_15(qa: QuestionAnswerer) -> None:
    context = "Alpha " + "the " * 18 + "omega is here."  # Alpha ... omega: 20 tokens
    whole = context[: context.index("omega") + 5]
    assert scripted(qa, "Alpha", "omega").answer("What?", context)[0]["answer"] == whole
    [best] = scripted(qa, "Alpha", "omega", compat="pipeline").answer("What?", context)
    assert best["answer"] != whole
    assert len(qa.tokenizer(best["answer"], add_special_tokens=False)["input_ids"]) <= 15


@pytest.mark.parametrize(
    ("questions", "contexts", "options", "error"),
    [
        (["Who?"], [""], {}, DataFormatError),
        (["Who?"], ["the caf\udce9 owner"], {}, DataFormatError),
        (["   "], ["Some context."], {}, DataFormatError),
        ([None], ["Some context."], {}, DataFormatError),
        (["Who?", "What?"], ["Some context."], {}, ValueError),
        ("Who?", "Some context.", {}, TypeError),
        (["Who?"], ["Some context."], {"top_k": 0}, ValueError),
        (["Who?"], ["Some context."], {"max_answer_length": 0}, ValueError),
        (["Who is it?"], ["Some context."], {"max_length": 32, "doc_stride": 30}, DataFormatError),
        (["Who?"], ["Some context."], {"align_to_words": False}, ValueError),
    ],
)
def test_invalid_input(qa: QuestionAnswerer, questions, contexts, options, error) -> None:
    with pytest.raises(error):
        qa(questions, contexts, **options)


@pytest.mark.parametrize("compat", [None, "pipeline"])
def test_too_long_questions_are_cut_as_in_training(
    qa: QuestionAnswerer, compat: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """One rule for every path (issue 13): a question longer than the window allows is cut to
    fit and counted in a warning, as feature preparation does for training and evaluation."""
    answerer = QuestionAnswerer(qa.module, qa.tokenizer, compat=compat)
    with caplog.at_level(logging.WARNING, logger="qa_lightning.data.features"):
        [answers] = answerer(["Who? " * 400], ["Ann wrote the book in Paris."])
    assert answers and all(0 <= a["start"] <= a["end"] <= 27 for a in answers)
    assert "1 of 1 questions are longer than" in caplog.text


def test_empty_batch_and_bad_options(qa: QuestionAnswerer) -> None:
    assert qa([], []) == []
    with pytest.raises(ValueError, match="compat"):
        QuestionAnswerer(qa.module, qa.tokenizer, compat="pipelines")
    with pytest.raises(ValueError, match="doc_stride"):
        QuestionAnswerer(qa.module, qa.tokenizer, compat="pipeline")(
            ["Who?"], ["Ann."], max_length=64, doc_stride=100
        )


def test_from_pretrained_and_answer_question(module: QALightningModule, tmp_path: Path) -> None:
    directory = module.save_hf_model(tmp_path / "hf_model", load_tokenizer("minilm"))
    loaded = QuestionAnswerer.from_pretrained(directory)
    [best] = loaded.answer(QUESTIONS[0], CONTEXTS[0])
    assert answer_question(QUESTIONS[0], CONTEXTS[0], model_path=directory) == best["answer"]
    with pytest.raises(ValueError, match="model_path"):
        answer_question(QUESTIONS[0], CONTEXTS[0])

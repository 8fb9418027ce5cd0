"""Shipped answerability: the values survive hf_model/, checkpoints and the ONNX export, the
QuestionAnswerer applies them by default, explicit arguments win, a model without the file
answers as before; top-k lists hold distinct spans; several documents are ranked together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.scripted import TokenModel
from qa_lightning import QuestionAnswerer
from qa_lightning.hub import load_tokenizer
from qa_lightning.metrics.answerability import FILE, Answerability, read_answerability
from qa_lightning.metrics.calibration import Calibrator
from qa_lightning.model.module import QALightningModule

CONTEXT = (
    "The Eiffel Tower was completed in 1889 in Paris. It was designed by the engineering firm "
    "of Gustave Eiffel and is 330 metres tall."
)
QUESTION = "Who designed the tower?"
FILLER = "The cat sat on the mat and looked at the garden for a while. "
TUNED = Answerability(
    version="2.0",
    null_threshold=-1e4,  # every question answered "" unless overridden
    objective="f1",
    decoding={"n_best_size": 7, "max_answer_length": 12, "max_length": 128, "doc_stride": 48},
    top_span=Calibrator("platt", "logit", {"a": 0.5, "b": -1.0}),
    has_answer=Calibrator("platt", "identity", {"a": 0.8, "b": 0.3}),
    validation={"f1": 50.0},
)


@pytest.fixture(scope="module")
def module() -> QALightningModule:
    torch.manual_seed(0)
    return QALightningModule(pretrained="minilm").eval()


@pytest.fixture(scope="module")
def hf_model(module: QALightningModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    module.answerability = TUNED
    try:
        return module.save_hf_model(tmp_path_factory.mktemp("tuned"), load_tokenizer("minilm"))
    finally:
        module.answerability = None


def test_hf_model_round_trip_and_defaults(hf_model: Path) -> None:
    assert json.loads((hf_model / FILE).read_text())["null_threshold"] == -1e4
    qa = QuestionAnswerer.from_pretrained(hf_model)
    assert qa.answerability == TUNED
    [best] = qa.answer(QUESTION, CONTEXT)
    assert best["answer"] == "" and (best["start"], best["end"]) == (0, 0)
    # The empty answer's score is the calibrated probability of no answer.
    answers = qa.answer(QUESTION, CONTEXT, top_k=3, calibrated=False)
    span = next(a for a in answers if a["answer"])
    calibrated = qa.answer(QUESTION, CONTEXT, top_k=3)
    assert [a["answer"] for a in calibrated] == [a["answer"] for a in answers]
    assert all(0.0 <= a["score"] <= 1.0 for a in calibrated + answers)
    expected = TUNED.span_scores([span["score"]])[0]
    assert next(a["score"] for a in calibrated if a["answer"]) == pytest.approx(expected)
    null = answers[0]
    assert null["answer"] == "" and calibrated[0]["score"] != pytest.approx(null["score"])


def test_explicit_arguments_win(hf_model: Path, module: QALightningModule) -> None:
    qa = QuestionAnswerer.from_pretrained(hf_model)
    plain = QuestionAnswerer(module, load_tokenizer("minilm"))
    [spanned] = qa.answer(QUESTION, CONTEXT, null_threshold=1e4)
    assert spanned["answer"]
    [off] = qa.answer(QUESTION, CONTEXT, handle_impossible_answer=False, calibrated=False)
    settings = {k: v for k, v in TUNED.decoding.items()}
    [before] = plain.answer(QUESTION, CONTEXT, **settings)
    assert off == before
    with pytest.raises(ValueError, match=r"answerability\.json"):
        plain.answer(QUESTION, CONTEXT, calibrated=True)
    compat = QuestionAnswerer(module, qa.tokenizer, compat="pipeline", answerability=TUNED)
    assert compat.answer(QUESTION, CONTEXT)[0]["answer"]  # the pipeline's rules: no threshold
    with pytest.raises(ValueError, match="pipeline"):
        compat.answer(QUESTION, CONTEXT, null_threshold=0.0)


def test_model_without_the_file_answers_as_before(
    module: QALightningModule, tmp_path: Path
) -> None:
    directory = module.save_hf_model(tmp_path / "plain", load_tokenizer("minilm"))
    assert not (directory / FILE).exists() and read_answerability(directory) is None
    loaded = QuestionAnswerer.from_pretrained(directory)
    plain = QuestionAnswerer(module, loaded.tokenizer)
    assert loaded.answerability is None
    assert loaded.answer(QUESTION, CONTEXT, top_k=3) == plain.answer(
        QUESTION, CONTEXT, top_k=3, handle_impossible_answer=False, max_answer_length=30
    )


def test_checkpoint_round_trip(module: QALightningModule, tmp_path: Path) -> None:
    module.answerability = TUNED
    try:
        checkpoint: dict = {}
        module.on_save_checkpoint(checkpoint)
    finally:
        module.answerability = None
    torch.save(checkpoint, tmp_path / "x.ckpt")
    loaded = torch.load(tmp_path / "x.ckpt", weights_only=True)
    module.on_load_checkpoint(loaded)
    try:
        assert module.answerability == TUNED
    finally:
        module.answerability = None


def test_onnx_export_carries_the_values(hf_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from qa_lightning.inference.onnx import INFO_FILE, export_onnx

    output = export_onnx(hf_model, tmp_path / "onnx", verify=False)
    assert json.loads((output / INFO_FILE).read_text())["answerability"] == TUNED.to_dict()
    onnx = QuestionAnswerer.from_pretrained(output)
    assert onnx.answerability == TUNED
    assert onnx.answer(QUESTION, CONTEXT)[0]["answer"] == ""
    [spanned] = onnx.answer(QUESTION, CONTEXT, null_threshold=1e4)
    [torch_spanned] = QuestionAnswerer.from_pretrained(hf_model).answer(
        QUESTION, CONTEXT, null_threshold=1e4
    )
    assert spanned["answer"] == torch_spanned["answer"]


def test_malformed_file_names_the_field(tmp_path: Path) -> None:
    bad = TUNED.to_dict() | {"null_threshold": "high"}
    (tmp_path / FILE).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"answerability\.json.*null_threshold"):
        read_answerability(tmp_path)


def scripted(start: str, end: str, **logits: float) -> QuestionAnswerer:
    tokenizer = load_tokenizer("minilm")
    ids = tokenizer(start, add_special_tokens=False)["input_ids"]
    end_ids = tokenizer(end, add_special_tokens=False)["input_ids"]
    return QuestionAnswerer(TokenModel(ids[:1], end_ids[-1:], **logits), tokenizer, batch_size=2)


def test_top_k_merges_a_span_reached_from_overlapping_windows() -> None:
    qa = scripted("gustave", "eiffel")
    context = FILLER * 3 + "It was designed by Gustave Eiffel himself. " + FILLER * 3
    answers = qa.answer(QUESTION, context, top_k=10, max_length=64, doc_stride=32)
    windows = len(
        qa.tokenizer(
            QUESTION,
            context,
            max_length=64,
            stride=32,
            truncation="only_second",
            return_overflowing_tokens=True,
        )["input_ids"]
    )
    assert windows >= 3
    spans = [(a["start"], a["end"]) for a in answers]
    assert len(spans) == len(set(spans)) == 10
    assert answers[0]["answer"] == "Gustave Eiffel"


def test_top_k_larger_than_the_distinct_candidates() -> None:
    qa = scripted("paris", "paris")
    context = "Paris is big."
    answers = qa.answer("Where?", context, top_k=20)
    spans = {(a["start"], a["end"]) for a in answers}
    assert len(spans) == len(answers)
    tokens = len(qa.tokenizer(context, add_special_tokens=False)["input_ids"])
    # Every span of the context's tokens, each once (character spans of 4 tokens: 10).
    assert len(answers) == tokens * (tokens + 1) // 2


def test_several_documents() -> None:
    qa = scripted("lovelace", "lovelace")
    contexts = [
        CONTEXT,
        "The first program was written by Ada Lovelace in 1843.",
        "Photosynthesis converts light energy into chemical energy.",
    ]
    answers = qa.answer("Who wrote the first program?", contexts=contexts, top_k=3)
    assert answers[0]["document"] == 1
    assert answers[0]["answer"] == "Lovelace"
    for a in answers:
        assert contexts[a["document"]][a["start"] : a["end"]] == a["answer"]
    with pytest.raises(ValueError, match="either context or contexts"):
        qa.answer("Who?", CONTEXT, contexts=contexts)


def test_no_answer_in_any_document() -> None:
    qa = scripted("lovelace", "lovelace", cls=50.0)
    qa.answerability = Answerability("2.0", has_answer=None)
    contexts = [CONTEXT, "The first program was written by Ada Lovelace in 1843."]
    [best, *_] = qa.answer("Who wrote it?", contexts=contexts, top_k=2)
    assert best["answer"] == "" and best["document"] is None
    spans = qa.answer("Who wrote it?", contexts=contexts, handle_impossible_answer=False)
    assert spans[0]["answer"] == "Lovelace" and spans[0]["document"] == 1

"""The server with a model's shipped answerability: several documents per question
(``"contexts"``), the tuned no-answer rule applied by default, request errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")

from fastapi.testclient import TestClient

from helpers.scripted import TokenModel
from qa_lightning import QuestionAnswerer
from qa_lightning.hub import load_tokenizer
from qa_lightning.metrics.answerability import Answerability, write_answerability
from qa_lightning.serving.app import create_app
from qa_lightning.serving.requests import MAX_CONTEXTS

CONTEXTS = [
    "The Eiffel Tower was completed in 1889 in Paris.",
    "The first program was written by Ada Lovelace in 1843.",
]


def answerer(cls: float = 0.0, answerability: Answerability | None = None) -> QuestionAnswerer:
    tokenizer = load_tokenizer("minilm")
    ids = tokenizer("lovelace", add_special_tokens=False)["input_ids"]
    return QuestionAnswerer(
        TokenModel(ids[:1], ids[-1:], cls=cls), tokenizer, answerability=answerability
    )


def test_contexts_are_ranked_together() -> None:
    with TestClient(create_app(answerer())) as client:
        body = {"question": "Who wrote it?", "contexts": CONTEXTS, "top_k": 2}
        response = client.post("/answer", json=body)
        assert response.status_code == 200, response.text
        best = response.json()["answers"][0]
        assert best["document"] == 1 and best["answer"] == "Lovelace"
        assert CONTEXTS[1][best["start"] : best["end"]] == "Lovelace"
        # Mixed with single-context items in one list, each keeps its shape.
        mixed = client.post("/answer", json=[body, {"question": "Who?", "context": CONTEXTS[1]}])
        single = mixed.json()[1]["answers"][0]
        assert "document" not in single and single["answer"] == "Lovelace"


def test_no_answer_in_any_document_by_the_shipped_rule(tmp_path: Path) -> None:
    tuned = Answerability("2.0", null_threshold=0.0)
    write_answerability(tmp_path, tuned)
    qa = answerer(cls=50.0, answerability=tuned)
    with TestClient(create_app(qa)) as client:
        body = {"question": "Who wrote it?", "contexts": CONTEXTS}
        [best] = client.post("/answer", json=body).json()["answers"]
        assert best["answer"] == "" and best["document"] is None


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"question": "q", "context": "c", "contexts": ["c"]}, 422, "context"),
        ({"question": "q", "contexts": []}, 422, "contexts"),
        ({"question": "q", "contexts": "c"}, 422, "contexts"),
        ({"question": "q", "contexts": ["c", " "]}, 422, "contexts[1]"),
        ({"question": "q", "contexts": ["c"] * (MAX_CONTEXTS + 1)}, 413, "contexts"),
    ],
)
def test_bad_contexts(body: dict, status: int, field: str) -> None:
    with TestClient(create_app(answerer())) as client:
        response = client.post("/answer", json=body)
        assert response.status_code == status, response.text
        assert response.json()["field"] == field

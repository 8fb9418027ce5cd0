"""The HTTP server: request validation, dynamic batching, a live server and its web page."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from helpers.browser import chromium_browser  # noqa: E402
from helpers.serving import live_server  # noqa: E402
from qa_lightning.errors import DataFormatError  # noqa: E402
from qa_lightning.inference import QuestionAnswerer  # noqa: E402
from qa_lightning.serving.app import create_app  # noqa: E402
from qa_lightning.serving.batcher import DynamicBatcher  # noqa: E402
from qa_lightning.serving.requests import Item, Limits  # noqa: E402

CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to "
    "King Charles III of West Francia."
)
TEXTS = [
    CONTEXT,
    "In what country is Normandy located?",
    "Who was the leader of the Norse raiders?",
    "Beyoncé Giselle Knowles-Carter is an American singer, songwriter and actress born in 1981.",
    "Super Bowl 50 was an American football game to determine the champion of the NFL in 2015.",
]
LIMITS = Limits(max_context_chars=2_000, max_question_chars=200, max_items=4)


class CountingAnswerer:
    """Wraps a ``QuestionAnswerer`` and records the number of questions of each call."""

    def __init__(self, qa: QuestionAnswerer) -> None:
        self.qa = qa
        self.sizes: list[int] = []

    def __call__(self, questions: Sequence[str], contexts: Sequence[str], **kw: Any) -> Any:
        self.sizes.append(len(questions))
        return self.qa(questions, contexts, **kw)


@pytest.fixture(scope="module")
def spy(tiny_bert: Path) -> CountingAnswerer:
    return CountingAnswerer(QuestionAnswerer.from_pretrained(tiny_bert))


@pytest.fixture(scope="module")
def server(spy: CountingAnswerer) -> Iterator[str]:
    """A live server on a free loopback port, in a background thread; yields its base URL."""
    app = create_app(spy, model_name="tiny-bert", limits=LIMITS, max_wait_ms=30)
    with live_server(app) as (url, _):
        yield url


def post(url: str, body: Any) -> httpx.Response:
    return httpx.post(f"{url}/answer", json=body, timeout=30)


def check_answers(context: str, answers: list[dict[str, Any]], top_k: int) -> None:
    assert 1 <= len(answers) <= top_k
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True)
    for a in answers:
        assert set(a) == {"answer", "score", "start", "end"}
        assert context[a["start"] : a["end"]] == a["answer"]
        assert a["answer"].strip()


def test_single_request(server: str) -> None:
    response = post(server, {"question": "Where is Normandy?", "context": CONTEXT})
    assert response.status_code == 200, response.text
    check_answers(CONTEXT, response.json()["answers"], top_k=1)


def test_list_request_with_top_k(server: str) -> None:
    other = f"{TEXTS[3]} {TEXTS[4]}"
    body = [
        {"question": "Who was the leader?", "context": CONTEXT, "top_k": 3},
        {"question": "When was she born?", "context": other},
        {"question": "Who are the Normans?", "context": CONTEXT, "top_k": 5},
    ]
    response = post(server, body)
    assert response.status_code == 200, response.text
    results = response.json()
    assert len(results) == 3
    for item, result in zip(body, results, strict=True):
        check_answers(item["context"], result["answers"], top_k=item.get("top_k", 1))
    assert [len(r["answers"]) for r in results] == [3, 1, 5]


def test_offsets_count_code_points(server: str) -> None:
    context = "🙂 Émile Zola — born in Paris — wrote Germinal in 1885. " * 3
    response = post(server, {"question": "Who wrote Germinal?", "context": context, "top_k": 5})
    assert response.status_code == 200, response.text
    check_answers(context, response.json()["answers"], top_k=5)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"context": CONTEXT}, 422, "question"),
        ({"question": "Why?"}, 422, "context"),
        ({"question": "  ", "context": CONTEXT}, 422, "question"),
        ({"question": 3, "context": CONTEXT}, 422, "question"),
        ({"question": "Why?", "context": CONTEXT, "top_k": 0}, 422, "top_k"),
        ({"question": "Why?", "context": CONTEXT, "top_k": True}, 422, "top_k"),
        ({"question": "Why?", "context": CONTEXT, "topk": 2}, 422, "topk"),
        ({"question": "Why?", "context": "x" * 2_001}, 413, "context"),
        ({"question": "Why?" * 51, "context": CONTEXT}, 413, "question"),
        ([{"question": "Why?", "context": CONTEXT}] * 5, 413, "items"),
        ([], 422, "body"),
        ("just a string", 422, "body"),
    ],
)
def test_rejects_bad_requests(server: str, body: Any, status: int, field: str) -> None:
    response = post(server, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert field in error["detail"]


def test_error_names_the_item_of_a_list(server: str) -> None:
    body = [{"question": "Why?", "context": CONTEXT}, {"question": "Why?", "context": ""}]
    response = post(server, body)
    assert response.status_code == 422
    assert response.json() | {"detail": None} == {"detail": None, "field": "context", "index": 1}
    assert response.json()["detail"].startswith("items[1].context:")


def test_rejects_invalid_json(server: str) -> None:
    response = httpx.post(f"{server}/answer", content=b"{not json", timeout=30)
    assert response.status_code == 422
    assert response.json()["field"] == "body"


def test_health(server: str) -> None:
    health = httpx.get(f"{server}/health", timeout=30).json()
    assert health["status"] == "ok"
    assert health["model"] == "tiny-bert"
    assert health["limits"]["max_items"] == 4


def test_concurrent_requests_are_batched(server: str, spy: CountingAnswerer) -> None:
    spy.sizes.clear()
    questions = [f"Question number {i} about Normandy?" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(lambda q: post(server, {"question": q, "context": CONTEXT}), questions)
        )
    assert all(r.status_code == 200 for r in responses)
    for r in responses:
        check_answers(CONTEXT, r.json()["answers"], top_k=1)
    assert sum(spy.sizes) == 16
    assert max(spy.sizes) > 1 and len(spy.sizes) < 16, spy.sizes


def fake_answer(questions: Sequence[str], contexts: Sequence[str], top_k: int = 1) -> list:
    if "boom" in questions:
        raise DataFormatError("too long", qid=str(questions.index("boom")), field="question")
    if "crash" in questions:
        raise RuntimeError("out of memory")
    return [[{"answer": q, "score": 1.0, "start": 0, "end": 0}] * top_k for q in questions]


@pytest.mark.parametrize(("max_batch_size", "expected"), [(4, [4, 4, 2]), (1, [1] * 10)])
def test_batcher_sizes(max_batch_size: int, expected: list[int]) -> None:
    sizes: list[int] = []

    def answer(questions: Sequence[str], contexts: Sequence[str], top_k: int = 1) -> list:
        sizes.append(len(questions))
        return fake_answer(questions, contexts, top_k)

    async def scenario() -> list:
        batcher = DynamicBatcher(answer, max_batch_size=max_batch_size, max_wait_ms=20)
        await batcher.start()
        try:
            items = [Item(f"q{i}", "c", top_k=1 + i % 3) for i in range(10)]
            return await asyncio.gather(*(batcher.submit([item]) for item in items))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert sizes == expected
    assert [r[0][0]["answer"] for r in results] == [f"q{i}" for i in range(10)]
    assert [len(r[0]) for r in results] == [1 + i % 3 for i in range(10)]


def test_batcher_isolates_a_failing_item() -> None:
    async def scenario() -> list:
        batcher = DynamicBatcher(fake_answer, max_batch_size=8, max_wait_ms=20)
        await batcher.start()
        try:
            items = [Item("a", "c"), Item("boom", "c"), Item("b", "c")]
            return await asyncio.gather(*(batcher.submit([item]) for item in items))
        finally:
            await batcher.stop()

    (ok_a,), (failed,), (ok_b,) = asyncio.run(scenario())
    assert ok_a[0]["answer"] == "a" and ok_b[0]["answer"] == "b"
    assert isinstance(failed, DataFormatError)


@pytest.mark.parametrize(
    ("question", "status", "field"), [("boom", 422, "question"), ("crash", 500, "model")]
)
def test_model_side_errors(question: str, status: int, field: str) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(fake_answer)) as client:
        body = [{"question": "fine", "context": "c"}, {"question": question, "context": "c"}]
        response = client.post("/answer", json=body)
        assert response.status_code == status, response.text
        assert response.json() | {"detail": None} == {"detail": None, "field": field, "index": 1}
        assert "question id" not in response.json()["detail"]
        assert client.post("/answer", json=body[0]).status_code == 200


def test_web_page_highlights_the_answer(server: str, tmp_path: Path) -> None:
    question = "Who was the leader of the Norse raiders?"
    with chromium_browser() as browser:
        expected = post(server, {"question": question, "context": CONTEXT, "top_k": 3}).json()
        best = expected["answers"][0]
        page = browser.new_page()
        page.goto(f"{server}/")
        page.fill("#context", CONTEXT)
        page.fill("#question", question)
        page.click("#submit")
        mark = page.wait_for_selector("#highlighted mark", timeout=20_000)
        assert mark.text_content() == best["answer"]
        assert page.text_content("#highlighted") == CONTEXT
        assert f"{best['score']:.3f}" in page.text_content("#answer")
        page.screenshot(path=str(tmp_path / "serve_web_page.png"), full_page=True)
    assert (tmp_path / "serve_web_page.png").stat().st_size > 0

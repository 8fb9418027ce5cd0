"""Property-based fuzz of ``POST /answer``: any JSON body gives 2xx or 4xx, never a 5xx.

Arbitrary JSON shapes, types and sizes, field names near and far from the real ones, and
Unicode from many scripts, sent to the app around a real (tiny random) BERT model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_lightning.inference import QuestionAnswerer
from qa_lightning.serving.app import create_app
from qa_lightning.serving.requests import Limits

LIMITS = Limits(max_context_chars=600, max_question_chars=80, max_items=4, max_body_bytes=20_000)
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(" \t\n\u200b\u0301é漢字😀"),
    max_size=120,
)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | TEXT
)
KEYS = st.sampled_from(["question", "context", "top_k", "contexts", "Question", ""]) | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)
ITEM = st.fixed_dictionaries(
    {"question": TEXT, "context": st.text(max_size=700) | TEXT},
    optional={"top_k": SCALARS},
)
BODIES = ITEM | st.lists(ITEM, min_size=0, max_size=6) | JSON


@pytest.fixture(scope="module")
def client(tiny_bert: Path) -> Iterator[TestClient]:
    qa = QuestionAnswerer.from_pretrained(tiny_bert)
    with TestClient(create_app(qa, limits=LIMITS, max_wait_ms=0)) as test_client:
        yield test_client


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(body=BODIES)
def test_any_json_body_gets_2xx_or_4xx(client: TestClient, body) -> None:
    response = client.post(
        "/answer", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert 200 <= response.status_code < 500, (response.status_code, response.text[:300])
    payload = response.json()
    if response.status_code == 200:
        answers = payload if isinstance(body, list) else [payload]
        assert all(set(a) == {"answers"} for a in answers)
    else:
        assert isinstance(payload["detail"], str) and payload["detail"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_get_4xx_or_2xx(client: TestClient, raw: bytes) -> None:
    response = client.post("/answer", content=raw)
    assert 200 <= response.status_code < 500, (response.status_code, response.text[:300])

"""The server on a network: API keys, bounded admission (503/504/408), the drain, /metrics."""

from __future__ import annotations

import hmac
import signal
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from helpers.serving import live_server  # noqa: E402
from qa_lightning.cli.serve import main as serve_main  # noqa: E402
from qa_lightning.cli.serve import public_model_name  # noqa: E402
from qa_lightning.errors import QALightningError  # noqa: E402
from qa_lightning.serving import auth  # noqa: E402
from qa_lightning.serving.app import create_app  # noqa: E402
from qa_lightning.serving.auth import ApiKeys, check_bind, load_api_keys  # noqa: E402
from qa_lightning.serving.server import DrainingServer  # noqa: E402

BODY = {"question": "Who?", "context": "Rollo led them."}


class GatedAnswerer:
    """Answers "Rollo" once ``gate`` is open (or at once when it is ``None``); counts questions."""

    def __init__(self, gate: threading.Event | None = None, delay_s: float = 0.0) -> None:
        self.gate, self.delay_s = gate, delay_s
        self.questions: list[str] = []

    def __call__(self, questions: Sequence[str], contexts: Sequence[str], **kw: Any) -> Any:
        if self.gate is not None:
            assert self.gate.wait(30)
        time.sleep(self.delay_s)
        self.questions.extend(questions)
        return [[{"answer": "Rollo", "score": 1.0, "start": 0, "end": 5}] for _ in questions]


def post(url: str, body: Any = BODY, key: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(f"{url}/answer", json=body, headers=headers, timeout=30, **kw)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_api_key_is_required_on_answer_and_metrics_not_on_health() -> None:
    app = create_app(GatedAnswerer(), model_name="tiny", api_keys=ApiKeys(["first", "second"]))
    with live_server(app) as (url, _):
        missing = post(url)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert post(url, key="wrong").status_code == 401
        assert post(url, key="firs").status_code == 401
        assert (
            httpx.post(f"{url}/answer", json=BODY, headers={"Authorization": "second"}).status_code
            == 401
        )
        assert post(url, key="second").json()["answers"][0]["answer"] == "Rollo"
        assert post(url, key="first").status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert (
            httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer first"}).status_code
            == 200
        )
        health = httpx.get(f"{url}/health")
        assert health.status_code == 200 and health.json()["auth"] is True
        assert httpx.get(url).status_code == 200  # the page itself; its API calls send the key


def test_every_key_is_compared_with_compare_digest(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = ApiKeys(["alpha", "beta", "gamma"])
    assert keys.check("Bearer alpha")  # matches the first key: the others are still compared
    assert len(calls) == 3
    calls.clear()
    assert not keys.check("Bearer nope")
    assert [b for _, b in calls] == [b"alpha", b"beta", b"gamma"]
    assert not keys.check("Basic alpha") and not keys.check(None) and not keys.check("Bearer ")
    assert "alpha" not in repr(keys)


def test_keys_from_file_or_environment(tmp_path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# comment\n\nfrom-file\nsecond\n")
    assert load_api_keys(key_file, {"QA_LIGHTNING_API_KEY": "ignored"}).check("Bearer second")
    assert load_api_keys(None, {"QA_LIGHTNING_API_KEY": "a,b"}).check("Bearer b")
    assert not load_api_keys(None, {})
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(QALightningError, match="holds no key"):
        load_api_keys(tmp_path / "empty")
    with pytest.raises(QALightningError, match="cannot read"):
        load_api_keys(tmp_path / "absent")


def test_refuses_a_network_address_without_a_key(monkeypatch, capsys) -> None:
    monkeypatch.delenv("QA_LIGHTNING_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="--insecure"):
        serve_main(["model-never-loaded", "--host", "0.0.0.0"])
    with pytest.raises(SystemExit):  # no way to give a key on the command line
        serve_main(["model-never-loaded", "--api-key", "secret"])
    assert "unrecognized arguments" in capsys.readouterr().err
    check_bind("0.0.0.0", ApiKeys(), insecure=True)
    check_bind("0.0.0.0", ApiKeys(["k"]), insecure=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, ApiKeys(), insecure=False)
    with pytest.raises(QALightningError):
        check_bind("192.168.1.4", ApiKeys(), insecure=False)


def test_model_name_is_never_a_path(tiny_bert) -> None:
    assert public_model_name("bert-base-uncased", None) == "bert-base-uncased"
    name = public_model_name(tiny_bert, None)
    assert name and str(tiny_bert) not in name and "/" not in name.strip("/")
    assert public_model_name(tiny_bert, {"_name_or_path": "org/model"}) == "org/model"
    assert (
        public_model_name(tiny_bert, {"_name_or_path": str(tiny_bert), "model_type": "bert"})
        == "bert"
    )


def test_full_queue_gets_503_at_once_and_admitted_requests_all_complete() -> None:
    gate = threading.Event()
    answerer = GatedAnswerer(gate)
    app = create_app(answerer, max_batch_size=1, max_wait_ms=0, max_queue=2)
    with live_server(app) as (url, _), ThreadPoolExecutor(4) as pool:
        running = pool.submit(post, url, {"question": "q0", "context": "c"})
        wait_until(lambda: app.state.batcher.waiting == 0 and app.state.server.in_flight == 1)
        queued = [pool.submit(post, url, {"question": f"q{i}", "context": "c"}) for i in (1, 2)]
        wait_until(lambda: app.state.batcher.waiting == 2)
        began = time.perf_counter()
        refused = post(url, {"question": "q3", "context": "c"})
        assert time.perf_counter() - began < 2.0
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["field"] == "queue"
        gate.set()
        assert [f.result().status_code for f in [running, *queued]] == [200, 200, 200]
    assert sorted(answerer.questions) == ["q0", "q1", "q2"]  # each admitted one answered once


def test_past_the_deadline_504_and_its_work_is_dropped() -> None:
    gate = threading.Event()
    answerer = GatedAnswerer(gate)
    app = create_app(answerer, max_batch_size=1, max_wait_ms=0, timeout_s=0.5)
    with live_server(app) as (url, _), ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, {"question": "first", "context": "c"})
        wait_until(lambda: app.state.server.in_flight == 1 and app.state.batcher.waiting == 0)
        second = post(url, {"question": "second", "context": "c"})
        assert second.status_code == 504 and "0.5 s" in second.json()["detail"]
        gate.set()
        assert first.result().status_code == 504  # the model ran it, but too late
        wait_until(lambda: app.state.batcher.dropped == 1)
    assert answerer.questions == ["first"]  # "second" never reached the model


def test_sigterm_drains_in_flight_requests_then_stops() -> None:
    answerer = GatedAnswerer(delay_s=1.0)
    app = create_app(answerer, max_batch_size=1, max_wait_ms=0)
    state = app.state.server
    with live_server(app, DrainingServer, state=state, grace_s=20) as (url, srv):
        with ThreadPoolExecutor(2) as pool:
            in_flight = [
                pool.submit(post, url, {"question": f"q{i}", "context": "c"}) for i in (1, 2)
            ]
            wait_until(lambda: state.in_flight == 2)
            srv.handle_exit(signal.SIGTERM, None)  # what the signal handler runs
            assert post(url).status_code == 503
            health = httpx.get(f"{url}/health")
            assert health.status_code == 503 and health.json()["status"] == "draining"
            assert not srv.should_exit  # still answering the two in flight
            assert [f.result().json()["answers"][0]["answer"] for f in in_flight] == ["Rollo"] * 2
        wait_until(lambda: srv.should_exit)
        assert srv._captured_signals == []  # nothing re-raised: the process exits 0
    assert sorted(answerer.questions) == ["q1", "q2"]  # both answered; concurrent, so any order


def test_metrics_parse_with_prometheus_client() -> None:
    app = create_app(GatedAnswerer(), model_load_s=1.25, api_keys=ApiKeys(["k"]))
    with live_server(app) as (url, _):
        for _ in range(3):
            assert post(url, key="k").status_code == 200
        assert post(url, [BODY, BODY], key="k").status_code == 200
        assert post(url, {"question": 1}, key="k").status_code == 422
        assert post(url).status_code == 401
        text = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k"}).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["qa_requests"].samples
        if s.name == "qa_requests_total"
    }
    assert counts[("/answer", "200")] == 4
    assert counts[("/answer", "422")] == 1 and counts[("/answer", "401")] == 1
    latency = {
        s.name: s.value
        for s in families["qa_request_latency_seconds"].samples
        if s.labels.get("status") == "200" and "le" not in s.labels
    }
    assert latency["qa_request_latency_seconds_count"] == 4
    batch = {s.name: s.value for s in families["qa_batch_size"].samples if "le" not in s.labels}
    assert batch["qa_batch_size_sum"] == 5  # items answered
    assert families["qa_queue_depth"].samples[0].value == 0
    assert families["qa_model_load_seconds"].samples[0].value == 1.25


def test_a_slow_body_does_not_stall_others_and_times_out() -> None:
    app = create_app(GatedAnswerer(), timeout_s=1.5)
    with live_server(app) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(
                b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"question": '
            )
            for _ in range(5):  # others are answered while the slow body is pending
                began = time.perf_counter()
                assert post(url).status_code == 200
                assert time.perf_counter() - began < 1.0
            slow.settimeout(10)
            reply = slow.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408")

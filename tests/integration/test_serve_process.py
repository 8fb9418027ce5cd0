"""``qa-lightning-serve`` as a process: the key from a file stays out of its logs, /health shows
no path, and SIGTERM drains and exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="needs the serve extra")

KEY = "s3cret-key-7f1c9a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_key_never_logged_health_shows_no_path_and_sigterm_exits_0(tiny_bert, tmp_path):
    key_file = tmp_path / "api_keys"
    key_file.write_text(f"{KEY}\n")
    port = free_port()
    cmd = [sys.executable, "-m", "qa_lightning.cli.serve", str(tiny_bert), "--port", str(port)]
    cmd += ["--api-key-file", str(key_file), "--log-level", "debug", "--grace-s", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not start"
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.25)
        assert health.json()["model"] and str(tiny_bert) not in health.text
        assert str(tiny_bert) not in httpx.get(url).text
        body = {"question": "Who led them?", "context": "Rollo led the Normans. " * 80}
        headers = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(f"{url}/answer", json=body, timeout=30).status_code == 401
        wrong = {"Authorization": f"Bearer {KEY[:-1]}x"}
        assert httpx.post(f"{url}/answer", json=body, headers=wrong, timeout=30).status_code == 401
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                httpx.post, f"{url}/answer", json=[body] * 64, headers=headers, timeout=60
            )
            while httpx.get(f"{url}/health", timeout=5).json()["in_flight"] == 0:
                assert not in_flight.done(), "answered before the signal could be sent"
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            answered = in_flight.result()
        assert answered.status_code == 200 and len(answered.json()) == 64
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output[-3000:]
    assert "draining" in output
    assert KEY not in output and KEY[:-1] not in output

"""Load test of ``qa-lightning-serve``: ``python bench/serve_load.py [--seconds 10] [--threads 2]``.

Starts two servers on loopback (packaged MiniLM, fresh QA head) in subprocesses, one with dynamic
batching and one with ``--no-batching``, and drives them in turn with 1, 8 and 32 closed-loop
clients (``httpx`` async), each level for ``--seconds`` or ``--max-requests``, whichever ends
first; the modes alternate level by level, so changes in the machine's load hit both alike.
Questions are short SQuAD v1.1 dev paragraphs (the bundled sample when the shared data is
absent). Reports requests per second, p50/p99 latency and the mean batch size the server ran;
``speedup`` is batched / unbatched requests per second at 32 clients. Clients and servers share
this machine's cores: compare the two modes, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
from _common import emit, log, rounded, shared_data_dir

from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.paths import SAMPLE_DATA_FILE, minilm_dir

CLIENTS = (1, 8, 32)
MODES = ("batched", "unbatched")
DRAIN_S = 20.0


def questions(limit: int = 512, max_context_chars: int = 700) -> list[dict[str, str]]:
    """Question/context pairs with short contexts, in file order."""
    path = shared_data_dir() / "squad" / "dev-v1.1.json.gz"
    if not path.is_file():
        log(f"{path} not found; using the bundled sample")
        path = SAMPLE_DATA_FILE
    records = read_squad_file(path).records
    pairs = [
        {"question": r["question"], "context": r["context"]}
        for r in records
        if len(r["context"]) <= max_context_chars
    ]
    return pairs[:limit]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(port: int, batching: bool, threads: int) -> subprocess.Popen:
    """The server in a subprocess (``wait_ready`` waits for it)."""
    cmd = [sys.executable, "-m", "qa_lightning.cli.serve", str(minilm_dir()), "--port", str(port)]
    cmd += ["--threads", str(threads)]
    cmd += ["--log-level", "warning"] + ([] if batching else ["--no-batching"])
    return subprocess.Popen(cmd)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    """Return once ``/health`` answers; exit if the server dies or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    sys.exit(f"server at {url} did not answer /health within {timeout} s")


async def load(
    url: str, pairs: list[dict[str, str]], clients: int, seconds: float, max_requests: int
) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``seconds`` or ``max_requests`` requests in all.

    Requests still running ``DRAIN_S`` after the window are cancelled and counted as errors.
    """
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                body = pairs[sent % len(pairs)]
                sent += 1
                began = time.perf_counter()
                try:
                    response = await client.post("/answer", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1

        tasks = [asyncio.create_task(worker()) for _ in range(clients)]
        _, late = await asyncio.wait(tasks, timeout=seconds + DRAIN_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "requests": len(latencies),
        "errors": errors + len(late),
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def measure(url: str, pairs: list[dict[str, str]], clients: int, args: argparse.Namespace) -> dict:
    """One load level against one server, with the mean batch size the server ran meanwhile."""
    before = httpx.get(f"{url}/health", timeout=10).json()
    level = asyncio.run(load(url, pairs, clients, args.seconds, args.max_requests))
    after = httpx.get(f"{url}/health", timeout=10).json()
    batches = after["batches"] - before["batches"]
    level["mean_batch_size"] = (after["items"] - before["items"]) / max(batches, 1)
    return level


def run(pairs: list[dict[str, str]], args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """Both servers up at once; levels alternate between them, so load drift hits both alike."""
    urls: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    try:
        for mode in MODES:
            port = free_port()
            procs.append(launch(port, batching=mode == "batched", threads=args.threads))
            urls[mode] = f"http://127.0.0.1:{port}"
        for proc, url in zip(procs, urls.values(), strict=True):
            wait_ready(proc, url)
        for url in urls.values():
            asyncio.run(load(url, pairs, 4, 2.0, 40))  # warm-up
        results: dict[str, dict[str, dict]] = {mode: {} for mode in MODES}
        for clients in CLIENTS:
            for mode in MODES:
                results[mode][str(clients)] = level = measure(urls[mode], pairs, clients, args)
                log(f"{mode} clients={clients}: {rounded(level, 1)}")
        return results
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and mode")
    parser.add_argument("--max-requests", type=int, default=3000, help="per concurrency level")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    args = parser.parse_args()
    pairs = questions()
    log(f"{len(pairs)} question/context pairs; levels {CLIENTS} x {args.seconds} s")
    results = run(pairs, args)
    batched, unbatched = results["batched"], results["unbatched"]
    emit(
        {
            "bench": "serve_load",
            "model": "all-MiniLM-L6-v2 (fresh QA head)",
            "seconds_per_level": args.seconds,
            "server_threads": args.threads,
            "mean_context_chars": sum(len(p["context"]) for p in pairs) / len(pairs),
            "batched": batched,
            "unbatched": unbatched,
            "speedup_by_clients": {
                c: batched[c]["rps"] / max(unbatched[c]["rps"], 1e-9) for c in batched
            },
            "speedup": batched["32"]["rps"] / max(unbatched["32"]["rps"], 1e-9),
        }
    )


if __name__ == "__main__":
    main()

"""Load test of ``qa-lightning-serve``: ``python bench/serve_load.py [--seconds 10] [--threads 2]``.

Starts two servers on loopback (packaged MiniLM, fresh QA head) in subprocesses, one with dynamic
batching and one with ``--no-batching``, and drives them in turn with 1, 8 and 32 closed-loop
clients (``httpx`` async), each level for ``--seconds`` or ``--max-requests``, whichever ends
first; the modes alternate level by level, so changes in the machine's load hit both alike.
Questions are short SQuAD v1.1 dev paragraphs (the bundled sample when the shared data is
absent). Reports requests per second, p50/p99 latency and the mean batch size the server ran;
``speedup`` is batched / unbatched requests per second at 32 clients. Clients and servers share
this machine's cores: compare the two modes, not absolute figures.

``--overload`` runs the admission test instead, against one batched server with a bounded queue
(``--max-queue``): it measures the capacity (closed loop, min(32, max-queue) clients), the latency at half of it
(open loop: the unloaded p99), then offers 4x the capacity (open loop) and reports the admitted
requests' p99 against 2x the unloaded one, the share refused with 503, and the accounting: every
request sent got exactly one response, and every admitted item was run once or dropped once
(the server's ``/health`` counters), none lost and none answered twice.
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


def launch(port: int, batching: bool, threads: int, *extra: str) -> subprocess.Popen:
    """The server in a subprocess (``wait_ready`` waits for it)."""
    cmd = [sys.executable, "-m", "qa_lightning.cli.serve", str(minilm_dir()), "--port", str(port)]
    cmd += ["--threads", str(threads), *extra]
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


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


async def open_loop(
    url: str, pairs: list[dict[str, str]], rate: float, seconds: float, max_requests: int
) -> dict[str, Any]:
    """Requests sent at ``rate`` per second whatever the answers (open loop), each one counted.

    Every request ends in exactly one recorded outcome: a status code, or "transport" (no
    answer: lost). ``responses`` counts the outcomes per request, so none is counted twice.
    """
    outcomes: dict[int, list[Any]] = {}
    latencies: dict[int, list[float]] = {}
    total = min(max_requests, int(rate * seconds))
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=DRAIN_S + 40) as client:

        async def one(i: int) -> None:
            began = time.perf_counter()
            try:
                status: Any = (await client.post("/answer", json=pairs[i % len(pairs)])).status_code
            except httpx.HTTPError as err:
                status = f"transport:{type(err).__name__}"
            outcomes.setdefault(i, []).append(status)
            latencies.setdefault(status, []).append(time.perf_counter() - began)

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        offered_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
    statuses: dict[str, int] = {}
    for results in outcomes.values():
        for status in results:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = latencies.get(200, [])
    return {
        "sent": total,
        "offered_rps": total / offered_s,
        "statuses": statuses,
        "answered_once": sum(len(r) == 1 for r in outcomes.values()),
        "lost": total - len(outcomes) + sum(str(s).startswith("transport") for s in statuses),
        "p50_ms": percentile(ok, 0.50),
        "p99_ms": percentile(ok, 0.99),
        "refused_p99_ms": percentile(latencies.get(503, []), 0.99),
    }


def overload(pairs: list[dict[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """Capacity, the p99 at half of it, then 4x the capacity against the bounded queue."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--max-queue", str(args.max_queue), "--timeout-s", str(args.timeout_s)]
    proc = launch(port, True, args.threads, *extra)
    try:
        wait_ready(proc, url)
        asyncio.run(load(url, pairs, 4, 2.0, 40))  # warm-up
        clients = min(32, args.max_queue)  # more would be refused (503) and not measure capacity
        capacity = asyncio.run(load(url, pairs, clients, args.seconds, args.max_requests))
        log(f"capacity (closed loop, {clients} clients): {rounded(capacity, 1)}")
        rps = capacity["rps"]
        unloaded = asyncio.run(open_loop(url, pairs, rps / 2, args.seconds, args.max_requests))
        log(f"unloaded (0.5x capacity): {rounded(unloaded, 1)}")
        before = httpx.get(f"{url}/health", timeout=10).json()
        loaded = asyncio.run(open_loop(url, pairs, 4 * rps, args.seconds, 4 * args.max_requests))
        time.sleep(1.0)  # late items settle (run or dropped) before the counters are read
        after = httpx.get(f"{url}/health", timeout=10).json()
        log(f"overload (4x capacity): {rounded(loaded, 1)}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    statuses = loaded["statuses"]
    admitted = statuses.get("200", 0) + statuses.get("504", 0)
    ran = after["items"] - before["items"]
    dropped = after["dropped"] - before["dropped"]
    p99_limit = 2 * (unloaded["p99_ms"] or float("nan"))
    return {
        "capacity_rps": rps,
        "max_queue": args.max_queue,
        "timeout_s": args.timeout_s,
        "unloaded": unloaded,
        "overload": loaded,
        "admitted": admitted,
        "server_items_run": ran,
        "server_items_dropped": dropped,
        "checks": {
            "p99_within_2x_unloaded": (loaded["p99_ms"] or float("inf")) <= p99_limit,
            "rest_got_503": statuses.get("503", 0) + admitted == loaded["sent"],
            "none_lost": loaded["lost"] == 0 and loaded["answered_once"] == loaded["sent"],
            "each_admitted_run_or_dropped_once": ran + dropped == admitted,
        },
        "server_exit_code": proc.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and mode")
    parser.add_argument("--max-requests", type=int, default=3000, help="per concurrency level")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    parser.add_argument("--overload", action="store_true", help="the admission test instead")
    parser.add_argument("--max-queue", type=int, default=32, help="server queue, --overload")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="server deadline, --overload")
    args = parser.parse_args()
    pairs = questions()
    if args.overload:
        result = overload(pairs, args)
        emit({"bench": "serve_overload", "model": "all-MiniLM-L6-v2 (fresh QA head)", **result})
        return
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

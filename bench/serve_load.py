"""Load test of ``qa-lightning-serve``: ``python bench/serve_load.py [--seconds 10] [--threads 2]``.

Starts two servers on loopback (packaged MiniLM, fresh QA head) in subprocesses, one with dynamic
batching and one with ``--no-batching``, and drives them in turn with 1, 8 and 32 closed-loop
clients (``httpx`` async), each level for ``--seconds`` or ``--max-requests``, whichever ends
first; the modes alternate level by level, so changes in the machine's load hit both alike.
Questions are short SQuAD v1.1 dev paragraphs (the bundled sample when the shared data is
absent). Reports requests per second, p50/p99 latency and the mean batch size the server ran;
``speedup`` is batched / unbatched requests per second at 32 clients. Clients and servers share
this machine's cores: compare the two modes, not absolute figures.

``--overload`` runs the admission test instead. A batched server with a bounded queue
(``--max-queue``) gives the capacity (closed loop, min(32, max-queue) clients) and the latency at
half of it (open loop: the unloaded p99); then it is offered 4x the capacity (open loop) with the
queue as its only bound, the baseline. A second server, started with ``--latency-target-ms`` set
to the unloaded p99 (or ``--latency-target-ms``), is offered the same 4x. For it the checks: the
admitted requests' p99 within 2x the unloaded one, the rest refused with 503, and the
accounting: every request sent got exactly one response, every admitted item was run once or
dropped once (the server's ``/health`` counters). The client is ``bench/_http_client.py`` (a
fraction of ``httpx``'s CPU per request: it shares the cores with the server), and each server
gets ``--threads`` torch threads, by default one less than the cores, so the client keeps one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
from _common import emit, log, rounded, shared_data_dir
from _http_client import HttpError, JsonPoster

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


Post = Callable[[dict[str, str]], Awaitable[int]]


class TransportError(Exception):
    """No HTTP response (connection refused, reset, closed, timed out)."""


@contextlib.asynccontextmanager
async def poster(url: str, kind: str, timeout: float = 60) -> AsyncIterator[Post]:
    """``post(body) -> status`` of ``POST /answer`` over ``httpx`` or ``raw``
    (``bench/_http_client.py``); ``TransportError`` when no response came."""
    if kind == "httpx":
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

            async def post_httpx(body: dict[str, str]) -> int:
                try:
                    return (await client.post("/answer", json=body)).status_code
                except httpx.HTTPError as err:
                    raise TransportError(type(err).__name__) from err

            yield post_httpx
        return
    host, port = url.removeprefix("http://").rsplit(":", 1)
    raw = JsonPoster(host, int(port), timeout)
    try:

        async def post_raw(body: dict[str, str]) -> int:
            try:
                return (await raw.post("/answer", body))[0]
            except HttpError as err:
                raise TransportError(str(err)) from err

        post_raw.client = raw  # type: ignore[attr-defined]  # its counters, for the report
        yield post_raw
    finally:
        await raw.close()


async def load(
    url: str,
    pairs: list[dict[str, str]],
    clients: int,
    seconds: float,
    max_requests: int,
    client_kind: str = "httpx",
) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``seconds`` or ``max_requests`` requests in all.

    Requests still running ``DRAIN_S`` after the window are cancelled and counted as errors.
    """
    latencies: list[float] = []
    errors = 0
    sent = 0
    async with poster(url, client_kind) as post:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                body = pairs[sent % len(pairs)]
                sent += 1
                began = time.perf_counter()
                try:
                    ok = await post(body) == 200
                except TransportError:
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


def cpu_s() -> float:
    """CPU seconds of this process so far (the client's cost)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def open_loop(
    url: str,
    pairs: list[dict[str, str]],
    rate: float,
    seconds: float,
    max_requests: int,
    client_kind: str = "raw",
) -> dict[str, Any]:
    """Requests sent at ``rate`` per second whatever the answers (open loop), each one counted.

    Every request ends in exactly one recorded outcome: a status code, or "transport" (no
    answer: lost). ``responses`` counts the outcomes per request, so none is counted twice.
    ``send_lag_p99_ms``: how late the client sent its requests (its own CPU starved);
    ``client_cpu_ms_per_request``: what the client cost.
    """
    outcomes: dict[int, list[Any]] = {}
    latencies: dict[Any, list[float]] = {}
    lags: list[float] = []
    total = min(max_requests, int(rate * seconds))
    cpu_before = cpu_s()
    async with poster(url, client_kind, timeout=DRAIN_S + 40) as post:

        async def one(i: int, planned: float) -> None:
            began = time.perf_counter()
            lags.append(began - planned)
            try:
                status: Any = await post(pairs[i % len(pairs)])
            except TransportError as err:
                status = f"transport:{err}"
            outcomes.setdefault(i, []).append(status)
            latencies.setdefault(status, []).append(time.perf_counter() - began)

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            planned = start + i / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, planned)))
        offered_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        client = getattr(post, "client", None)
        stale_retries = None if client is None else client.stale_retries
    client_cpu = cpu_s() - cpu_before
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
        "send_lag_p99_ms": percentile(lags, 0.99),
        "client_cpu_ms_per_request": 1000 * client_cpu / max(total, 1),
        "client_stale_retries": stale_retries,
    }


@contextlib.contextmanager
def served(threads: int, pairs: list[dict[str, str]], *extra: str) -> Iterator[str]:
    """A batched server with ``extra`` options, warmed up on ``pairs``; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = launch(port, True, threads, *extra)
    try:
        wait_ready(proc, url)
        asyncio.run(load(url, pairs, 4, 2.0, 40, "raw"))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, None):
            log(f"server exited with code {proc.returncode}")


def offered(url: str, pairs: list[dict[str, str]], rate: float, args: argparse.Namespace) -> dict:
    """4x the capacity offered to the server at ``url``, with its counters before and after."""
    before = httpx.get(f"{url}/health", timeout=10).json()
    loaded = asyncio.run(open_loop(url, pairs, rate, args.seconds, 4 * args.max_requests))
    time.sleep(1.0)  # late items settle (run or dropped) before the counters are read
    after = httpx.get(f"{url}/health", timeout=10).json()
    statuses = loaded["statuses"]
    admitted = statuses.get("200", 0) + statuses.get("504", 0)
    batches = after["batches"] - before["batches"]
    loaded.update(
        admitted=admitted,
        server_items_run=after["items"] - before["items"],
        server_items_dropped=after["dropped"] - before["dropped"],
        server_refused_late=after["refused_late"] - before["refused_late"],
        mean_batch_size=(after["items"] - before["items"]) / max(batches, 1),
        service_time=after["service_time"],
    )
    return loaded


def overload(pairs: list[dict[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """Capacity and the p99 at half of it; 4x the capacity against the item bound alone, then
    against a server that also has the latency target."""
    common = ["--max-queue", str(args.max_queue), "--timeout-s", str(args.timeout_s)]
    with served(args.threads, pairs, *common) as url:
        clients = min(32, args.max_queue)  # more would be refused (503) and not measure capacity
        capacity = asyncio.run(load(url, pairs, clients, args.seconds, args.max_requests, "raw"))
        log(f"capacity (closed loop, {clients} clients): {rounded(capacity, 1)}")
        rps = capacity["rps"]
        unloaded = asyncio.run(open_loop(url, pairs, rps / 2, args.seconds, args.max_requests))
        log(f"unloaded (0.5x capacity): {rounded(unloaded, 1)}")
        queue_only = offered(url, pairs, 4 * rps, args)
        log(f"overload, queue bound only: {rounded(queue_only, 1)}")
    target = args.latency_target_ms or math.ceil(unloaded["p99_ms"] or 1000)
    with served(args.threads, pairs, *common, "--latency-target-ms", str(target)) as url:
        loaded = offered(url, pairs, 4 * rps, args)
        log(f"overload, latency target {target} ms: {rounded(loaded, 1)}")
    statuses = loaded["statuses"]
    p99_limit = 2 * (unloaded["p99_ms"] or float("nan"))
    return {
        "server_threads": args.threads,
        "cores": os.cpu_count(),
        "client": "bench/_http_client.py (asyncio streams, keep-alive)",
        "capacity_rps": rps,
        "capacity_p50_ms": capacity["p50_ms"],
        "max_queue": args.max_queue,
        "timeout_s": args.timeout_s,
        "unloaded": unloaded,
        "latency_target_ms": target,
        "latency_target_from": "--latency-target-ms" if args.latency_target_ms else "unloaded p99",
        "overload_queue_only": queue_only,
        "overload": loaded,
        "admitted_p99_ratio_queue_only_vs_target": (queue_only["p99_ms"] or float("nan"))
        / (loaded["p99_ms"] or float("nan")),
        "checks": {
            "p99_within_2x_unloaded": (loaded["p99_ms"] or float("inf")) <= p99_limit,
            "rest_got_503": statuses.get("503", 0) + loaded["admitted"] == loaded["sent"],
            "none_lost": loaded["lost"] == 0 and loaded["answered_once"] == loaded["sent"],
            "each_admitted_run_or_dropped_once": loaded["server_items_run"]
            + loaded["server_items_dropped"]
            == loaded["admitted"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and mode")
    parser.add_argument("--max-requests", type=int, default=3000, help="per concurrency level")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of each server (default: 2; with --overload, cores - 1)",
    )
    parser.add_argument("--overload", action="store_true", help="the admission test instead")
    parser.add_argument("--max-queue", type=int, default=32, help="server queue, --overload")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="server deadline, --overload")
    parser.add_argument(
        "--latency-target-ms",
        type=float,
        default=None,
        help="--overload: the second server's target (default: the measured unloaded p99)",
    )
    args = parser.parse_args()
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 2) - 1) if args.overload else 2
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

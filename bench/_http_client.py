"""A minimal HTTP/1.1 client on asyncio streams, for load generation on the server's own cores.

``httpx`` costs a few ms of CPU per request; at hundreds of requests per second on a 2-core
machine, the load generator then takes the CPU the server under test needs. This client only
POSTs JSON over keep-alive connections and reads the status, headers and body: a fraction of
that cost. Not a general client: no TLS, no redirects, no chunked request bodies.

A pooled connection may have been closed by the server while idle (uvicorn closes keep-alive
connections after 5 s). Such a connection is never reused once its close has been seen, and a
request whose reused connection closes before a single response byte arrives is sent once more
on a new connection: the server closed it idle, so it never read that request (as urllib3
retries a stale pooled connection). The server's own counters, not this client, are what the
load test checks for requests run twice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class HttpError(Exception):
    """No complete response: connection refused, reset or closed early, or a timeout."""


class JsonPoster:
    """POSTs JSON to ``host:port`` over a pool of keep-alive connections (one per request in
    flight; ``await close()`` at the end)."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: set[asyncio.StreamWriter] = set()
        self.stale_retries = 0  # requests sent again after a reused connection closed unanswered

    async def post(self, path: str, body: Any) -> tuple[int, bytes]:
        """Status code and body of ``POST path`` with ``body`` as JSON; ``HttpError`` if none."""
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        try:
            return await asyncio.wait_for(self._exchange(head + payload), self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as err:
            raise HttpError(f"{type(err).__name__}: {err}") from err

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        reused = self._reusable()
        reader, writer = reused or await self._connect()
        try:
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as err:
                if reused is None or getattr(err, "partial", b""):
                    raise
                self._discard(writer)  # closed while idle, before any answer: once more, fresh
                self.stale_retries += 1
                reader, writer = await self._connect()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            )
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            self._discard(writer)
            raise
        if headers.get("connection", "").lower() == "close":
            self._discard(writer)
        else:
            self._idle.append((reader, writer))
        return status, body

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection whose close has not been seen, or ``None``."""
        while self._idle:
            reader, writer = self._idle.pop()
            if not (reader.at_eof() or writer.is_closing()):
                return reader, writer
            self._discard(writer)
        return None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._all.add(writer)
        return reader, writer

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self._all.discard(writer)
        writer.close()

    async def close(self) -> None:
        for writer in list(self._all):
            self._discard(writer)
        self._idle.clear()

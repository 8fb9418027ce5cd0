"""A live server in a background thread, for tests of the HTTP app."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import uvicorn


@contextlib.contextmanager
def live_server(
    app, server_cls=uvicorn.Server, **server_kw
) -> Iterator[tuple[str, uvicorn.Server]]:
    """``app`` served on a free loopback port; yields its base URL and the uvicorn server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    srv = server_cls(config, **server_kw)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        threading.Event().wait(0.05)
    assert srv.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}", srv
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
        sock.close()

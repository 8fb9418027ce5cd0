"""``DrainingServer``: uvicorn that, on SIGTERM or SIGINT, drains before it stops.

The first signal makes the app refuse new ``/answer`` requests (503, ``/health`` says
``draining``) while the listening socket stays open; once the requests in flight have been
answered, or ``grace_s`` has passed, uvicorn shuts down as usual and the process exits 0.
A second SIGINT forces the exit.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

from qa_lightning.serving.app import ServerState

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose exit signals start a drain of ``state`` first."""

    def __init__(self, config: uvicorn.Config, state: ServerState, grace_s: float = 30.0) -> None:
        super().__init__(config)
        self.state = state
        self.grace_s = grace_s
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in ``_captured_signals``: uvicorn would re-raise it after the shutdown
        # and the process would die of the signal instead of exiting 0.
        if self.drain_deadline is not None:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        log.info(
            "signal %s: draining %d request(s) in flight for up to %g s",
            signal.Signals(sig).name,
            self.state.in_flight,
            self.grace_s,
        )
        self.state.begin_drain()
        self.drain_deadline = time.monotonic() + self.grace_s

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            if self.state.in_flight == 0:
                self.should_exit = True
            elif time.monotonic() >= self.drain_deadline:
                log.warning(
                    "grace period over: %d request(s) still in flight", self.state.in_flight
                )
                self.should_exit = True
        return await super().on_tick(counter)

"""Stop signals: SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT end a run between two guided
iterations. What is written stays; the batch in progress is abandoned (a rerun generates it again)."""
from __future__ import annotations

import signal
import threading
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """Raised at the next guided iteration after a stop signal."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """Turns SIGTERM/SIGINT into a flag that :meth:`check` raises as :class:`StopRequested`; a second SIGINT stops
    at once (KeyboardInterrupt). ``forward`` passes the signal on (e.g. to the DDP processes a launcher started)."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}
        self.forward: Callable[[int], None] | None = None

    def install(self, forward: Callable[[int], None] | None = None) -> None:
        if threading.current_thread() is not threading.main_thread() or self.previous:
            return
        self.signum, self.forward = None, forward
        self.previous = {s: signal.signal(s, self.handle) for s in SIGNALS}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def handle(self, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        first = self.signum is None
        self.signum = signum
        if first and self.forward is not None:
            self.forward(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)


STOP = StopSignals()  # signals are per process: one flag per process

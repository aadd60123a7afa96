"""Stop signals: SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT (Ctrl-C) end a run with one line
and exit status 128 + the signal's number, at any moment. Inside the guided loop the stop comes between two guided
iterations, so what is written stays whole (the batch in progress is abandoned: a rerun generates it again); before
and after it, at once."""
from __future__ import annotations

import signal
import threading
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)
NOTHING_YET = "before the run started; nothing was written"  # what a stop before the run folder opened has done


class StopRequested(BaseException):
    """A stop signal, raised where the run can stop (a ``BaseException``, as ``KeyboardInterrupt``: no library's
    ``except Exception`` holds it up)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """Turns SIGTERM/SIGINT into :class:`StopRequested`: at once, or while ``deferred`` (the guided loop runs) at the
    next :meth:`check`; a second SIGINT raises at once there too. Once raised, further signals are ignored until
    :meth:`restore`: the stop is on its way, and its line comes however often Ctrl-C is pressed. ``forward`` passes
    the first signal on (e.g. to the DDP processes a launcher started)."""

    def __init__(self):
        self.signum: int | None = None
        self.raised = self.deferred = False
        self.previous: dict[int, object] = {}
        self.forward: Callable[[int], None] | None = None

    def install(self) -> bool:
        """Take the signals over (in the main thread); False where they were taken already (they are taken back:
        Lightning puts its own SIGTERM handler first when a run starts, and that one broadcasts to the DDP processes
        from inside the handler, which can hang them) or cannot be."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if self.previous:
            for s in SIGNALS:
                signal.signal(s, self.handle)
            return False
        self.signum, self.raised, self.deferred, self.forward = None, False, False, None
        self.previous = {s: signal.signal(s, self.handle) for s in SIGNALS}
        return True

    def defer(self, deferred: bool, forward: Callable[[int], None] | None = None) -> None:
        """Stop at the next :meth:`check` (``deferred``: the guided loop runs) or at once."""
        self.deferred, self.forward = deferred, forward

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous, self.deferred, self.forward = {}, False, None

    def end(self, process_ends: bool) -> None:
        """After the command: :meth:`restore` where the process goes on; where it ends after a stop, ignore further
        signals (Python resets its own handlers to the default as it shuts down, and a late Ctrl-C would kill it
        without the exit status)."""
        if not process_ends:
            self.restore()
        elif self.signum is not None:
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)

    def handle(self, signum: int, frame) -> None:
        if self.raised:
            return
        again = self.signum is not None
        if not again:
            self.signum = signum
            if self.forward is not None:
                self.forward(signum)
        if not self.deferred or (again and signum == signal.SIGINT):
            self.stop()

    def check(self) -> None:
        if self.signum is not None and not self.raised:
            self.stop()

    def stop(self) -> None:
        self.raised = True
        raise StopRequested(self.signum)


STOP = StopSignals()  # signals are per process: one flag per process

"""Cancellation: SIGINT, SIGTERM and SIGHUP become one `Cancelled` exception, raised where it is safe.

CI platforms cancel with signals. GitHub sends SIGINT to the step, SIGTERM 7.5 s later and
kills the tree 2.5 s after that (some runners send SIGHUP); GitLab stops the job's container
(SIGTERM, then SIGKILL). In a container the entrypoint is PID 1, and the kernel drops any
signal PID 1 has no handler for: without these handlers SIGTERM would do nothing there.

The first signal raises `Cancelled` in the main thread, so whatever blocks there (a sleep, an
HTTP request, waiting for the test suite) stops at once and the pipeline's cleanup runs. Later
signals are only noted: the run is already stopping, and switching back, releasing the lock
and writing the report must not be cut short. Code that must not stop half-way (the switch, a
history write) runs `shielded()`: a signal there is raised when the section ends. Worker
threads (concurrent smoke checks) cannot receive the exception; they watch `stopping`.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Cancelled(BaseException):
    """The run was cancelled by a signal. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` in a target or a library mistakes it for an ordinary failure."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"cancelled by {signal_name}")
        self.signal_name = signal_name


class Cancellation:
    def __init__(self) -> None:
        self.signal_name: str | None = None  # the first signal received
        self.stopping = threading.Event()  # set by the first signal: worker threads stop waiting
        self._raised = False
        self._shield = 0  # depth of shielded() sections
        self._held = False  # bookkeeping at the end of a run: never raise any more

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Install the handlers for the duration of one command (main thread only); each command
        starts with no cancellation (several commands can run in one process: tests, the demo)."""
        self.__init__()  # type: ignore[misc]
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            yield
        finally:
            if self.requested:
                # Cancelled: the process is on its way out, and GitHub's next signal must not kill it while it
                # exits (Python resets its own handlers when it finalizes; an ignored signal stays ignored).
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
            else:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self.stopping.set()
        self.check()

    def check(self) -> None:
        """Raise Cancelled now if a signal came while it could not be raised."""
        if self.signal_name is not None and not self._raised and not self._shield and not self._held:
            self._raised = True
            raise Cancelled(self.signal_name)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A section that a signal must not cut in half; a signal received meanwhile is raised after it."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        self.check()  # only when the section completed: an error in it propagates as it is

    @contextmanager
    def held(self) -> Iterator[None]:
        """A section whose outcome is decided already (switching back, recording a verified release):
        a signal meanwhile is only noted, and the next `check()` or `wait()` after it raises."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1

    def hold(self) -> None:
        """From now on signals are only noted: what is left is bookkeeping (report, outputs)."""
        self._held = True

    def wait(self, seconds: float) -> None:
        """Sleep that a cancellation ends early, in any thread (the main thread raises Cancelled)."""
        self.stopping.wait(max(0.0, seconds))
        if threading.current_thread() is threading.main_thread():
            self.check()


# Signals are per process, and so is this.
CANCEL = Cancellation()

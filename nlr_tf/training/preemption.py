"""Preemption notices: a SIGTERM ends a binary cleanly, with a status a scheduler restarts it on.

A preemptible VM gets SIGTERM shortly before it goes. While `notice()` is
active in the main thread, SIGTERM only sets a flag; `nlr-train`'s loop
looks at it between its `tf.function` loops, checkpoints the step it is at
and raises `Preempted`, and the binary exits with `PREEMPTED_STATUS`. The
same command then resumes. Binaries without a step loop use
`raise_on_sigterm()`: the SIGTERM raises `Preempted` at once, so their
`finally` blocks (a temporary output folder removed) run. Outside the main
thread neither installs anything. The handler that was there before is put
back on exit.

Multi-worker and TPU strategies need every worker to agree on the step
(`tf.distribute.experimental.PreemptionCheckpointHandler`); this module
serves single-process runs.

Example:
    with preemption.notice() as notice:
        train(config, preemption=notice)
"""

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional

# EX_TEMPFAIL (sysexits.h): the run stopped early, on purpose; starting the same command again takes it up.
PREEMPTED_STATUS = 75


class Preempted(Exception):
    """A SIGTERM stopped the run (at `step`, checkpointed, for `nlr-train`; None where there are no steps)."""

    def __init__(self, step: Optional[int] = None):
        self.step = step
        super().__init__("preempted" if step is None else f"preempted at step {step}")


class Notice:
    """Whether a SIGTERM has arrived (`requested`)."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame) -> None:
        self.requested = True  # only a flag: the loop acts on it at its next step boundary


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _this_process_only(handler, pid: int):
    """`handler` in the process that installed it. A process forked from it (a multiprocessing pool's worker, as
    cleanlab and the converters start) inherits the handler, yet its pool ends it with SIGTERM: there the signal
    does what it did before, ending the process, or the pool would wait for it forever."""

    def handle(signum, frame) -> None:
        if os.getpid() != pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        handler(signum, frame)

    return handle


@contextlib.contextmanager
def _handler(handler) -> Iterator[None]:
    if not _in_main_thread():  # signal.signal works only there; the caller's handling stays as it is
        yield
        return
    previous = signal.signal(signal.SIGTERM, _this_process_only(handler, os.getpid()))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def notice() -> Iterator[Notice]:
    """A `Notice` that SIGTERM sets while the block runs (in the main thread)."""
    flag = Notice()
    with _handler(flag._handle):
        yield flag


def _raise(signum, frame) -> None:
    raise Preempted()


def raise_on_sigterm() -> contextlib.AbstractContextManager:
    """While the block runs (in the main thread), a SIGTERM raises `Preempted` where the main thread is."""
    return _handler(_raise)


def message(binary: str, e: Preempted) -> str:
    """The one line a binary prints when preempted."""
    if e.step is None:
        return f"{binary}: preempted: stopped, no output written; run the same command again"
    return f"{binary}: preempted at step {e.step}: checkpoint saved; run the same command to resume"

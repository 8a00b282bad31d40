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

The workers of a multi-worker job must agree on the step to stop at:
`coordinated()` hands the notice to TensorFlow's
`tf.distribute.experimental.PreemptionCheckpointHandler`, which tells every
worker (through the job's coordination service) the step to checkpoint,
and there calls the trainer's own save and stop. A TPU is driven by one
process, which `notice()` serves.

Example:
    with preemption.notice() as notice:
        train(config, preemption_notice=notice)
"""

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from typing import Callable, Iterator, NoReturn, Optional

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


def _this_process_only(handler):
    """`handler`, marked as installed here. A process forked while it is installed (a library's multiprocessing pool
    worker) gets SIGTERM's default back as it starts (`_default_sigterm_in_forked_child`): its pool ends it with
    SIGTERM, and a Python handler would run only once the child's main thread ran Python again, which a child
    stuck in C never does, so the pool would wait for it forever."""

    def handle(signum, frame) -> None:
        handler(signum, frame)

    handle.nlr_tf_handler = True
    return handle


def _default_sigterm_in_forked_child() -> None:
    if getattr(signal.getsignal(signal.SIGTERM), "nlr_tf_handler", False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_forked_child)


@contextlib.contextmanager
def _handler(handler) -> Iterator[None]:
    if not _in_main_thread():  # signal.signal works only there; the caller's handling stays as it is
        yield
        return
    previous = signal.signal(signal.SIGTERM, _this_process_only(handler))
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


# The threads TensorFlow's handler starts to watch the job's coordination service (daemon threads).
_WATCHER_THREADS = ("PeerTerminationWatcher-", "WorkerTerminationSignalWatcher-")


def _quiet_watcher_threads() -> None:
    """Once a worker is gone, the coordination service's calls fail in the handler's watcher threads too; the main
    thread reports that in one line, so their tracebacks are logged (absl, info), not printed. For this process's
    life: a watcher's call can fail after the handler is done with."""
    previous = threading.excepthook
    if getattr(previous, "nlr_tf_quiet", False):
        return

    def hook(args) -> None:
        name = args.thread.name if args.thread is not None else ""
        if not name.startswith(_WATCHER_THREADS):
            previous(args)
            return
        from absl import logging

        logging.info("%s ended: %s: %s", name, args.exc_type.__name__, str(args.exc_value).splitlines()[0])

    hook.nlr_tf_quiet = True
    threading.excepthook = hook


@contextlib.contextmanager
def coordinated(cluster_resolver, save: Callable[[], None], stop: Callable[[], NoReturn]) -> Iterator[object]:
    """TensorFlow's `PreemptionCheckpointHandler` for one worker of a multi-worker job, while the block runs.

    Call its `save_checkpoint_if_preempted()` at every step boundary, the
    same number of times on every worker. Once any worker gets SIGTERM, the
    handlers agree on a boundary (the next but one) through the job's
    coordination service; there each worker calls `save` (the trainer's own
    checkpoint path: checkpoints, best weights and evaluation history stay
    as the run writes them, and its resume rules hold) and then `stop`,
    which raises `Preempted`.

    The handler restores nothing: it is given an empty checkpoint in a
    temporary folder, the trainer having restored the run (skipping damaged
    checkpoints) itself. Its SIGTERM handler acts in this process only
    (a forked pool worker ends on SIGTERM as before) and the one before it
    is put back on exit.

    Args:
        cluster_resolver: the strategy's `cluster_resolver`.
        save: called with no argument at the agreed boundary.
        stop: called after `save`; raises.
    """
    import tensorflow as tf

    _quiet_watcher_threads()
    scratch = tempfile.mkdtemp(prefix="nlr_tf_preemption_")
    previous = signal.getsignal(signal.SIGTERM)
    handler = None
    try:
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(), scratch, max_to_keep=1)
        config = tf.distribute.experimental.TerminationConfig(exit_fn=stop, save_fn=save)
        handler = tf.distribute.experimental.PreemptionCheckpointHandler(cluster_resolver, manager, None, config)
        if _in_main_thread():  # the handler TensorFlow installed, for this process only
            signal.signal(signal.SIGTERM, _this_process_only(signal.getsignal(signal.SIGTERM)))
        yield handler
    finally:
        if handler is not None:
            # Its watcher threads, stopped now rather than when the process ends (their last log lines would come
            # after the binary's own). TensorFlow's handler does this in __del__, which never runs while they live.
            for stop_watching in (
                "_stop_cluster_wise_termination_watcher_thread",
                "_stop_poll_termination_signal_thread",
            ):
                getattr(handler, stop_watching, lambda: None)()
        if _in_main_thread():
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(scratch, ignore_errors=True)


def message(binary: str, e: Preempted) -> str:
    """The one line a binary prints when preempted."""
    if e.step is None:
        return f"{binary}: preempted: stopped, no output written; run the same command again"
    return f"{binary}: preempted at step {e.step}: checkpoint saved; run the same command to resume"


class RunNotice(Notice):
    """The notice of a binary that works through many runs (`nlr-reproduce`, `nlr-compare`).

    A SIGTERM raises `Preempted` at once where the main thread is (as `raise_on_sigterm`), so a dataset or feature
    cache being written, a logistic-regression row being fit or the results being written stop at once and leave
    nothing that looks complete; inside `training()` it only sets `requested`, which the trainer acts on at its next
    step boundary, checkpointing first. It raises once: the clean-up a first `Preempted` sets off is not
    interrupted by a second SIGTERM. `run` names the run under way (None between runs), for `run_message`.
    """

    def __init__(self):
        super().__init__()
        self.run: Optional[str] = None
        self._training = False

    def _handle(self, signum, frame) -> None:
        first = not self.requested
        self.requested = True
        if first and not self._training:
            raise Preempted()

    def check(self, step: Optional[int] = None) -> None:
        """Raises `Preempted(step)` if a SIGTERM has arrived (one a library swallowed, or one during training)."""
        if self.requested:
            raise Preempted(step)

    @contextlib.contextmanager
    def training(self) -> Iterator["RunNotice"]:
        """A block in which a SIGTERM only sets `requested` (pass this notice to `trainer.train`)."""
        self.check()
        self._training = True
        try:
            yield self
        finally:
            self._training = False


@contextlib.contextmanager
def run_notice() -> Iterator[RunNotice]:
    """A `RunNotice` that SIGTERM sets (or raises from) while the block runs (in the main thread)."""
    flag = RunNotice()
    with _handler(flag._handle):
        yield flag


def run_message(binary: str, e: Preempted, run: Optional[str] = None) -> str:
    """The one line a binary of many runs prints when preempted in run `run` (None: between runs)."""
    if e.step is not None and run is not None:
        return f"{binary}: preempted at step {e.step} of run {run}: checkpoint saved; run the same command to resume"
    where = "" if run is None else f" in run {run}"
    return f"{binary}: preempted{where}: finished runs kept; run the same command to resume"

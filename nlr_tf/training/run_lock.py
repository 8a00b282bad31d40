"""One job per folder: the lock a binary holds on its run folder (or output folder) while it works.

    FOLDER/job.lock   {"host", "pid", "started", "heartbeat", "period", "token", "binary"}

The lock is a file, so it works on any filesystem (a local disk, gs://,
ram://). A daemon thread writes its heartbeat time again every `period`
seconds. A lock is a dead job's, and is taken over with one warning line,
when its heartbeat is older than `STALE_PERIODS` of its periods, or when its
process is gone on this same host; otherwise a second job is refused with
one line naming the first (`FolderInUse`). The lock is released when the
job ends, also on an exception; a job killed outright leaves it, stale.

Without an atomic create-if-absent on every filesystem, two jobs starting
within the same instant may both see the folder free: each reads the lock
back after writing it, and the one whose write lost refuses to start.

Example:
    with RunLock(model_dir, binary="nlr-train"):
        train(config)

or, in a binary's `main` (a folder in use: one error line, status 1):
    return run_locked(output_dir, "nlr-reproduce", reproduce, argv)
"""

import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Optional

from absl import logging

from nlr_tf.data import files

LOCK_FILE = "job.lock"
HEARTBEAT_SECONDS = 30.0
# A heartbeat older than this many periods is a dead job's (slow filesystems and clock skew fit in the rest).
STALE_PERIODS = 3


class FolderInUse(RuntimeError):
    """Another job, alive, holds the folder."""


def lock_path(folder: str) -> str:
    return os.path.join(folder, LOCK_FILE)


def read_lock(folder: str) -> Optional[dict[str, Any]]:
    """The lock record of `folder` (None: no lock; {} a lock file that does not parse)."""
    try:
        record = files.read_json_if_exists(lock_path(folder))
    except (ValueError, *files.file_errors()):
        return {}
    return record if record is None or isinstance(record, dict) else {}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def dead_reason(record: dict[str, Any], now: Optional[float] = None) -> Optional[str]:
    """Why the lock `record` is a dead job's (None: its job is alive)."""
    try:
        age = (time.time() if now is None else now) - float(record["heartbeat"])
        bound = STALE_PERIODS * float(record["period"])
        host, pid = record["host"], int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return "the lock file does not parse"
    if age > bound:
        return f"its last heartbeat is {age:.0f} s old, more than {bound:.0f} s"
    if host == socket.gethostname() and not _process_alive(pid):
        return "its process is gone"
    return None


def describe(record: dict[str, Any]) -> str:
    """The job of a lock record: its binary, host, process id and start time."""
    binary = record.get("binary") or "a job"
    return f"{binary} on host {record.get('host')}, process {record.get('pid')}, started {record.get('started')}"


class RunLock:
    """The lock of one job on `folder` (a context manager: acquired on entry, released on exit).

    Args:
        folder: str. The run or output folder (made if absent).
        binary: str. The binary holding it, named to a job refused. Defaults to "".
        period: float. Seconds between heartbeats. Defaults to `HEARTBEAT_SECONDS`.
    """

    def __init__(self, folder: str, binary: str = "", period: float = HEARTBEAT_SECONDS):
        if period <= 0:
            raise ValueError(f"period must be > 0. Received: period={period}")
        self.folder, self.binary, self.period = folder, binary, period
        self.path = lock_path(folder)
        self.record: Optional[dict[str, Any]] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._made_folder = False

    def acquire(self) -> "RunLock":
        """Takes the folder; raises `FolderInUse` if a live job holds it (a dead job's lock is taken over)."""
        if self.record is not None:
            raise FolderInUse(f"{self.folder} is already locked by this job ({describe(self.record)})")
        holder = read_lock(self.folder)
        if holder is not None:
            reason = dead_reason(holder)
            if reason is None:
                raise self._in_use(holder)
            logging.warning(
                "%s was locked by a job that is gone (%s; %s): taking it over", self.folder, describe(holder), reason
            )
        self._made_folder = not files.isdir(self.folder)
        now = time.time()
        record = {
            "binary": self.binary,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
            "heartbeat": now,
            "period": self.period,
            "token": uuid.uuid4().hex,
        }
        files.write_json(self.path, record)
        won = read_lock(self.folder) or {}
        if won.get("token") != record["token"]:  # another job wrote its lock at the same instant
            raise self._in_use(won)
        self.record = record
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()
        return self

    def _in_use(self, holder: dict[str, Any]) -> FolderInUse:
        return FolderInUse(
            f"{self.folder} is in use by {describe(holder)} (lock file {self.path}); wait for that job to end, or "
            f"stop it: its lock is taken over once its heartbeat is {STALE_PERIODS} periods old"
        )

    def heartbeat(self) -> None:
        """Writes the heartbeat time again (if the lock is still this job's)."""
        if self.record is None:
            return
        current = read_lock(self.folder) or {}
        if current.get("token") != self.record["token"]:
            logging.warning("%s is no longer this job's (now %s)", self.path, describe(current))
            self._stop.set()
            return
        self.record = dict(self.record, heartbeat=time.time())
        files.write_json(self.path, self.record)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.heartbeat()
            except (ValueError, *files.file_errors()) as e:  # a passing filesystem error: the next beat tries again
                logging.warning("heartbeat of %s not written: %s", self.path, e)

    def release(self) -> None:
        """Stops the heartbeat and deletes the lock file (if it is still this job's), and the folder if the lock made
        it and it holds nothing else (a job that failed at once leaves nothing)."""
        if self.record is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = read_lock(self.folder) or {}
        if current.get("token") == self.record["token"]:
            files.remove(self.path)
            if self._made_folder and not files.listdir(self.folder):
                files.remove_tree(self.folder)
        self.record = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def chief_task() -> bool:
    """Whether this process is the chief of its multi-worker job (TF_CONFIG), as `strategies.is_chief` decides;
    the chief holds the job's lock, and the other workers share its folder."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task") or {}
    except (AttributeError, ValueError):  # the strategy factory reports a bad TF_CONFIG
        return True
    task_type, task_id = task.get("type"), int(task.get("index", 0))
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def run_locked(folder: str, binary: str, fn: Callable[..., int], *args) -> int:
    """`fn(*args)`'s exit status, run holding the lock of `folder`; a folder in use: one error line, status 1."""
    try:
        lock = RunLock(folder, binary=binary).acquire()
    except FolderInUse as e:
        print(f"{binary}: error: {e}", file=sys.stderr)
        return 1
    try:
        return fn(*args)
    finally:
        lock.release()

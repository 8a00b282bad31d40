"""How every nlr-* binary ends on a full disk: one line, status 1, nothing half-written left looking complete.

A write refused for lack of space (ENOSPC, or EDQUOT: a quota), wherever
it happens (a conversion's shards, a checkpoint, a feature cache, an
evaluation's reports, an export), ends the binary with one line on stderr
naming the path and the cause (`files.out_of_space`) instead of a
traceback, and status 1, as the binaries' other one-line errors: a
scheduler that starts the job again at once would find the disk as full.
What the run was writing is not left looking complete: folders are written
whole or not at all (`output_dir.atomic_output_dir`), single files through a
temporary name (`files.write_bytes`), and a checkpoint is listed in
`checkpoint` only once written in full, so the same command, run again once
space is freed, starts over (a conversion, an extraction, an evaluation, an
export) or resumes from the last complete checkpoint (`nlr-train`).

Every other exception goes on up as before.

`run_plan_job` is the other fault every binary of many runs (`nlr-reproduce`,
`nlr-compare`) meets the same way: a preemption notice.
"""

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Optional

from absl import app

from nlr_tf.data import files

OUT_OF_SPACE_STATUS = 1


def message(binary: str, line: str) -> str:
    """The one line `binary` prints on a full disk; `line`: `files.out_of_space`'s "PATH: no space left on device"."""
    return f"{binary}: error: out of disk space: {line}; free space and run the same command again"


def stop_on_full_disk(binary: str, main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """`main` (absl's `main(argv)`), but returning `OUT_OF_SPACE_STATUS` after one line on stderr on a full disk."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> Any:
        try:
            return main(argv)
        except Exception as e:  # SystemExit and KeyboardInterrupt are not errors of a write
            line = files.out_of_space(e)
            if line is None:
                raise
            print(message(binary, line), file=sys.stderr, flush=True)
            return OUT_OF_SPACE_STATUS

    return wrapped


def run(binary: str, main: Callable[[list[str]], Any], argv: Optional[Sequence[str]] = None) -> None:
    """`absl.app.run(main)` for the binary named `binary`, ending in one line on a full disk (see the module).

    Args:
        binary: str. The name the user typed (`nlr-train`), which starts the line.
        main: the binary's `main(argv)`.
        argv: the command line, program name first; None: `sys.argv` (the tests pass theirs).
    """
    app.run(stop_on_full_disk(binary, main), argv=list(argv) if argv is not None else None)


def run_plan_job(binary: str, output_dir: str, body: Callable[[Any], int], keep_results: bool = False) -> int:
    """`body(notice)`'s status, run holding `output_dir`'s job lock under a `preemption.RunNotice`.

    A SIGTERM ends it with status 75 and one line naming the run under way;
    results.md and results.json are removed first (unless `keep_results`:
    a dry run writes none), since this command has not written all of them.

    Args:
        binary: str. The binary's name, which starts its lines.
        output_dir: str. The folder of the plan's runs and results (absolute).
        body: the binary's work, given the notice to pass on to `run_plan`.
        keep_results: bool. Leave results.md and results.json as they are.
    """
    from nlr_tf.reproduce.report import RESULTS_JSON, RESULTS_MD
    from nlr_tf.training import preemption
    from nlr_tf.training.run_lock import run_locked

    with preemption.run_notice() as notice:
        try:
            # One job at a time in an output folder: a second is refused with one line naming the first.
            return run_locked(output_dir, binary, body, notice)
        except preemption.Preempted as e:
            if not keep_results:
                for name in (RESULTS_MD, RESULTS_JSON):
                    files.remove(os.path.join(output_dir, name))
            print(preemption.run_message(binary, e, notice.run), flush=True)
            return preemption.PREEMPTED_STATUS

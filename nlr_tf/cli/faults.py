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
"""

import functools
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

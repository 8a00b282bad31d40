"""The one progress bar of the project's long loops (writing, feature extraction, prediction)."""

import sys

import tqdm


def progress_bar(total, desc: str, enabled: bool = True) -> tqdm.tqdm:
    """A bar over images on stderr; redrawn at most every 5 s when stderr is not a terminal (logs stay short)."""
    return tqdm.tqdm(
        total=total,
        desc=desc,
        unit="img",
        disable=not enabled,
        file=sys.stderr,
        mininterval=0.1 if sys.stderr.isatty() else 5.0,
    )

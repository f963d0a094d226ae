"""What selfsup says on stderr besides errors, and the `--quiet` switch every verb has.

Results go to stdout; progress and informational lines (`info`) go to stderr unless quiet; warnings that change
what a result means (`warn`) and errors print even then. Quiet mode is an environment variable, so the extra
processes a data-parallel run starts (which re-run the command) inherit it.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

QUIET_ENV = "SELFSUP_QUIET"
# libraries' own progress bars and chatter, off while quiet (read when each library is first imported)
_LIBRARY_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def is_quiet() -> bool:
    """True under `--quiet` (or SELFSUP_QUIET=1 in the environment)."""
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def show_progress(requested: bool = True) -> bool:
    """Whether a progress display the caller asked for should run."""
    return requested and not is_quiet()


def info(message: str) -> None:
    """An informational line on stderr (`selfsup: ...`), dropped under `--quiet`."""
    if not is_quiet():
        print(f"selfsup: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """A warning that changes what a result means: printed on stderr even under `--quiet`."""
    print(f"selfsup: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def quiet_mode(on: bool = True) -> Iterator[None]:
    """Within the block: no selfsup progress or info lines, no library progress bars, Python warnings or log
    records below ERROR. Everything is restored afterwards (the CLI's `main` may run several times in one
    process)."""
    if not on:
        yield
        return
    import logging
    import warnings

    saved = {k: os.environ.get(k) for k in (QUIET_ENV, *_LIBRARY_ENV)}
    os.environ[QUIET_ENV] = "1"
    for key, value in _LIBRARY_ENV.items():
        os.environ.setdefault(key, value)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

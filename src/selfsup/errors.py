"""One error type for everything a user can get wrong: printed as one line, exit status 2."""
from __future__ import annotations


class SelfsupError(Exception):
    """Bad input (file, recipe key, value, data). The CLI prints `selfsup: error: <message>` and exits 2."""

    exit_code = 2


class TrainingDiverged(SelfsupError):
    """The loss became NaN/inf; the last good checkpoint is kept. Exit status 3."""

    exit_code = 3

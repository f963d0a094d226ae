"""A run folder's CSV logs (one `logs/attempt-N/metrics.csv` per start), read back as one list of rows."""
from __future__ import annotations

from pathlib import Path


def read_logged(out: Path) -> list[dict[str, float]]:
    """All logged rows of every attempt, later attempts winning for the same step."""
    import csv

    rows: dict[tuple[int, str], dict[str, float]] = {}
    for f in sorted((out / "logs").glob("attempt-*/metrics.csv"), key=lambda p: int(p.parent.name.split("-")[1])):
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                vals = {k: float(v) for k, v in row.items() if v not in ("", None)}
                if "step" in vals:
                    kind = "eval" if "heldout_loss" in vals else "train"
                    rows[(int(vals["step"]), kind)] = vals
    return [rows[k] for k in sorted(rows)]

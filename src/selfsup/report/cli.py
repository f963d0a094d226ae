"""`selfsup report RUN... --out report.html`: one self-contained HTML page with every table and picture of the
given run folders (searched recursively) and a sortable comparison wherever runs share a kind.

Imports only the standard library and PyYAML, so it is quick even on a large tree of runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from selfsup.errors import SelfsupError


def write_report(runs: Sequence[str | Path], out: str | Path, title: str | None = None,
                 replace: bool = False) -> dict[str, Any]:
    """Write the page for `runs` to `out` (atomically; an existing file only with `replace=True`) and return
    what it holds: {"out", "runs", "pictures", "tables", "comparisons"}."""
    from selfsup.fileio import atomic_write_text
    from selfsup.report.page import page_summary, render_page
    from selfsup.report.runs import find_runs

    out = Path(out)
    if not runs:
        raise SelfsupError("report: give at least one run folder")
    if out.suffix.lower() not in (".html", ".htm"):
        raise SelfsupError(f"report: --out {out}: expected a .html file name")
    if out.is_dir():
        raise SelfsupError(f"report: --out {out} is a folder; give a file name like {out / 'report.html'}")
    if out.exists() and not replace:
        raise SelfsupError(f"{out}: already exists; choose another --out (or pass --force to replace it)")
    sections = find_runs(runs)
    page = render_page(sections, title or "selfsup report: " + ", ".join(Path(r).name for r in runs))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return {"out": str(out), **page_summary(sections)}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page with every table and plot of some runs",
                       description="Every run folder under RUN (searched recursively: pretraining, fine-tuning, "
                                   "probes, anomaly detection, the demo) with its metrics, pictures and small "
                                   "tables, plus a sortable table wherever runs share a kind. Pictures are "
                                   "inlined: the page is one file.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or folders of runs)")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the page to write (a new file)")
    p.add_argument("--title", default=None, help="the page's title")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    info = write_report(args.runs, args.out, title=args.title, replace=args.force)
    print(f"wrote {info['out']}: {info['runs']} runs, {info['pictures']} pictures, {info['tables']} tables, "
          f"{info['comparisons']} comparisons")
    return 0

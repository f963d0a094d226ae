"""Render run sections (selfsup.report.runs) as one self-contained HTML page: pictures inlined as PNG data,
CSS and a few lines of JavaScript in the page (sortable comparison tables), nothing fetched from anywhere.

Hand-written on purpose: the page is a few templates; a templating or notebook library would add a dependency
for less control over a file a person opens by double-clicking.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
from collections import defaultdict
from typing import Any, Sequence

from selfsup.report.runs import RunSection, format_value

MAX_COMPARE_COLUMNS = 10

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:1.2rem 2rem}header h1{margin:0;font-size:1.5rem}
header p{margin:.2rem 0 0;color:#c5cad3}main{max-width:1100px;margin:0 auto;padding:1rem 2rem 3rem}
nav ul{columns:2;padding-left:1.2rem}section{background:#fff;border-radius:8px;padding:1rem 1.4rem;
margin:1.2rem 0;box-shadow:0 1px 3px #0002}h2{margin:.2rem 0;font-size:1.2rem}.sub{color:#5a6270;margin:0 0 .6rem}
.kind{display:inline-block;font-size:.75rem;background:#e4e9f2;border-radius:4px;padding:0 .4rem;margin-right:.4rem}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0}td,th{border-bottom:1px solid #e3e6eb;
padding:.2rem .6rem;text-align:left}th{background:#f0f2f5;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer}table.sortable th::after{content:" ⇅";color:#9aa1ad}
.metrics{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:.1rem 1rem;font-size:.85rem}
.metrics div{display:flex;justify-content:space-between;border-bottom:1px dotted #e3e6eb}
.metrics span:last-child{font-variant-numeric:tabular-nums;font-weight:600}
figure{display:inline-block;margin:.6rem 1rem .6rem 0;vertical-align:top}figure img{max-width:100%;
max-height:420px;border:1px solid #e3e6eb;border-radius:4px}figcaption{font-size:.8rem;color:#5a6270}
details{margin:.4rem 0}.wide{overflow-x:auto}td{white-space:nowrap}summary{cursor:pointer;color:#35507a}
"""

SCRIPT = """
document.body.dataset.errors = "0";
window.addEventListener("error", function () {
  document.body.dataset.errors = String(Number(document.body.dataset.errors) + 1);
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.brokenImages = String(imgs.filter(function (i) {
    return !i.complete || i.naturalWidth === 0; }).length);
  document.body.dataset.ready = "1";
});
document.querySelectorAll("table.sortable th").forEach(function (th, _, all) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var up = th.dataset.dir !== "asc"; th.dataset.dir = up ? "asc" : "desc";
    function key(r) { var t = r.cells[col].dataset.value || r.cells[col].textContent, n = parseFloat(t);
      return isNaN(n) ? t : n; }
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return up ? c : -c; });
    rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
  });
});
"""


def render_page(sections: Sequence[RunSection], title: str = "selfsup report") -> str:
    e = html.escape
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
             "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
             f"<style>{STYLE}</style></head><body>",
             f"<header><h1>{e(title)}</h1><p>{len(sections)} runs · "
             f"{sum(len(s.images) for s in sections)} pictures · made {e(when)} by selfsup report</p></header><main>"]
    parts.append("<nav><h2>Runs</h2><ul>" + "".join(
        f"<li><a href=\"#{anchor(s)}\">{e(s.name)}</a> <span class=\"kind\">{e(s.kind)}</span></li>"
        for s in sections) + "</ul></nav>")
    parts += [comparison_table(group, members) for group, members in groups(sections).items()]
    parts += [run_section(s) for s in sections]
    parts.append(f"</main><script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def anchor(section: RunSection) -> str:
    return "run-" + "".join(c if c.isalnum() else "-" for c in section.name)


def groups(sections: Sequence[RunSection]) -> dict[str, list[RunSection]]:
    """Runs of one kind (and task) that can be read side by side; a group of one is not a comparison."""
    by_group: dict[str, list[RunSection]] = defaultdict(list)
    for s in sections:
        if s.group:
            by_group[s.group].append(s)
    return {g: members for g, members in by_group.items() if len(members) > 1}


def comparison_columns(members: Sequence[RunSection]) -> list[str]:
    """The numeric metrics at least two runs of the group report, eval ones first; a metric other than an eval
    one that is the same in every run says nothing about the difference and is left out."""
    counts: dict[str, int] = defaultdict(int)
    values: dict[str, set] = defaultdict(set)
    for s in members:
        for key, value in s.scalars.items():
            if isinstance(value, (int, float)):
                counts[key] += 1
                values[key].add(value)
    shared = [k for k, n in counts.items() if n >= 2 and (k.startswith("eval.") or len(values[k]) > 1)]
    shared.sort(key=lambda k: (not k.startswith("eval"), -counts[k], k))
    return shared[:MAX_COMPARE_COLUMNS]


def comparison_table(group: str, members: Sequence[RunSection]) -> str:
    e = html.escape
    columns = comparison_columns(members)
    head = "".join(f"<th>{e(c)}</th>" for c in ["run", "what", *columns])
    rows = []
    for s in members:
        cells = [f"<td><a href=\"#{anchor(s)}\">{e(s.name)}</a></td>", f"<td>{e(s.label)}</td>"]
        for c in columns:
            value = s.scalars.get(c)
            cells.append("<td class=\"num\">–</td>" if value is None else
                         f"<td class=\"num\" data-value=\"{e(str(value))}\">{e(format_value(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<section class=\"compare\"><h2>Compared: {e(group)}</h2><p class=\"sub\">{len(members)} runs; "
            "click a column to sort</p><div class=\"wide\"><table class=\"sortable\"><thead><tr>" + head
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>")


def run_section(s: RunSection) -> str:
    e = html.escape
    parts = [f"<section id=\"{anchor(s)}\"><h2><span class=\"kind\">{e(s.kind)}</span>{e(s.name)}</h2>",
             f"<p class=\"sub\">{e(s.subtitle)}</p>" if s.subtitle else ""]
    if s.scalars:
        parts.append("<div class=\"metrics\">" + "".join(
            f"<div><span>{e(k)}</span><span>{e(format_value(v))}</span></div>" for k, v in s.scalars.items())
            + "</div>")
    for img in s.images:
        data = base64.b64encode(img.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt=\"{e(img.name)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{e(img.name)}</figcaption></figure>")
    for name, header, rows, total in s.tables:
        parts.append(csv_table(name, header, rows, total))
    parts.append("</section>")
    return "".join(parts)


def csv_table(name: str, header: list[str], rows: list[list[str]], total: int) -> str:
    e = html.escape
    shown = f"{len(rows)} of {total} rows" if total > len(rows) else f"{total} rows"

    def cell(value: str) -> str:
        try:
            float(value)
            return f"<td class=\"num\">{e(value)}</td>"
        except ValueError:
            return f"<td>{e(value)}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return (f"<details><summary>{e(name)} ({shown})</summary><table class=\"sortable\"><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in header) + f"</tr></thead><tbody>{body}</tbody></table></details>")


def page_summary(sections: Sequence[RunSection]) -> dict[str, Any]:
    return {"runs": len(sections), "pictures": sum(len(s.images) for s in sections),
            "tables": sum(len(s.tables) for s in sections), "comparisons": len(groups(sections))}

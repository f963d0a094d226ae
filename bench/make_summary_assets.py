"""Regenerate src/selfsup/assets/package-summaries.jsonl.xz: real document / reference-summary pairs taken from
the package metadata installed on this machine (no download), for the text-as-code summarizer
(selfsup.objectives.text_as_code, bench/text_as_code.py).

* Python distributions (`importlib.metadata`, every site-packages / dist-packages folder of this Python, and
  the extra folders given with --path): reference = the `Summary` field (a one-line summary the authors wrote),
  document = the first prose paragraph(s) of the long description (README), markdown / reST markup, badges,
  code, tables and URLs stripped.
* Debian packages (/var/lib/dpkg/status): reference = the one-line synopsis, document = the first
  paragraph(s) of the long description.

A document is 30-200 words (prose paragraphs are joined until 30 words, cut at 200); a reference 3-30 words.
Pairs are deduplicated by summary and by the document's first 12 words, sorted by id, so a rerun on the same
machine gives the same file. Each text comes from its package's open-source metadata, under that package's
licence (written in the row where the metadata names it).

    python bench/make_summary_assets.py [--path DIR ...]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import re
import site
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "selfsup" / "assets" / "package-summaries.jsonl.xz"
MIN_DOC, MAX_DOC, MIN_SUM, MAX_SUM = 30, 200, 3, 30

URL = re.compile(r"<?https?://\S+>?|www\.\S+")
MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
ROLE = re.compile(r":[a-z]+:`([^`]*)`")
HTML = re.compile(r"<[^>]+>")
MARKS = re.compile(r"\*\*|__|(?<!\w)[*_](?=\w)|(?<=\w)[*_](?!\w)|`+|\|[\w-]+\|")


def clean_line(text: str) -> str:
    for pattern, repl in ((MD_IMAGE, ""), (MD_LINK, r"\1"), (RST_LINK, r"\1"), (ROLE, r"\1"), (HTML, " "),
                          (URL, ""), (MARKS, "")):
        text = pattern.sub(repl, text)
    return re.sub(r"\s+", " ", text).strip()


def is_prose(block: str) -> bool:
    """A paragraph of running text: not a heading, badge row, code, table, directive, list of links."""
    first = block.lstrip()
    if not first or first[0] in "#|=-+<>[!.:`~\t" or first.startswith(("```", "    ", ">>>", "$ ", "pip ")):
        return False
    if re.fullmatch(r"[=\-~^*#]{3,}", block.splitlines()[-1].strip()):  # a reST heading
        return False
    words = clean_line(block).split()
    letters = sum(c.isalpha() for c in clean_line(block))
    return len(words) >= 6 and letters > 0.6 * len(clean_line(block)) and clean_line(block)[-1:] in ".!?:)"


def first_prose(blocks: list[str]) -> str | None:
    out: list[str] = []
    for block in blocks:
        if is_prose(block):
            out += clean_line(block).split()
            if len(out) >= MIN_DOC:
                return " ".join(out[:MAX_DOC])
        elif out:  # only consecutive prose paragraphs are joined
            out = []
    return None


def python_rows(paths: list[str]) -> list[dict]:
    rows = []
    for dist in importlib.metadata.distributions(path=paths):
        meta = dist.metadata
        body = meta.get_payload() or meta.get("Description") or ""
        name, summary = meta.get("Name"), meta.get("Summary")
        if not name or not summary or not isinstance(body, str):
            continue
        blocks = [b for b in re.split(r"\n\s*\n", body.replace("\r", "")) if b.strip()]
        doc = first_prose(blocks)
        licence = meta.get("License-Expression") or next(
            (c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")),
            None) or (meta.get("License") or "")
        rows.append({"id": f"pypi:{name.lower()}", "document": doc, "summary": clean_line(summary),
                     "licence": licence.splitlines()[0][:60] if licence else ""})
    return rows


def debian_rows(status: Path) -> list[dict]:
    rows = []
    if not status.is_file():
        return rows
    for entry in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        name = re.search(r"^Package: (\S+)", entry, re.M)
        desc = re.search(r"^Description: (.*)\n((?: .*\n?)*)", entry, re.M)
        if not name or not desc:
            continue
        paras = [" ".join(l.strip() for l in p) for p in _debian_paragraphs(desc.group(2))]
        doc = first_prose([p for p in paras if p])
        rows.append({"id": f"debian:{name.group(1)}", "document": doc, "summary": clean_line(desc.group(1)),
                     "licence": ""})
    return rows


def _debian_paragraphs(body: str) -> list[list[str]]:
    paras: list[list[str]] = [[]]
    for line in body.splitlines():
        if line.strip() == ".":
            paras.append([])
        else:
            paras[-1].append(line)
    return paras


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", action="append", default=[], help="another site-packages folder to read")
    args = ap.parse_args()
    paths = sorted({*sys.path, *site.getsitepackages(), *args.path})
    seen_sum, seen_doc, kept = set(), set(), []
    for row in sorted(python_rows(paths) + debian_rows(Path("/var/lib/dpkg/status")), key=lambda r: r["id"]):
        doc, summary = row["document"], row["summary"]
        if not doc or not MIN_SUM <= len(summary.split()) <= MAX_SUM:
            continue
        key_sum, key_doc = summary.lower(), " ".join(doc.lower().split()[:12])
        if key_sum in seen_sum or key_doc in seen_doc:
            continue
        seen_sum.add(key_sum), seen_doc.add(key_doc)
        kept.append(row)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    OUT.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    n_py = sum(r["id"].startswith("pypi:") for r in kept)
    print(f"{OUT}: {len(kept)} pairs ({n_py} Python, {len(kept) - n_py} Debian), {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()

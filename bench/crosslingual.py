"""Cross-lingual alignment without parallel text (the mean-difference trick): a tiny BERT pretrained with MLM on
English and German fortune cookies together, then `selfsup align` at every layer — does the mean shift raise
the retrieval of dictionary translations?

Data, all from Debian packages (no download at run time):
    apt-get install fortunes fortunes-de dict-freedict-eng-deu
- English: the `fortunes` package's cookies (/usr/share/games/fortunes/*), German: `fortunes-de`
  (/usr/share/games/fortunes/de/*); art files left out; one cookie per line.
- Dictionary: FreeDict English-German (/usr/share/dictd/freedict-eng-deu.*), single-word headwords and
  single-word translations, lower-cased.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/crosslingual.py --steps 2000
    python bench/crosslingual.py --write-test-assets     # the small pieces tests/data/crosslingual/ ships

Writes bench/results/crosslingual/{results.json, en.txt, de.txt, dictionary.csv, pretrain/, align-L*/} and
prints the table of docs/methods.md.
"""
from __future__ import annotations

import argparse
import base64
import csv
import gzip
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FORTUNES = Path("/usr/share/games/fortunes")
FREEDICT = Path("/usr/share/dictd/freedict-eng-deu")
ART = {"art", "ascii-art", "asciiart", "zippy", "translate-me"}
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def cookies(folder: Path) -> list[str]:
    """Every cookie of a fortune folder on one line (files split at lines holding only %); mostly-letter
    cookies of 20+ characters only (no ASCII art)."""
    out = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix in (".dat", ".u8") or path.name in ART:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for cookie in re.split(r"^%\s*$", text, flags=re.M):
            line = " ".join(cookie.split())
            letters = sum(c.isalpha() for c in line)
            if len(line) >= 20 and letters / len(line) > 0.6:
                out.append(line)
    return out


def dictd_number(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def freedict_pairs(base: Path) -> list[tuple[str, str]]:
    """(English word, German word) from a dictd FreeDict dictionary: the first line of each entry's
    translations, split at commas, tags (<...>, [...], {...}) removed, single words only."""
    data = gzip.open(base.with_suffix(".dict.dz")).read()
    pairs = set()
    for line in base.with_suffix(".index").read_text(encoding="utf-8").splitlines():
        head, offset, length = line.split("\t")
        if not head.isalpha() or not head.islower():
            continue
        entry = data[dictd_number(offset):dictd_number(offset) + dictd_number(length)].decode("utf-8", "replace")
        lines = entry.split("\n")
        if len(lines) < 2:
            continue
        for item in lines[1].split(","):
            word = re.sub(r"<[^>]*>|\[[^\]]*\]|\{[^}]*\}|\([^)]*\)", "", item).strip()
            if word.isalpha():
                pairs.add((head, word.lower()))
    return sorted(pairs)


def prepare(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"en": out / "en.txt", "de": out / "de.txt", "dictionary": out / "dictionary.csv"}
    files["en"].write_text("\n".join(cookies(FORTUNES)) + "\n", encoding="utf-8")
    files["de"].write_text("\n".join(cookies(FORTUNES / "de")) + "\n", encoding="utf-8")
    with open(files["dictionary"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["source", "target"])
        w.writerows(freedict_pairs(FREEDICT))
    return files


def write_test_assets(folder: Path) -> None:
    """The first 800 cookies of each language and the dictionary pairs whose both words occur in them."""
    from selfsup.adapt.tools.align import words_of

    en, de = cookies(FORTUNES)[:800], cookies(FORTUNES / "de")[:800]
    en_words = {w for line in en for w in words_of(line)}
    de_words = {w for line in de for w in words_of(line)}
    pairs = [(s, t) for s, t in freedict_pairs(FREEDICT) if s in en_words and t in de_words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (folder / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    with open(folder / "dictionary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["source", "target"])
        w.writerows(pairs)
    print(f"wrote {folder}: {len(en)} + {len(de)} cookies, {len(pairs)} dictionary pairs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--layers", default="0,1,2")
    ap.add_argument("--write-test-assets", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "crosslingual"))
    args = ap.parse_args()
    if args.write_test_assets:
        write_test_assets(ROOT / "tests" / "data" / "crosslingual")
        return
    from selfsup import pretrain
    from selfsup.adapt.tools.align import align

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    files = prepare(out)
    run = out / "pretrain"
    m = pretrain("mlm_rope", [str(files["en"]), str(files["de"])], run, max_steps=args.steps, progress=False,
                 overrides=["train.log_every=50", "train.eval_every=500", "train.checkpoint_every=100000"])
    results = {"pretrain": {k: m.get(k) for k in ("steps", "train_loss", "heldout_perplexity")}, "layers": {}}
    for layer in map(int, args.layers.split(",")):
        r = align(run, str(files["en"]), str(files["de"]), str(files["dictionary"]), out / f"align-L{layer}",
                  layer=layer, min_count=5)
        results["layers"][layer] = r
        print(layer, json.dumps({k: r[k] for k in ("without_shift", "with_shift", "centroid_cosine")}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n| layer | dictionary words | MRR without → with shift | top-1 | top-5 | cosine of the language means |")
    print("|---|---|---|---|---|---|")
    for layer, r in results["layers"].items():
        a, b = r["without_shift"], r["with_shift"]
        print(f"| {layer} | {a['pairs']} (of {r['target_words']} German words) | {a['mrr']:.3f} → **{b['mrr']:.3f}** | "
              f"{a['top1']:.3f} → {b['top1']:.3f} | {a['top5']:.3f} → {b['top5']:.3f} | {r['centroid_cosine']:.3f} |")


if __name__ == "__main__":
    main()

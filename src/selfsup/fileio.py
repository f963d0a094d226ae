"""Atomic writes: readers (and a resumed run) never see half a file or half a folder."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_dir(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to `final` (replacing it if `replace`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp.", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder the mode mkdir() would
        yield tmp
        if final.exists():
            if not replace:  # another process won the race (caches): theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def try_lock(path: Path):
    """An exclusive advisory lock on `path` (created if missing), held until the returned file is closed or
    the process ends; None when another process holds it."""
    import fcntl

    from selfsup.errors import SelfsupError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as e:
        raise SelfsupError(f"{path.parent}: cannot write there ({e.strerror})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def check_local_paths(sources) -> None:
    """Each source that is neither `-` (stdin) nor scheme-prefixed (`hf:`, `selfsup:`, `sklearn:` …; their readers
    check those) must exist: the CLI calls this before importing torch, so a typo costs no wait."""
    import re

    from selfsup.errors import SelfsupError

    for source in sources or []:
        if source and source != "-" and not re.match(r"^[A-Za-z][\w.+-]*:", str(source)) \
                and not Path(source).exists():
            raise SelfsupError(f"{source}: no such file or folder")


def model_folder_format(folder: Path) -> str:
    """How a written model folder is stored, for the line that names it: selfsup's own formats (auto-encoders,
    voice conversion, text as code: a config.json with `"format": "selfsup-..."`) or Hugging Face format."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "Hugging Face format"
    if isinstance(config, dict) and str(config.get("format", "")).startswith("selfsup-"):
        extra = " + preprocessing.json" if (Path(folder) / "preprocessing.json").is_file() else ""
        return f"safetensors + config.json{extra}"
    return "Hugging Face format"


def selfsup_model_folder(path: str | Path, fmt: str, what: str, hint: str) -> tuple[Path, dict]:
    """A run folder or its `model/` holding model.safetensors + a config.json of selfsup's format `fmt` ->
    (that folder, its config); anything else is a one-line error naming the path (`what`: "a voice-conversion
    model", `hint`: how to make one)."""
    from selfsup.errors import SelfsupError

    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file():
            try:
                config = json.loads((cand / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise SelfsupError(f"{cand / 'config.json'}: unreadable ({type(e).__name__}: {e})") from None
            if isinstance(config, dict) and config.get("format") == fmt:
                return cand, config
    raise SelfsupError(f"{path}: not {what} (no {fmt} config.json + model.safetensors there or in model/; {hint})")

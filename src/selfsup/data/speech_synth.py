"""Labeled English speech made offline with eSpeak NG (formant synthesis, https://github.com/espeak-ng/espeak-ng),
whose library and voice data ship in the `espeakng-loader` wheel: no download, no system package.

A voice is an accent (an espeak language voice, e.g. `en-gb-scotland`) plus a variant (a speaker preset in
espeak-ng-data/voices/!v, e.g. `m1`, `f2`): `en-gb-scotland+f2`, the manifest's `speaker`. A word set is
`clips/<word>_<accent>_<variant>_<speed>.flac` and `manifest.csv` (keyword spotting, speaker ID); a sentence set
joins words spoken one at a time with silence, so its `alignment` column (JSON `[[word, start_s, end_s], ...]`)
is exact and frame labels can be read from it.

Clips are resampled with soxr, trimmed to ~30 ms of silence, peak-normalized to 0.9, stored as 16-bit FLAC.
Determinism: espeak keeps synthesis state (pitch-flutter phase, wave phase, gain) in C statics that no API
resets and seeds its noise with the clock, so one loaded library never speaks the same text twice alike. Each
utterance gets a freshly loaded private copy instead (dlopen, initialize, reseed, speak, dlclose: ~1 ms): a clip
is a pure function of (text, voice, rate). The library is not thread-safe: one lock serializes all use.
"""
from __future__ import annotations

import _ctypes
import atexit
import csv
import ctypes
import functools
import itertools
import json
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import espeakng_loader

from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_dir

if TYPE_CHECKING:
    import numpy as np

ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"]
VARIANTS = ["m1", "m3", "m5", "f1", "f2", "f4"]
SPEEDS = {"slow": 130, "normal": 165, "fast": 200}  # words per minute
COMMAND_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
EMBEDDED: dict[str, Path] = {name: _ASSETS / name.replace("-", "_") for name in ("speech-words", "speech-sentences")}

Progress = Callable[[str, int, int], None]  # (set name, clips done, clips in all)

_PEAK, _SILENCE_DB, _KEEP_S, _MIN_WPM, _MAX_WPM = 0.9, -40.0, 0.03, 80, 450  # 80..450: espeakRATE's range
_NAME = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")  # a word or speed name: no "_" (the file name separator)
_LOCK = threading.Lock()

# Hand-written binding: no maintained Python package binds the synthesizer (espeakng-loader only ships the
# library; `espeakng` and `py-espeak-ng` run the espeak-ng program). Names and values are speak_lib.h's.
_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8, _ESPEAK_RATE = 2, 1, 1, 1
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _data_path() -> Path:
    return Path(espeakng_loader.get_data_path())


@functools.cache
def _private_library() -> str:
    """A copy of libespeak-ng that only this module loads, so unloading it never affects another user."""
    original = Path(espeakng_loader.get_library_path())
    folder = Path(tempfile.mkdtemp(prefix="selfsup-espeak-"))
    atexit.register(shutil.rmtree, folder, True)
    return str(shutil.copy2(original, folder / original.name))


@contextmanager
def _fresh_engine(on_samples: Callable[..., int]) -> Iterator[tuple[ctypes.CDLL, int]]:
    """A newly loaded espeak, initialized to hand samples to `on_samples`; yields (library, its sample rate)."""
    lib = ctypes.CDLL(_private_library())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    callback = _SynthCallback(on_samples)  # kept alive until the library is gone
    try:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, bytes(_data_path()), 0)
        if rate <= 0:
            raise SelfsupError("espeak-ng failed to initialize: reinstall espeakng-loader (a broken install)")
        lib.espeak_SetSynthCallback(callback)
        yield lib, rate
    finally:
        lib.espeak_Terminate()
        (getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary)(lib._handle)  # statics reset


def _speak(text: str, voice: str, rate_wpm: int) -> tuple[np.ndarray, int]:
    """espeak's int16 samples for `text` and their sample rate (22050 Hz)."""
    import numpy as np

    chunks: list[np.ndarray] = []

    def collect(wav: Any, n: int, _events: int) -> int:
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = go on

    data = text.encode("utf-8")
    with _LOCK, _fresh_engine(collect) as (lib, rate):
        if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
            raise SelfsupError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
        lib.espeak_ng_SetRandSeed(0)  # the breath noise; espeak_Initialize seeds it with the time
        if lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
            raise SelfsupError(f"espeak-ng failed to speak {text!r} with voice {voice}")
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), rate


@functools.cache
def known_accents() -> tuple[str, ...]:
    """The English language names espeak's voices answer to (the `language` lines of lang/**/en*)."""
    files = (p for p in (_data_path() / "lang").rglob("en*") if p.is_file())
    return tuple(sorted({line.split()[1] for p in files for line in p.read_text("utf-8").splitlines()
                         if line.startswith("language ")}))


@functools.cache
def known_variants() -> tuple[str, ...]:
    """The speaker presets in espeak-ng-data/voices/!v (m1..m8, f1..f5 and named ones)."""
    return tuple(sorted(p.name for p in (_data_path() / "voices" / "!v").iterdir() if p.is_file()))


def _check_voice(accent: str, variant: str | None) -> None:
    # espeak itself silently ignores an unknown variant ("en-us+m9" speaks as en-us), so check here
    if accent not in known_accents():
        raise SelfsupError(f"unknown accent {accent!r}; known: {', '.join(known_accents())}")
    if variant is not None and variant not in known_variants():
        raise SelfsupError(f"unknown voice variant {variant!r}; known: {', '.join(known_variants())}")


def _trim(audio: np.ndarray, keep: int) -> np.ndarray:
    """`audio` without its leading and trailing silence (below -40 dB of the peak) beyond `keep` samples."""
    import numpy as np

    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max(initial=0.0) * 10 ** (_SILENCE_DB / 20))
    return audio[max(loud[0] - keep, 0): loud[-1] + 1 + keep] if loud.size else audio[:0]


def synthesize(text: str, voice: str, rate_wpm: int, sample_rate: int = 16000,
               keep_s: float = _KEEP_S) -> np.ndarray:
    """`text` spoken by `voice` ("accent+variant" or "accent") at `rate_wpm` words per minute: float32 mono in
    [-1, 1] at `sample_rate`, with `keep_s` seconds of silence left at each end, peak 0.9."""
    import numpy as np
    import soxr

    accent, _, variant = voice.partition("+")
    _check_voice(accent, variant or None)
    if not _MIN_WPM <= rate_wpm <= _MAX_WPM:
        raise SelfsupError(f"speaking rate must be {_MIN_WPM}..{_MAX_WPM} words per minute, got {rate_wpm}")
    samples, rate = _speak(text, voice, rate_wpm)
    audio = samples.astype(np.float32) / 32768.0
    if sample_rate != rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ").astype(np.float32)
    audio = _trim(audio, round(keep_s * sample_rate))
    if not audio.size:
        raise SelfsupError(f"espeak-ng made only silence of {text!r} with voice {voice}")
    return (audio * (_PEAK / np.abs(audio).max())).astype(np.float32)


class _Plan(NamedTuple):  # what a set is spoken with, checked: voices are (accent, variant) pairs
    words: Sequence[str]
    voices: list[tuple[str, str]]
    speeds: Mapping[str, int]
    sample_rate: int


def _plan(words: Sequence[str], accents: Sequence[str], variants: Sequence[str], speeds: Mapping[str, int],
          sample_rate: int) -> _Plan:
    for what, names in (("words", words), ("accents", accents), ("variants", variants), ("speeds", speeds)):
        if not names or len(set(names)) < len(names):
            raise SelfsupError(f"{what}: need at least one, each named once; got [{', '.join(names)}]")
    for name in [*words, *speeds]:
        if not _NAME.fullmatch(name):
            raise SelfsupError(f"{name!r}: words and speed names must be letters or digits (no spaces, no '_')")
    for accent, variant in itertools.product(accents, variants):
        _check_voice(accent, variant)
    for speed, wpm in speeds.items():
        if not isinstance(wpm, int) or not _MIN_WPM <= wpm <= _MAX_WPM:
            raise SelfsupError(f"speed {speed}: must be {_MIN_WPM}..{_MAX_WPM} words per minute, got {wpm!r}")
    if sample_rate < 8000:
        raise SelfsupError(f"sample rate must be at least 8000 Hz, got {sample_rate}")
    return _Plan(list(words), list(itertools.product(accents, variants)), dict(speeds), sample_rate)


@contextmanager
def _new_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out`, renamed to `out` on success; `out` must be new or an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose a new folder")
    with atomic_dir(out, replace=out.exists()) as tmp:
        yield tmp


def _save(folder: Path, name: str, audio: np.ndarray, sample_rate: int) -> str:
    import soundfile

    (folder / "clips").mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / "clips" / name, audio, sample_rate, format="FLAC", subtype="PCM_16")
    return f"clips/{name}"


def _write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_words(folder: Path, plan: _Plan, progress: Progress | None) -> None:
    jobs = list(itertools.product(plan.words, plan.voices, plan.speeds.items()))
    rows = []
    for done, (word, (accent, variant), (speed, wpm)) in enumerate(jobs, 1):
        audio = synthesize(word, f"{accent}+{variant}", wpm, plan.sample_rate)
        path = _save(folder, f"{word}_{accent}_{variant}_{speed}.flac", audio, plan.sample_rate)
        rows.append({"path": path, "word": word, "speaker": f"{accent}+{variant}", "accent": accent,
                     "variant": variant, "speed": speed, "seconds": f"{len(audio) / plan.sample_rate:.4f}"})
        if progress:
            progress("words", done, len(jobs))
    _write_manifest(folder / "manifest.csv", rows)


def _write_sentences(folder: Path, plan: _Plan, n_sentences: int, min_words: int, max_words: int, pause_s: float,
                     seed: int, progress: Progress | None) -> None:
    import numpy as np

    rng, rate = np.random.default_rng(seed), plan.sample_rate
    spoken = functools.cache(lambda word, voice, wpm: synthesize(word, voice, wpm, rate, keep_s=0.0))
    edge, pause = np.zeros(round(0.1 * rate), np.float32), np.zeros(round(pause_s * rate), np.float32)
    rows = []
    for i in range(n_sentences):
        size = int(rng.integers(min_words, max_words + 1))
        chosen = [plan.words[j] for j in rng.integers(len(plan.words), size=size)]
        accent, variant = plan.voices[int(rng.integers(len(plan.voices)))]
        speed = list(plan.speeds)[int(rng.integers(len(plan.speeds)))]
        pieces, alignment, at = [edge], [], len(edge)
        for k, word in enumerate(chosen):  # [edge, word, pause, word, ..., word, edge]
            clip = spoken(word, f"{accent}+{variant}", plan.speeds[speed])
            alignment.append([word, round(at / rate, 6), round((at + len(clip)) / rate, 6)])
            pieces += [clip, pause if k < len(chosen) - 1 else edge]
            at += len(clip) + len(pieces[-1])
        audio = np.concatenate(pieces)
        path = _save(folder, f"s{i:04d}_{accent}_{variant}_{speed}.flac", audio, rate)
        rows.append({"path": path, "transcript": " ".join(chosen), "speaker": f"{accent}+{variant}",
                     "accent": accent, "variant": variant, "speed": speed,
                     "seconds": f"{len(audio) / rate:.4f}", "alignment": json.dumps(alignment)})
        if progress:
            progress("sentences", i + 1, n_sentences)
    _write_manifest(folder / "manifest.csv", rows)


def make_word_set(out: Path, words: Sequence[str] = COMMAND_WORDS, accents: Sequence[str] = ACCENTS,
                  variants: Sequence[str] = VARIANTS, speeds: Mapping[str, int] = SPEEDS, sample_rate: int = 16000,
                  sentences: int = 0, seed: int = 0, progress: Progress | None = None) -> Path:
    """Every word in every voice (accent x variant) at every speed into the new folder `out` (and `sentences`
    sentences of default length into `out/sentences`). Returns `out/manifest.csv`."""
    out, plan = Path(out), _plan(words, accents, variants, speeds, sample_rate)
    if sentences < 0:
        raise SelfsupError(f"number of sentences must be >= 0, got {sentences}")
    with _new_folder(out) as tmp:
        _write_words(tmp, plan, progress)
        if sentences:
            _write_sentences(tmp / "sentences", plan, sentences, 2, 4, 0.25, seed, progress)
    return out / "manifest.csv"


def make_sentence_set(out: Path, n_sentences: int, words: Sequence[str] = COMMAND_WORDS,
                      accents: Sequence[str] = ACCENTS, variants: Sequence[str] = VARIANTS,
                      speeds: Mapping[str, int] = SPEEDS, min_words: int = 2, max_words: int = 4,
                      pause_s: float = 0.25, seed: int = 0, sample_rate: int = 16000,
                      progress: Progress | None = None) -> Path:
    """`n_sentences` random strings of `words` (`min_words`..`max_words` each, one random voice and speed per
    sentence), every word spoken alone and joined by `pause_s` of silence (0.1 s at both ends), into the new
    folder `out`. Returns `out/manifest.csv`, whose `alignment` gives each word's exact start and end."""
    out, plan = Path(out), _plan(words, accents, variants, speeds, sample_rate)
    if n_sentences < 1 or not 1 <= min_words <= max_words or pause_s < 0:
        raise SelfsupError(f"need n_sentences >= 1, 1 <= min_words <= max_words, pause_s >= 0: got {n_sentences}, "
                           f"{min_words}..{max_words}, {pause_s}")
    with _new_folder(out) as tmp:
        _write_sentences(tmp, plan, n_sentences, min_words, max_words, pause_s, seed, progress)
    return out / "manifest.csv"


def embedded_speech(name: str) -> Path:
    """The folder of a shipped speech set ("speech-words" or "speech-sentences"), with its manifest.csv."""
    if name not in EMBEDDED:
        raise SelfsupError(f"unknown embedded speech set {name!r}; known: {', '.join(EMBEDDED)}")
    if not (EMBEDDED[name] / "manifest.csv").is_file():
        raise SelfsupError(f"{EMBEDDED[name]}: the shipped speech set is missing (a broken install; reinstall)")
    return EMBEDDED[name]

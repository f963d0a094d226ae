"""Regenerate the shipped speech sets, src/selfsup/assets/speech_words and speech_sentences, with the exact
parameters below (eSpeak NG via selfsup.data.speech_synth; deterministic, so a rerun gives the same samples),
then check them: word durations 0.2-1.5 s, no silent clip, a distinct pitch per voice variant, and words that
sound alike across voices (1-nearest-neighbour on log spectrograms, each speaker held out in turn).

    python bench/make_speech_assets.py [--check-only]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup.data.speech_synth import COMMAND_WORDS, EMBEDDED, make_sentence_set, make_word_set  # noqa: E402

# 2 accents x 4 variants = 8 speakers, 3 speeds: 240 word clips and 100 sentences fit the 6 MB budget
ACCENTS = ["en-us", "en-gb-scotland"]
VARIANTS = ["m1", "m7", "f1", "f5"]  # median F0 ~87, ~98, ~167, ~191 Hz; m7 darkest, f5 brightest
SPEEDS = {"slow": 130, "normal": 165, "fast": 200}
N_SENTENCES, MIN_WORDS, MAX_WORDS, PAUSE_S, SEED = 100, 2, 4, 0.25, 0
SAMPLE_RATE = 16000


def regenerate() -> None:
    for name, make in (("speech-words", _make_words), ("speech-sentences", _make_sentences)):
        final = EMBEDDED[name]
        fresh = final.with_name(final.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        make(fresh)
        shutil.rmtree(final, ignore_errors=True)
        fresh.rename(final)


def _make_words(out: Path) -> None:
    make_word_set(out, COMMAND_WORDS, ACCENTS, VARIANTS, SPEEDS, sample_rate=SAMPLE_RATE)


def _make_sentences(out: Path) -> None:
    make_sentence_set(out, N_SENTENCES, COMMAND_WORDS, ACCENTS, VARIANTS, SPEEDS, min_words=MIN_WORDS,
                      max_words=MAX_WORDS, pause_s=PAUSE_S, seed=SEED, sample_rate=SAMPLE_RATE)


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median autocorrelation pitch (60-400 Hz) over the voiced 40 ms frames."""
    frame, pitches = int(0.04 * sample_rate), []
    for start in range(0, len(audio) - frame, frame // 2):
        window = audio[start:start + frame] * np.hanning(frame)
        if np.sqrt(np.mean(window ** 2)) < 0.05:
            continue
        corr = np.correlate(window, window, "full")[frame - 1:]
        lo, hi = sample_rate // 400, sample_rate // 60
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] > 0.4 * corr[0]:
            pitches.append(sample_rate / lag)
    return float(np.median(pitches)) if pitches else float("nan")


def spectral_shape(audio: np.ndarray, bands: int = 24, steps: int = 12) -> np.ndarray:
    """A unit vector: log energy in `bands` log-spaced bands (25 ms frames) at `steps` evenly spaced times."""
    frames = np.stack([audio[i:i + 400] * np.hanning(400) for i in range(0, len(audio) - 400, 160)])
    power = np.abs(np.fft.rfft(frames, axis=1))
    edges = np.geomspace(2, power.shape[1], bands + 1).astype(int)
    logs = np.log(np.stack([power[:, a:b + 1].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1) + 1e-4)
    vector = logs[np.linspace(0, len(logs) - 1, steps).round().astype(int)].ravel()
    return (vector - vector.mean()) / np.linalg.norm(vector - vector.mean())


def held_out_speaker_accuracy(shapes: np.ndarray, words: np.ndarray, speakers: np.ndarray) -> float:
    """Mean over speakers of 1-NN word accuracy on that speaker's clips, matched against all other speakers."""
    scores = []
    for speaker in np.unique(speakers):
        test = speakers == speaker
        nearest = (shapes[test] @ shapes[~test].T).argmax(1)
        scores.append(float(np.mean(words[~test][nearest] == words[test])))
    return float(np.mean(scores))


def check() -> None:
    words = EMBEDDED["speech-words"]
    rows = list(csv.DictReader(open(words / "manifest.csv", encoding="utf-8")))
    pitch: dict[str, list[float]] = {}
    shapes = []
    for row in rows:
        audio, rate = soundfile.read(words / row["path"], dtype="float32")
        assert rate == SAMPLE_RATE and audio.ndim == 1, row["path"]
        assert 0.2 <= len(audio) / rate <= 1.5, (row["path"], len(audio) / rate)
        assert np.abs(audio).max() > 0.5, f"{row['path']}: silent"
        pitch.setdefault(row["variant"], []).append(median_f0(audio, rate))
        shapes.append(spectral_shape(audio))
    seconds = [float(r["seconds"]) for r in rows]
    print(f"{len(rows)} word clips, {len({r['speaker'] for r in rows})} speakers, "
          f"{min(seconds):.2f}-{max(seconds):.2f} s (mean {np.mean(seconds):.2f})")
    for variant, values in pitch.items():
        print(f"  variant {variant}: median F0 {np.nanmedian(values):.0f} Hz")
    f0s = sorted(np.nanmedian(v) for v in pitch.values())
    assert min(np.diff(f0s)) > 5, f"variants too alike in pitch: {f0s}"
    accuracy = held_out_speaker_accuracy(np.stack(shapes), np.array([r["word"] for r in rows]),
                                         np.array([r["speaker"] for r in rows]))
    print(f"  word 1-NN accuracy on a held-out speaker: {accuracy:.1%} (chance {1 / len(COMMAND_WORDS):.0%})")
    assert accuracy > 0.8, "words do not sound alike across voices"
    sentences = EMBEDDED["speech-sentences"]
    rows = list(csv.DictReader(open(sentences / "manifest.csv", encoding="utf-8")))
    print(f"{len(rows)} sentences, {sum(float(r['seconds']) for r in rows):.0f} s")
    du = subprocess.run(["du", "-sh", str(words), str(sentences)], capture_output=True, text=True).stdout
    print(du.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check-only", action="store_true", help="check the shipped sets, regenerate nothing")
    if not ap.parse_args().check_only:
        regenerate()
    check()


if __name__ == "__main__":
    main()

"""`selfsup convert`: one-shot voice conversion with a trained AdaIN-VC model (objectives/voice_conversion.py) —
the content code of one clip, the speaker vector of another, decoded to log-mel frames and turned into a
waveform by Griffin-Lim (librosa): the mel power is mapped back to a linear power spectrogram by non-negative
least squares on the very filter bank `data.audio_features.log_mel` uses, then the phase is estimated.

The output is a 16-bit PCM WAV at the model's sample rate, written atomically; an existing file is refused.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.data.audio_features import FrameSpec, log_mel
from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_write_bytes

LIBROSA_HINT = "Griffin-Lim needs librosa: pip install 'selfsup[vc]' (or pip install librosa)"


def require_librosa() -> Any:
    try:
        import librosa
    except ImportError:
        raise SelfsupError(LIBROSA_HINT) from None
    return librosa


def mel_basis(spec: FrameSpec) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels): the filter bank of `log_mel` (transformers' HTK mel filters, 20 Hz to Nyquist)."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=spec.n_fft // 2 + 1, num_mel_filters=spec.n_mels, min_frequency=20.0,
                           max_frequency=spec.sample_rate / 2, sampling_rate=spec.sample_rate,
                           mel_scale="htk").astype(np.float32)


def mel_to_audio(frames: np.ndarray, spec: FrameSpec, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """(T, n_mels) log-mel frames (log(power + 1e-6), as `log_mel` makes them) -> ((T - 1) * hop,) float32
    waveform: non-negative least-squares inversion of the mel filter bank, then `n_iter` Griffin-Lim iterations
    (a seeded random initial phase, so the result is a function of the frames)."""
    librosa = require_librosa()
    mel_power = np.maximum(np.exp(np.asarray(frames, np.float64)) - 1e-6, 0.0).T
    power = librosa.util.nnls(mel_basis(spec).T.astype(np.float64), mel_power)
    audio = librosa.griffinlim(np.sqrt(np.maximum(power, 0.0)), n_iter=n_iter, hop_length=spec.hop_length,
                               win_length=spec.win_length, n_fft=spec.n_fft, window="hann", center=True,
                               length=(len(frames) - 1) * spec.hop_length, random_state=seed)
    return audio.astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV; a waveform whose peak exceeds 0.99 is scaled down to it (no clipping)."""
    import soundfile as sf

    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    audio = audio * (0.99 / peak) if peak > 0.99 else audio
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def read_clip(path: str | Path, spec: FrameSpec, what: str) -> np.ndarray:
    """One audio file -> mono samples at the spec's rate (the usual one-line errors: missing, empty, corrupt)."""
    from selfsup.data.audio import AUDIO_SUFFIXES, AudioDataConfig, decode, expand_sources

    p = Path(path)
    if not p.is_file():
        raise SelfsupError(f"{what} {p}: no such audio file")
    if p.suffix.lower() not in AUDIO_SUFFIXES:
        raise SelfsupError(f"{what} {p}: unsupported audio format {p.suffix or '(none)'} (WAV, FLAC, OGG)")
    (clip,) = expand_sources([str(p)], AudioDataConfig(sample_rate=spec.sample_rate, label_column=None))
    samples = decode(clip, spec.sample_rate)
    if len(samples) < spec.n_fft:
        raise SelfsupError(f"{what} {p}: too short ({len(samples)} samples; at least {spec.n_fft})")
    return samples


def check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".wav":
        raise SelfsupError(f"--out {out}: must name a .wav file")
    if out.exists():
        raise SelfsupError(f"--out {out}: already exists (choose a new file name)")
    return out


def convert_voice(model: str | Path, content: str | Path, speaker: str | Path, out: str | Path,
                  n_iter: int = 32) -> dict[str, Any]:
    """Say `content`'s words in `speaker`'s voice into the new WAV file `out`; returns what was done."""
    from selfsup.objectives.voice_conversion import load_vc_model

    out = check_out(out)
    if n_iter < 1:
        raise SelfsupError(f"--iterations: must be >= 1, got {n_iter}")
    vc = load_vc_model(model)
    spec = vc.front.spec
    require_librosa()
    content_audio, speaker_audio = read_clip(content, spec, "--content"), read_clip(speaker, spec, "--speaker")
    frames = vc.convert(log_mel(content_audio, spec), log_mel(speaker_audio, spec))
    audio = mel_to_audio(frames, spec, n_iter)
    atomic_write_bytes(out, wav_bytes(audio, spec.sample_rate))
    return {"out": str(out), "seconds": len(audio) / spec.sample_rate,
            "content_seconds": len(content_audio) / spec.sample_rate, "frames": len(frames),
            "sample_rate": spec.sample_rate}

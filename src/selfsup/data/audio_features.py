"""Pure audio transforms: mono mix-down, resampling (soxr), log-mel filterbanks and MFCCs, normalization, and
frame labels from word alignments. No torchaudio: the mel filterbank is transformers' `audio_utils`, the STFT
is `torch.stft`, the DCT is scipy's; every function is deterministic and stateless.

Frames follow the usual speech front end: 25 ms Hann windows every 10 ms (100 frames/s), 80 mel bands from
20 Hz to Nyquist on the HTK scale, log(power + 1e-6).
"""
from __future__ import annotations

import dataclasses
import json
from functools import lru_cache

import numpy as np


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """The filterbank front end: window and hop in milliseconds, mel bands, MFCC coefficients."""

    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 80
    n_mfcc: int = 13

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, channels) -> (N,) float32, channels averaged."""
    x = np.asarray(samples, dtype=np.float32)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (the SoX resampler, high quality)."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(samples, dtype=np.float32), from_rate, to_rate, quality="HQ").astype(np.float32)


@lru_cache(maxsize=8)
def _mel_matrix(spec: FrameSpec) -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=spec.n_fft // 2 + 1, num_mel_filters=spec.n_mels, min_frequency=20.0,
                           max_frequency=spec.sample_rate / 2, sampling_rate=spec.sample_rate,
                           mel_scale="htk").astype(np.float32)


def num_frames(n_samples: int, spec: FrameSpec) -> int:
    """Frames of a centered STFT over n_samples (one per hop, the last one padded)."""
    return n_samples // spec.hop_length + 1


def log_mel(samples: np.ndarray, spec: FrameSpec = FrameSpec()) -> np.ndarray:
    """(N,) float waveform at spec.sample_rate -> (frames, n_mels) float32 log mel power."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    window = torch.hann_window(spec.win_length)
    stft = torch.stft(x, n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length, window=window,
                      center=True, pad_mode="reflect" if len(x) > spec.n_fft // 2 else "constant",
                      return_complex=True)
    power = stft.abs().pow(2).t().numpy()  # (frames, freq)
    return np.log(power @ _mel_matrix(spec) + 1e-6).astype(np.float32)


def mfcc(samples: np.ndarray, spec: FrameSpec = FrameSpec()) -> np.ndarray:
    """(frames, n_mfcc) cepstral coefficients: orthonormal DCT-II of the log mel energies (HuBERT's first
    clustering targets use MFCCs)."""
    from scipy.fft import dct

    return dct(log_mel(samples, spec), type=2, axis=1, norm="ortho")[:, :spec.n_mfcc].astype(np.float32)


def with_deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Append first and second time derivatives (regression over +-width frames), as in HTK front ends."""
    def delta(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, ((width, width), (0, 0)), mode="edge")
        steps = range(1, width + 1)  # integer offsets (they index the frames)
        num = sum(k * (padded[width + k:len(x) + width + k] - padded[width - k:len(x) + width - k]) for k in steps)
        return num / (2.0 * sum(k * k for k in steps))

    d1 = delta(features)
    return np.concatenate([features, d1, delta(d1)], axis=1).astype(np.float32)


def normalize_utterance(features: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Per-utterance mean and variance normalization over time (CMVN); a waveform is scaled to zero mean and
    unit variance, as Wav2Vec2FeatureExtractor does (the same eps, 1e-7: a quiet clip still gets unit variance)."""
    x = np.asarray(features, dtype=np.float32)
    return (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)


def frame_labels(alignment: str | list, n_frames: int, frame_rate: float, silence: str = "<sil>") -> list[str]:
    """One label per frame from `[[word, start_s, end_s], ...]`: the word whose span holds the frame's centre,
    `silence` elsewhere."""
    spans = json.loads(alignment) if isinstance(alignment, str) else alignment
    labels = [silence] * n_frames
    for word, start, end in spans:
        first, last = int(np.ceil(float(start) * frame_rate)), int(np.floor(float(end) * frame_rate))
        for t in range(max(0, first), min(n_frames, last + 1)):
            labels[t] = str(word)
    return labels

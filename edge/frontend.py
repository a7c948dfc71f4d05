"""The one feature frontend: fixed-size FFT framing → log-mel, MFCC or LPCC.

The same code runs on the device (streaming, one chunk at a time) and in the toolchain
(batch, whole clips). Both paths share `_features_from_frames` and the same stateful
per-frame recursions (noise tracking, mean normalization), so their output is the same.

The default configuration reproduces the mel front end that Google's speech embedding
expects: 16 kHz, 25 ms Hann window in a 512-point rFFT, 10 ms hop, 32 Slaney mel bands from
60 to 3800 Hz, 10·log10 power, samples on the int16 scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

KINDS = ("logmel", "mfcc", "lpcc")


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate_hz: int = 16000
    window_samples: int = 400
    """25 ms analysis window (Hann), centred inside the FFT frame."""
    hop_samples: int = 160
    """10 ms between frames."""
    fft_size: int = 512
    kind: str = "logmel"
    """One of logmel, mfcc, lpcc."""
    mel_bands: int = 32
    mel_low_hz: float = 60.0
    mel_high_hz: float = 3800.0
    log_floor: float = 1e-10
    """Power floor before 10·log10 (the embedding was trained with this amin)."""
    dither_rms: float = 1.0
    """Dither, in int16 units, added as its expected power to every FFT bin: digital
    silence then sits near a realistic noise floor instead of -100 dB. Deterministic, so
    streaming and batch agree and training matches the device."""
    preemphasis: float = 0.0
    mfcc_count: int = 13
    mfcc_deltas: bool = False
    """Causal deltas (c[t] - c[t-2]) / 2, so streaming needs no look-ahead."""
    lpc_order: int = 12
    lpcc_count: int = 13
    denoise: bool = False
    """Noise-floor tracking per mel band and a Wiener-style gain before the log."""
    denoise_floor_rise: float = 1.002
    """Per-frame factor by which the noise floor may rise (minimum tracking)."""
    denoise_min_gain: float = 0.1
    mean_norm: bool = False
    """Running feature-mean subtraction (channel equalization, CMN)."""
    mean_norm_time_s: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"frontend kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 0 < self.window_samples <= self.fft_size:
            raise ValueError("frontend window_samples must be in (0, fft_size]")
        if not 0 < self.hop_samples <= self.window_samples:
            raise ValueError("frontend hop_samples must be in (0, window_samples]")
        if not 0 <= self.mel_low_hz < self.mel_high_hz <= self.sample_rate_hz / 2:
            raise ValueError("frontend mel range must satisfy 0 <= low < high <= rate/2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrontendConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown frontend key {unknown[0]!r}")
        return cls(**data)

    @property
    def hash(self) -> str:
        """Stable across runs and machines: sha256 of the canonical JSON, 16 hex digits."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def feature_count(self) -> int:
        if self.kind == "logmel":
            return self.mel_bands
        base = self.mfcc_count if self.kind == "mfcc" else self.lpcc_count
        return base * (2 if self.kind == "mfcc" and self.mfcc_deltas else 1)

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.hop_samples


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / log_step, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * f_sp)


def mel_filterbank(cfg: FrontendConfig) -> np.ndarray:
    """Triangular Slaney-normalized filters, shape (fft_size // 2 + 1, mel_bands)."""
    fft_hz = np.linspace(0, cfg.sample_rate_hz / 2, cfg.fft_size // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(cfg.mel_low_hz), hz_to_mel(cfg.mel_high_hz), cfg.mel_bands + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II, shape (n_in, n_out)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    mat[:, 0] /= np.sqrt(2.0)
    return mat.astype(np.float32)


def levinson_durbin(autocorr: np.ndarray, order: int) -> np.ndarray:
    """LPC coefficients a[1..order] (A(z) = 1 + sum a_k z^-k) for each row of autocorr."""
    n = autocorr.shape[0]
    a = np.zeros((n, order + 1), dtype=np.float64)
    a[:, 0] = 1.0
    err = autocorr[:, 0].astype(np.float64) + 1e-9
    for i in range(1, order + 1):
        acc = np.einsum("nj,nj->n", a[:, :i], autocorr[:, i:0:-1])
        k = -acc / err
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
        err = err * (1.0 - k * k)
    return a[:, 1:]


def lpc_to_cepstrum(lpc: np.ndarray, count: int) -> np.ndarray:
    """Cepstrum of the all-pole model 1/A(z); c[0] is left out (gain)."""
    n, order = lpc.shape
    alpha = -lpc
    c = np.zeros((n, count + 1))
    for m in range(1, count + 1):
        acc = alpha[:, m - 1].copy() if m <= order else np.zeros(n)
        for k in range(max(1, m - order), m):
            acc += (k / m) * c[:, k] * alpha[:, m - k - 1]
        c[:, m] = acc
    return c[:, 1:].astype(np.float32)


class Frontend:
    """Samples in, feature frames out. `process` streams; `compute` does a whole clip.

    Frame t covers samples [t*hop, t*hop + fft_size); the Hann window of
    `window_samples` sits centred in it.
    """

    def __init__(self, cfg: FrontendConfig | None = None) -> None:
        self.cfg = cfg or FrontendConfig()
        c = self.cfg
        offset = (c.fft_size - c.window_samples) // 2
        hann = np.hanning(c.window_samples + 1)[:-1]  # periodic Hann
        self.window = np.zeros(c.fft_size, dtype=np.float32)
        self.window[offset : offset + c.window_samples] = hann
        self.melfb = mel_filterbank(c)
        self.dither_power = np.float32(c.dither_rms**2 * float(np.sum(self.window**2)))
        self.dct = dct_matrix(c.mel_bands, c.mfcc_count)
        self._buffer = np.zeros(c.fft_size + 64 * c.hop_samples, dtype=np.float32)
        bin_hz = np.arange(c.fft_size // 2 + 1) * c.sample_rate_hz / c.fft_size
        self._vad_bins = np.flatnonzero((bin_hz >= 200) & (bin_hz <= 4000))
        self.energy_db = np.zeros(0, dtype=np.float32)
        self.flatness = np.zeros(0, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._filled = 0
        self._prev_sample = np.float32(0.0)
        self._noise: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._history = np.zeros((2, self.cfg.mfcc_count), dtype=np.float32)

    # -- streaming -----------------------------------------------------------------------
    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed any number of samples (int16 or float on the int16 scale); returns the
        feature frames completed by them, shape (n, feature_count)."""
        c = self.cfg
        x = np.asarray(samples, dtype=np.float32)
        outputs, energies, flatness = [], [], []
        start = 0
        while start < len(x):
            room = len(self._buffer) - self._filled
            take = min(room, len(x) - start)
            self._buffer[self._filled : self._filled + take] = x[start : start + take]
            self._filled += take
            start += take
            n_frames = 0 if self._filled < c.fft_size else 1 + (self._filled - c.fft_size) // c.hop_samples
            if n_frames:
                frames = self._frame_view(self._buffer[: self._filled], n_frames)
                outputs.append(self._features_from_frames(frames))
                energies.append(self.energy_db)
                flatness.append(self.flatness)
                consumed = n_frames * c.hop_samples
                keep = self._filled - consumed
                self._buffer[:keep] = self._buffer[consumed : self._filled]
                self._filled = keep
        if not outputs:
            self.energy_db = self.flatness = np.zeros(0, dtype=np.float32)
            return np.zeros((0, c.feature_count), dtype=np.float32)
        if len(outputs) == 1:
            return outputs[0]
        self.energy_db, self.flatness = np.concatenate(energies), np.concatenate(flatness)
        return np.concatenate(outputs)

    # -- batch ---------------------------------------------------------------------------
    def compute(self, samples: np.ndarray) -> np.ndarray:
        """Features for a whole clip from a fresh state; equals streaming the same samples."""
        self.reset()
        x = np.asarray(samples, dtype=np.float32)
        n_frames = 0 if len(x) < self.cfg.fft_size else 1 + (len(x) - self.cfg.fft_size) // self.cfg.hop_samples
        if n_frames == 0:
            return np.zeros((0, self.cfg.feature_count), dtype=np.float32)
        out = self._features_from_frames(self._frame_view(x, n_frames))
        self.reset()
        return out

    # -- shared --------------------------------------------------------------------------
    def _frame_view(self, x: np.ndarray, n_frames: int) -> np.ndarray:
        c = self.cfg
        stride = x.strides[0]
        return np.lib.stride_tricks.as_strided(
            x, shape=(n_frames, c.fft_size), strides=(c.hop_samples * stride, stride), writeable=False
        )

    def power_spectrum(self, frames: np.ndarray) -> np.ndarray:
        c = self.cfg
        if c.preemphasis:
            frames = np.concatenate([frames[:, :1], frames[:, 1:] - c.preemphasis * frames[:, :-1]], axis=1)
        spec = np.fft.rfft(frames * self.window, n=c.fft_size)
        power = spec.real**2 + spec.imag**2
        return (power + self.dither_power).astype(np.float32)

    def _features_from_frames(self, frames: np.ndarray) -> np.ndarray:
        c = self.cfg
        power = self.power_spectrum(frames)
        # Per-frame loudness and spectral flatness of the speech band, for the VAD.
        band = np.maximum(power[:, self._vad_bins], 1e-6)
        self.energy_db = 10.0 * np.log10(band.sum(axis=1))
        self.flatness = np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1)
        if c.kind == "lpcc":
            autocorr = np.fft.irfft(power, n=c.fft_size)[:, : c.lpc_order + 1]
            feats = lpc_to_cepstrum(levinson_durbin(autocorr, c.lpc_order), c.lpcc_count)
            return self._mean_norm(feats)
        mel = power @ self.melfb
        if c.denoise:
            mel = self._denoise(mel)
        logmel = 10.0 * np.log10(np.maximum(mel, c.log_floor))
        if c.kind == "logmel":
            return self._mean_norm(logmel.astype(np.float32))
        cep = (logmel @ self.dct).astype(np.float32)
        cep = self._mean_norm(cep)
        if not c.mfcc_deltas:
            return cep
        hist = np.concatenate([self._history, cep])
        deltas = (hist[2:] - hist[:-2]) / 2.0
        self._history = hist[-2:].copy()
        return np.concatenate([cep, deltas], axis=1).astype(np.float32)

    def _denoise(self, mel: np.ndarray) -> np.ndarray:
        """Minimum-tracking noise floor per band, Wiener gain max(1 - N/P, g_min)."""
        c = self.cfg
        out = np.empty_like(mel)
        noise = mel[0].copy() if self._noise is None else self._noise
        for t in range(len(mel)):
            noise = np.minimum(noise * c.denoise_floor_rise, mel[t])
            noise = np.maximum(noise, self.dither_power * 1e-3)
            gain = np.maximum(1.0 - noise / np.maximum(mel[t], 1e-12), c.denoise_min_gain)
            out[t] = mel[t] * gain
        self._noise = noise
        return out

    def _mean_norm(self, feats: np.ndarray) -> np.ndarray:
        c = self.cfg
        if not c.mean_norm:
            return feats
        alpha = np.float32(1.0 / (c.mean_norm_time_s * c.frame_rate_hz))
        out = np.empty_like(feats)
        mean = feats[0].copy() if self._mean is None else self._mean
        for t in range(len(feats)):
            mean = mean + alpha * (feats[t] - mean)
            out[t] = feats[t] - mean
        self._mean = mean
        return out

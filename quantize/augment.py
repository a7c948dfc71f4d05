"""Augmentation aimed at the synthetic-to-real gap, and synthetic noises.

Every function takes a seeded numpy Generator, so a corpus is reproducible from its recipe.
Audio is float32 on the int16 scale at 16 kHz.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from math import gcd

import numpy as np
from scipy import signal

RATE = 16000


@dataclass(frozen=True)
class AugmentRecipe:
    speed_range: tuple[float, float] = (0.88, 1.12)
    """Resampling factor: tempo, pitch and vocal-tract length move together."""
    noise_prob: float = 0.8
    snr_db_range: tuple[float, float] = (5.0, 30.0)
    reverb_prob: float = 0.5
    rt60_s_range: tuple[float, float] = (0.1, 0.7)
    bandlimit_prob: float = 0.35
    """Telephone band (300-3400 Hz, through 8 kHz) or a random cheap-microphone tilt."""
    level_dbfs_range: tuple[float, float] = (-38.0, -8.0)
    clip_prob: float = 0.05
    vtlp_prob: float = 0.0
    """Vocal-tract length perturbation at the same tempo (see `vocal_tract`)."""
    vtlp_range: tuple[float, float] = (0.87, 1.15)
    onset_cut_prob: float = 0.0
    """Probability of cutting the start of the spoken word (`onset_cut_ms`), as a recording
    trimmed tightly at its energy, or a soft onset lost in noise, leaves it."""
    onset_cut_ms: tuple[float, float] = (20.0, 80.0)
    drr_db_range: tuple[float, float] | None = None
    """Direct-to-reverberant ratio (dB) of the simulated rooms, drawn per clip; None: every room's
    tail at 0.3 of the direct path's amplitude (+10.5 dB, a talker close to the microphone)."""
    level_of: str = "clip"
    """What level_dbfs_range measures: "clip", the whole clip, mostly silence (the spoken part came
    out 7-12 dB louder than drawn, and a third of clips, held-out ones too, were clipped), or
    "speech", the spoken part, as a microphone's level meter reads it (`speech_levels`)."""

    def to_dict(self) -> dict:
        # Without VTLP or speech levels the recipe reads as it did before they existed:
        # feature-cache keys and manifests of earlier builds stay valid.
        out = asdict(self)
        if not self.vtlp_prob:
            del out["vtlp_prob"], out["vtlp_range"]
        if self.level_of == "clip":
            del out["level_of"]
        if self.drr_db_range is None:
            del out["drr_db_range"]
        if not self.onset_cut_prob:
            del out["onset_cut_prob"], out["onset_cut_ms"]
        return out

    def heldout(self) -> AugmentRecipe:
        """The held-out voices' recipe (MILD), levelled the way this training recipe is."""
        return MILD if self.level_of == "clip" else replace(MILD, level_of="speech",
                                                             level_dbfs_range=MILD_SPEECH_LEVEL_DBFS)


SPEECH_LEVEL_DBFS = (-45.0, -15.0)
"""Speech levels drawn with level_of = "speech": real FSDD digits lie at -46 to -18 dBFS (5th to
95th percentile); -15 leaves loud talkers room before their peaks clip."""
MILD_SPEECH_LEVEL_DBFS = (-40.0, -18.0)


def speech_levels(recipe: AugmentRecipe) -> AugmentRecipe:
    """`recipe` with its level drawn for the spoken part (see AugmentRecipe.level_of)."""
    return replace(recipe, level_of="speech", level_dbfs_range=SPEECH_LEVEL_DBFS)


MILD = AugmentRecipe(speed_range=(0.95, 1.05), noise_prob=0.7, snr_db_range=(15.0, 35.0), reverb_prob=0.2,
                     rt60_s_range=(0.1, 0.4), bandlimit_prob=0.2, level_dbfs_range=(-32.0, -12.0), clip_prob=0.0)
"""For held-out voices: a realistic room rather than the training torture, so the held-out
figure measures how well the model generalizes to a new voice."""


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (shorter, higher) by resampling."""
    up = 100
    down = int(round(100 * factor))
    g = gcd(up, down)
    return signal.resample_poly(x, up // g, down // g).astype(np.float32)


def vocal_tract(x: np.ndarray, alpha: float) -> np.ndarray:
    """Every frequency times `alpha` (formants and pitch, as a shorter or longer vocal tract
    would move them) at the same duration: a phase vocoder moves each STFT bin's magnitude to
    alpha times its frequency and advances its phase at that new frequency, hop by hop."""
    n_fft, hop = 512, 128
    _, _, z = signal.stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary="even")
    bins = np.arange(z.shape[0])
    src = bins / alpha
    lo = np.clip(np.floor(src).astype(int), 0, len(bins) - 1)
    frac = np.clip(src - lo, 0.0, 1.0)[:, None]
    hi = np.clip(lo + 1, 0, len(bins) - 1)
    mag = np.abs(z)
    new_mag = (1 - frac) * mag[lo] + frac * mag[hi]
    new_mag[src > len(bins) - 1] = 0.0
    # Instantaneous frequency of each source bin (radians per hop), scaled by alpha.
    expected = 2 * np.pi * bins * hop / n_fft
    dphi = np.diff(np.angle(z), axis=1, prepend=0.0) - expected[:, None]
    dphi = expected[:, None] + (dphi + np.pi) % (2 * np.pi) - np.pi
    nearest = np.clip(np.rint(src).astype(int), 0, len(bins) - 1)
    phase = np.cumsum(alpha * dphi[nearest], axis=1)
    _, y = signal.istft(new_mag * np.exp(1j * phase), nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    return y[: len(x)].astype(np.float32)


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
    shape = {"pink": 1 / np.sqrt(f), "brown": 1 / f, "blue": np.sqrt(f)}[kind]
    out = np.fft.irfft(spec * shape, n).astype(np.float32)
    return out / (np.std(out) + 1e-9)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.choice([50.0, 60.0])
    t = np.arange(n) / RATE
    out = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 6))
    return (out + 0.1 * rng.standard_normal(n)).astype(np.float32)


def make_noise(n: int, rng: np.random.Generator, babble: list[np.ndarray] | None = None) -> np.ndarray:
    """Unit-RMS noise of length n: white, pink, brown, hum, or babble from synthetic speech."""
    kinds = ["white", "pink", "brown", "hum"] + (["babble", "babble"] if babble else [])
    kind = kinds[rng.integers(len(kinds))]
    if kind == "hum":
        out = hum(n, rng)
    elif kind == "babble":
        out = np.zeros(n, dtype=np.float32)
        for _ in range(rng.integers(3, 7)):
            clip = babble[rng.integers(len(babble))].astype(np.float32)
            reps = int(np.ceil(n / max(len(clip), 1))) + 1
            long = np.tile(clip, reps)
            off = rng.integers(0, max(1, len(long) - n))
            out += long[off : off + n] / (np.std(clip) + 1e-9)
    else:
        out = colored_noise(n, kind, rng)
    return out / (np.sqrt(np.mean(out**2)) + 1e-9)


def room_impulse(rng: np.random.Generator, rt60_s: float, tail_gain: float = 0.3) -> np.ndarray:
    """Exponentially decaying noise tail with a direct path: a cheap simulated room, its tail's
    amplitude `tail_gain` times the direct path's (0.3: a direct-to-reverberant ratio of +10.5 dB)."""
    n = int(rt60_s * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)
    tail = signal.lfilter([1.0], [1.0, -0.6], tail)  # rooms absorb highs more than lows
    ir = np.zeros(n, dtype=np.float32)
    ir[0] = 1.0
    ir += (tail_gain * tail / (np.sqrt(np.sum(tail**2)) + 1e-9)).astype(np.float32)
    return ir


def bandlimit(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        # Telephone / 8 kHz recording: through 8 kHz and back, plus a 300 Hz high-pass.
        y = signal.resample_poly(signal.resample_poly(x, 1, 2), 2, 1)[: len(x)]
        sos = signal.butter(2, 300, "highpass", fs=RATE, output="sos")
        return signal.sosfilt(sos, y).astype(np.float32)
    # Cheap microphone: random high-pass and low-pass corners.
    lo = rng.uniform(80, 400)
    hi = rng.uniform(3500, 7500)
    sos = signal.butter(2, [lo, hi], "bandpass", fs=RATE, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def set_level(x: np.ndarray, dbfs: float, measured: np.ndarray | None = None) -> np.ndarray:
    """x scaled so that `measured` (default: all of x) has an RMS of `dbfs`."""
    ref = x if measured is None or not len(measured) else measured
    rms = np.sqrt(np.mean(ref**2)) + 1e-9
    return x * (32768.0 * 10 ** (dbfs / 20) / rms)


def augment(
    speech: np.ndarray,
    rng: np.random.Generator,
    recipe: AugmentRecipe,
    lead_s: float,
    total_s: float,
    babble: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Place speech at `lead_s` in a `total_s` window and make it sound recorded.
    Returns (audio float32, sample index where the speech ends)."""
    x = speech.astype(np.float32)
    x = speed(x, rng.uniform(*recipe.speed_range))
    # No draw when it is off: every recipe without it keeps the random stream it was built with.
    if recipe.vtlp_prob and rng.random() < recipe.vtlp_prob:
        x = vocal_tract(x, rng.uniform(*recipe.vtlp_range))
    if recipe.onset_cut_prob and rng.random() < recipe.onset_cut_prob:
        x = cut_onset(x, rng.uniform(*recipe.onset_cut_ms))
    if rng.random() < recipe.reverb_prob:
        rt60 = rng.uniform(*recipe.rt60_s_range)
        # No draw without a DRR range: earlier recipes keep their random stream.
        gain = 10 ** (-rng.uniform(*recipe.drr_db_range) / 20) if recipe.drr_db_range else 0.3
        x = signal.fftconvolve(x, room_impulse(rng, rt60, gain))[: len(x) + 1600]
        x = x.astype(np.float32)
    n = int(total_s * RATE)
    start = int(lead_s * RATE)
    out = np.zeros(max(n, start + len(x)), dtype=np.float32)
    out[start : start + len(x)] = x
    end = start + len(speech_region(x))
    if rng.random() < recipe.bandlimit_prob:
        out = bandlimit(out, rng)
    level = rng.uniform(*recipe.level_dbfs_range)
    out = set_level(out, level, out[start:end] if recipe.level_of == "speech" else None)
    if rng.random() < recipe.noise_prob:
        snr = rng.uniform(*recipe.snr_db_range)
        speech_rms = np.sqrt(np.mean(out[start : start + len(x)] ** 2)) + 1e-9
        out += make_noise(len(out), rng, babble) * speech_rms / 10 ** (snr / 20)
    if rng.random() < recipe.clip_prob:
        out *= rng.uniform(2, 6)
    return np.clip(out, -32768, 32767), end


def cut_onset(x: np.ndarray, ms: float) -> np.ndarray:
    """`x` without its first `ms` milliseconds (at most a third of it), faded in over 5 ms so
    that the cut itself makes no click."""
    n = min(int(ms * RATE / 1000), len(x) // 3)
    y = x[n:].copy()
    fade = min(len(y), RATE // 200)
    y[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
    return y


def speech_region(x: np.ndarray) -> np.ndarray:
    """The part of x up to its last sample above 2% of its peak (reverb tails excluded)."""
    env = np.abs(x)
    idx = np.flatnonzero(env > 0.02 * (env.max() + 1e-9))
    return x[: idx[-1] + 1] if len(idx) else x[:0]

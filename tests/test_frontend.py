"""The one frontend: independent references, streaming == batch, stable config hash."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import dct
from scipy.linalg import solve_toeplitz

from edge.frontend import Frontend, FrontendConfig, levinson_durbin
from tests.conftest import espeak


def _noise_and_tone(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (3000 * np.sin(2 * np.pi * 440 * t) + 500 * rng.standard_normal(len(t))).astype(np.float32)


def test_logmel_matches_the_embedding_models_own_melspectrogram():
    """The default mel must be what Google's speech embedding was trained on: compare with
    melspectrogram.tflite from the pyopen-wakeword wheel (an independent implementation)."""
    pytest.importorskip("pyopen_wakeword")
    from pathlib import Path

    import pyopen_wakeword

    from edge.interpreter import interpreter_class

    model = Path(pyopen_wakeword.__file__).parent / "models" / "melspectrogram.tflite"
    x = np.concatenate([espeak("turn on the lights").astype(np.float32), _noise_and_tone()])
    interp = interpreter_class()[0](model_path=str(model), num_threads=1)
    d_in = interp.get_input_details()[0]
    interp.resize_tensor_input(d_in["index"], [1, len(x)])
    interp.allocate_tensors()
    interp.set_tensor(d_in["index"], x[None])
    interp.invoke()
    ref = interp.get_tensor(interp.get_output_details()[0]["index"])[0, 0]
    ours = Frontend(FrontendConfig(dither_rms=0.0)).compute(x)
    assert ours.shape == ref.shape
    # That model clamps everything to (its input's maximum - 80 dB); we keep a dither floor
    # instead, so compare above the clamp.
    loud = ref > ref.max() - 79.0
    assert loud.mean() > 0.5
    assert np.abs(ours - ref)[loud].max() < 0.01  # dB


def test_mfcc_is_the_orthonormal_dct_of_the_logmel():
    x = _noise_and_tone()
    logmel = Frontend(FrontendConfig()).compute(x)
    mfcc = Frontend(FrontendConfig(kind="mfcc", mfcc_count=13)).compute(x)
    ref = dct(logmel.astype(np.float64), type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(mfcc, ref, rtol=1e-4, atol=1e-3)


def test_mfcc_deltas_are_causal_differences():
    x = _noise_and_tone()
    plain = Frontend(FrontendConfig(kind="mfcc")).compute(x)
    both = Frontend(FrontendConfig(kind="mfcc", mfcc_deltas=True)).compute(x)
    assert both.shape[1] == 26
    np.testing.assert_allclose(both[2:, 13:], (plain[2:] - plain[:-2]) / 2, atol=1e-4)


def test_levinson_durbin_matches_a_toeplitz_solve():
    rng = np.random.default_rng(1)
    sig = rng.standard_normal((4, 400))
    r = np.array([[np.dot(s[: 400 - k], s[k:]) for k in range(13)] for s in sig])
    ours = levinson_durbin(r, 12)
    for i in range(4):
        ref = -solve_toeplitz(r[i, :12], r[i, 1:13])
        np.testing.assert_allclose(ours[i], ref, rtol=1e-6, atol=1e-8)


def test_lpcc_matches_the_cepstrum_of_the_all_pole_spectrum():
    fe = Frontend(FrontendConfig(kind="lpcc", lpc_order=12, lpcc_count=12))
    x = espeak("seven")[:4000].astype(np.float32)
    lpcc = fe.compute(x)
    frames = fe._frame_view(np.asarray(x, np.float32), lpcc.shape[0])
    power = fe.power_spectrum(frames)
    lpc = levinson_durbin(np.fft.irfft(power, n=512)[:, :13], 12)
    a = np.concatenate([np.ones((len(lpc), 1)), lpc], axis=1)
    # 1/A(z) is minimum phase, so its cepstrum is twice the real cepstrum for n > 0.
    A = np.fft.fft(a, 4096, axis=1)
    ceps = 2 * np.fft.ifft(-np.log(np.abs(A)), axis=1).real[:, 1:13]
    np.testing.assert_allclose(lpcc, ceps, atol=1e-3)


@pytest.mark.parametrize("cfg", [
    FrontendConfig(),
    FrontendConfig(kind="mfcc", mfcc_deltas=True, mean_norm=True),
    FrontendConfig(kind="lpcc"),
    FrontendConfig(denoise=True, mean_norm=True, preemphasis=0.97),
])
def test_streaming_equals_batch_for_any_chunking(cfg):
    x = np.concatenate([espeak("what time is it").astype(np.float32), _noise_and_tone(seed=2)])
    batch = Frontend(cfg).compute(x)
    rng = np.random.default_rng(3)
    for sizes in ([160], [1280], [1], [17, 333, 4096, 5], list(rng.integers(1, 3000, 50))):
        fe = Frontend(cfg)
        out, i, k = [], 0, 0
        while i < len(x):
            n = int(sizes[k % len(sizes)])
            out.append(fe.process(x[i : i + n]))
            i += n
            k += 1
        stream = np.concatenate(out)
        assert stream.shape == batch.shape
        np.testing.assert_allclose(stream, batch, rtol=1e-5, atol=1e-4)


def test_digital_silence_sits_on_the_dither_floor_not_minus_100_db():
    mel = Frontend().compute(np.zeros(16000, np.float32))
    assert mel.min() > -20.0
    assert np.ptp(mel, axis=0).max() < 1e-4  # deterministic: every frame the same


def test_config_hash_is_stable_and_sensitive():
    assert FrontendConfig().hash == FrontendConfig().hash
    assert FrontendConfig().hash == FrontendConfig.from_dict(FrontendConfig().to_dict()).hash
    assert FrontendConfig(mel_bands=40).hash != FrontendConfig().hash
    with pytest.raises(ValueError, match="unknown frontend key"):
        FrontendConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="kind"):
        FrontendConfig(kind="plp")


def test_the_streaming_embedder_gives_the_toolchains_batch_embeddings():
    """One frontend: the device pushes frames one by one, the toolchain computes whole clips."""
    from edge.bundle import load_bundle
    from edge.models import EMBEDDING_HOP, Embedder
    from tests.conftest import ROOT

    bundle = load_bundle(ROOT / "models" / "embedding")
    frontend = Frontend(bundle.frontend)
    logmel = frontend.compute(espeak("turn on the lights in the kitchen").astype(np.float32))
    embedder = Embedder(bundle.model_path, bundle.frontend)
    pushed = [e.copy() for frame in logmel if (e := embedder.push(frame)) is not None]
    batch = embedder.compute(logmel)
    assert len(pushed) == len(logmel) // EMBEDDING_HOP == len(batch)
    np.testing.assert_array_equal(np.array(pushed), batch)

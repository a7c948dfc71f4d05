"""Tests for edge.audio: WAV decoding and resampling, stdin streaming, sinks, and the
microphone's device selection and ring buffer (no sound card needed)."""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from edge import audio
from edge.audio import (
    SAMPLE_RATE_HZ,
    AudioError,
    DeviceInfo,
    MicSource,
    StdinSource,
    WavSink,
    WavSource,
    describe_devices,
    open_source,
    read_wav,
    select_device,
    to_int16_mono_16k,
    write_wav,
)


def _write_pcm(path: Path, frames: np.ndarray, rate: int, sampwidth: int) -> None:
    """Write (frames, channels) or (frames,) values in [-1, 1) as integer PCM with `wave`."""
    x = frames.reshape(len(frames), 1) if frames.ndim == 1 else frames
    channels = x.shape[1]
    if sampwidth == 1:
        raw = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    elif sampwidth == 2:
        raw = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    elif sampwidth == 3:
        v = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype("<i4")
        raw = v.reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
    elif sampwidth == 4:
        raw = np.clip(np.round(x * 2**31), -(2**31), 2**31 - 1).astype("<i4").tobytes()
    else:
        raise ValueError(sampwidth)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(raw)


def _sine(freq_hz: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def _assert_one_line_naming(err: pytest.ExceptionInfo[AudioError], name: str) -> None:
    text = str(err.value)
    assert "\n" not in text
    assert name in text


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("sampwidth", [1, 2, 3, 4])
def test_pcm_widths_decode_to_int16(tmp_path: Path, rng: np.random.Generator, sampwidth: int) -> None:
    signal = rng.uniform(-0.9, 0.9, 4000)
    path = tmp_path / f"w{sampwidth}.wav"
    _write_pcm(path, signal, SAMPLE_RATE_HZ, sampwidth)

    got = read_wav(path)

    assert got.dtype == np.int16
    assert got.shape == (4000,)
    # 8-bit PCM only has 256 levels, one level being 256 on the int16 scale.
    tolerance = 129 if sampwidth == 1 else 1
    assert np.max(np.abs(got.astype(np.int32) - np.round(signal * 32768))) <= tolerance


def test_24bit_keeps_sign_and_full_scale(tmp_path: Path) -> None:
    signal = np.array([-1.0, -0.5, 0.0, 0.5, 1.0 - 2**-23])
    path = tmp_path / "s24.wav"
    _write_pcm(path, signal, SAMPLE_RATE_HZ, 3)
    np.testing.assert_array_equal(read_wav(path), [-32768, -16384, 0, 16384, 32767])


def test_float32_wav_via_scipy(tmp_path: Path, rng: np.random.Generator) -> None:
    from scipy.io import wavfile

    signal = rng.uniform(-0.5, 0.5, 1600).astype(np.float32)
    path = tmp_path / "float.wav"
    wavfile.write(path, SAMPLE_RATE_HZ, signal)
    got = read_wav(path)
    assert np.max(np.abs(got.astype(np.int32) - np.round(signal * 32768))) <= 1


def test_stereo_downmix_by_mean(tmp_path: Path, rng: np.random.Generator) -> None:
    signal = rng.uniform(-0.5, 0.5, 3000)
    same = tmp_path / "same.wav"
    opposite = tmp_path / "opposite.wav"
    mono = tmp_path / "mono.wav"
    _write_pcm(same, np.stack([signal, signal], axis=1), SAMPLE_RATE_HZ, 2)
    _write_pcm(opposite, np.stack([signal, -signal], axis=1), SAMPLE_RATE_HZ, 2)
    _write_pcm(mono, signal, SAMPLE_RATE_HZ, 2)

    np.testing.assert_array_equal(read_wav(same), read_wav(mono))
    assert np.max(np.abs(read_wav(opposite))) <= 1  # opposite channels cancel out


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_pitch(tmp_path: Path, rate: int) -> None:
    seconds = 1.5
    path = tmp_path / f"sine{rate}.wav"
    _write_pcm(path, _sine(440.0, rate, seconds), rate, 2)

    got = read_wav(path)

    assert len(got) == int(np.ceil(int(round(rate * seconds)) * SAMPLE_RATE_HZ / rate))
    assert abs(_peak_hz(got, SAMPLE_RATE_HZ) - 440.0) < 2.0
    # No gain change in the middle (edges see the filter's zero padding).
    middle = got[2000:-2000].astype(np.float64)
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 * 32768 / np.sqrt(2)) < 0.01 * 0.5 * 32768


def test_downsampling_removes_content_above_new_nyquist(tmp_path: Path) -> None:
    path = tmp_path / "high.wav"
    _write_pcm(path, _sine(11000.0, 48000, 1.0), 48000, 2)  # above 8 kHz: must not alias
    got = read_wav(path)
    assert np.sqrt(np.mean(got[2000:-2000].astype(np.float64) ** 2)) < 0.01 * 0.5 * 32768


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_speech_comes_out_16k_with_same_duration(tmp_path: Path) -> None:
    path = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello"], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate, frames, channels = w.getframerate(), w.getnframes(), w.getnchannels()
    assert (rate, channels) == (22050, 1)

    got = read_wav(path)

    assert got.dtype == np.int16
    expected = frames / rate * SAMPLE_RATE_HZ
    assert abs(len(got) - expected) <= 0.01 * expected
    assert np.max(np.abs(got)) > 1000  # actually speech, not silence


def test_to_int16_mono_16k_accepts_interleaved_and_clips() -> None:
    interleaved = np.array([40000.0, 40000.0, -100.0, 100.0, -40000.0, -40000.0])
    np.testing.assert_array_equal(to_int16_mono_16k(interleaved, SAMPLE_RATE_HZ, 2), [32767, 0, -32768])
    with pytest.raises(AudioError):
        to_int16_mono_16k(np.zeros(5), SAMPLE_RATE_HZ, 2)


# --------------------------------------------------------------------------- bad files


def test_empty_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    _write_pcm(path, np.zeros(0), SAMPLE_RATE_HZ, 2)
    with pytest.raises(AudioError, match="empty") as err:
        read_wav(path)
    _assert_one_line_naming(err, "empty.wav")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty") as err:
        read_wav(path)
    _assert_one_line_naming(err, "zero.wav")


def test_truncated_wav(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "cut.wav"
    _write_pcm(path, rng.uniform(-0.5, 0.5, 1000), SAMPLE_RATE_HZ, 2)
    path.write_bytes(path.read_bytes()[:-401])  # 200.5 frames gone
    with pytest.raises(AudioError, match="truncated: header promises 1000 frames, found 799") as err:
        read_wav(path)
    _assert_one_line_naming(err, "cut.wav")


def test_wav_cut_inside_header(tmp_path: Path) -> None:
    path = tmp_path / "stub.wav"
    _write_pcm(path, np.zeros(100), SAMPLE_RATE_HZ, 2)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioError) as err:
        read_wav(path)
    _assert_one_line_naming(err, "stub.wav")


def test_corrupt_headers_are_one_line_errors_not_a_memory_blowup(tmp_path: Path) -> None:
    import struct

    good = tmp_path / "good.wav"
    _write_pcm(good, np.zeros(1000), 44100, 2)
    data = good.read_bytes()
    # A rate field of 4 billion Hz: the resampler's filter alone would want gigabytes.
    huge = tmp_path / "huge.wav"
    huge.write_bytes(data[:24] + struct.pack("<I", 0xFFFFFFF0) + data[28:])
    with pytest.raises(AudioError, match="sample rate 4294967280 Hz") as err:
        read_wav(huge)
    _assert_one_line_naming(err, "huge.wav")
    # A `fmt ` chunk whose size is odd: Python's wave module raises RuntimeError for it.
    odd = tmp_path / "odd.wav"
    odd.write_bytes(data[:16] + struct.pack("<I", 17) + data[20:])
    with pytest.raises(AudioError) as err:
        read_wav(odd)
    _assert_one_line_naming(err, "odd.wav")
    with pytest.raises(AudioError, match="stdin sample rate"):
        StdinSource(48_000_001)


def test_float_wav_with_nan_is_an_error_not_silence(tmp_path: Path) -> None:
    from scipy.io import wavfile

    path = tmp_path / "nan.wav"
    x = np.zeros(1600, dtype=np.float32)
    x[100] = np.nan
    wavfile.write(path, 16000, x)
    with pytest.raises(AudioError, match="NaN") as err:
        read_wav(path)
    _assert_one_line_naming(err, "nan.wav")


def test_not_a_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\nbut it has lines\n")
    with pytest.raises(AudioError, match="not a WAV file") as err:
        read_wav(path)
    _assert_one_line_naming(err, "notes.wav")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such audio file") as err:
        read_wav(tmp_path / "nowhere.wav")
    _assert_one_line_naming(err, "nowhere.wav")
    with pytest.raises(AudioError, match="no such audio file") as err:
        open_source(str(tmp_path / "nowhere.wav"))
    _assert_one_line_naming(err, "nowhere.wav")


def test_streaming_placeholder_length_is_not_truncation(tmp_path: Path, rng: np.random.Generator) -> None:
    # Writers streaming to a pipe cannot go back to fix the size fields, so they leave 0xFFFFFFFF.
    path = tmp_path / "piped.wav"
    signal = rng.uniform(-0.5, 0.5, 500)
    _write_pcm(path, signal, SAMPLE_RATE_HZ, 2)
    data = bytearray(path.read_bytes())
    data_pos = data.index(b"data")
    data[data_pos + 4 : data_pos + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert len(read_wav(path)) == 500


# --------------------------------------------------------------------------- sources and sinks


def test_wav_source_chunks(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "a.wav"
    samples = rng.integers(-32768, 32768, 1000, dtype=np.int16)
    write_wav(path, samples)

    with open_source(str(path)) as source:
        assert isinstance(source, WavSource)
        assert (source.rate_hz, source.realtime, source.dropped_frames) == (SAMPLE_RATE_HZ, False, 0)
        chunks = list(source.chunks(300))

    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    assert all(c.dtype == np.int16 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), samples)


def test_wav_source_realtime_paces_at_wall_clock(tmp_path: Path) -> None:
    import time

    path = tmp_path / "short.wav"
    write_wav(path, np.zeros(3200, dtype=np.int16))  # 0.2 s
    source = WavSource(path, realtime=True)
    started = time.monotonic()
    assert sum(len(c) for c in source.chunks(800)) == 3200
    assert time.monotonic() - started >= 0.19


def test_wav_sink_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "out.wav"
    samples = rng.integers(-32768, 32768, 5000, dtype=np.int16)
    with WavSink(path) as sink:
        for start in range(0, len(samples), 1234):
            sink.write(samples[start : start + 1234])

    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 5000)
    np.testing.assert_array_equal(read_wav(path), samples)


def test_write_wav_rejects_multichannel_arrays(tmp_path: Path) -> None:
    with pytest.raises(AudioError):
        write_wav(tmp_path / "x.wav", np.zeros((10, 2), dtype=np.int16))


class _TrickleStream(io.RawIOBase):
    """A pipe that returns short reads of random, often odd, sizes."""

    def __init__(self, data: bytes, rng: np.random.Generator) -> None:
        self._data = io.BytesIO(data)
        self._rng = rng

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(int(self._rng.integers(1, 8)) if size != 0 else 0)


def test_stdin_source_with_odd_read_boundaries(rng: np.random.Generator) -> None:
    samples = rng.integers(-32768, 32768, 2001, dtype=np.int16)
    stream = _TrickleStream(samples.astype("<i2").tobytes(), rng)

    source = StdinSource(stream=stream)
    chunks = list(source.chunks(160))

    assert [len(c) for c in chunks] == [160] * 12 + [81]
    np.testing.assert_array_equal(np.concatenate(chunks), samples)


def test_stdin_source_from_bytesio_with_trailing_odd_byte(rng: np.random.Generator) -> None:
    samples = rng.integers(-32768, 32768, 777, dtype=np.int16)
    source = StdinSource(SAMPLE_RATE_HZ, stream=io.BytesIO(samples.astype("<i2").tobytes() + b"\x01"))
    np.testing.assert_array_equal(np.concatenate(list(source.chunks(100))), samples)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_stdin_resampling_matches_whole_file_resampling(tmp_path: Path, rng: np.random.Generator, rate: int) -> None:
    # Chunked resampling must be seamless: the same samples as resampling the file in one go.
    raw = np.round(_sine(440.0, rate, 0.7, 0.3) * 32768 + rng.normal(0, 300, int(round(rate * 0.7))))
    raw = raw.astype(np.int16)
    path = tmp_path / "ref.wav"
    write_wav(path, raw, rate_hz=rate)
    expected = read_wav(path)

    source = StdinSource(rate, stream=_TrickleStream(raw.astype("<i2").tobytes(), rng))
    chunks = list(source.chunks(320))

    assert all(len(c) == 320 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 320
    got = np.concatenate(chunks)
    assert len(got) == len(expected)
    assert np.max(np.abs(got.astype(np.int32) - expected)) <= 1


def test_open_source_stdin_and_chunk_size_check(tmp_path: Path) -> None:
    source = open_source("-", rate_hz=8000)
    assert isinstance(source, StdinSource)
    assert (source.input_rate_hz, source.rate_hz) == (8000, SAMPLE_RATE_HZ)
    with pytest.raises(ValueError):
        next(source.chunks(0))


# --------------------------------------------------------------------------- devices and microphone


def test_describe_devices_is_one_line_without_a_sound_card() -> None:
    if audio.list_devices():
        pytest.skip("this machine has audio devices")
    text = describe_devices()
    assert text and "\n" not in text


def test_open_pyaudio_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    audio.list_devices()
    assert capfd.readouterr().err == ""


DEVICES = [
    DeviceInfo(0, "HDMI Output", 0, 8, 48000),
    DeviceInfo(1, "USB PnP Sound Device: Audio (hw:1,0)", 1, 0, 44100),
    DeviceInfo(2, "seeed-2mic-voicecard: (hw:2,0)", 2, 2, 16000),
    DeviceInfo(3, "default", 32, 32, 44100),
]


def test_select_device_by_index_name_and_default() -> None:
    assert select_device(DEVICES, 1).index == 1
    assert select_device(DEVICES, "2").index == 2
    assert select_device(DEVICES, "usb pnp").index == 1
    assert select_device(DEVICES, "DEFAULT").index == 3
    assert select_device(DEVICES, None, default_index=3).index == 3
    assert select_device(DEVICES, None).index == 1  # no system default: first that can record
    assert select_device(DEVICES, "hdmi", output=True).index == 0


def test_select_device_errors_are_one_line() -> None:
    with pytest.raises(AudioError, match="no audio input device matches 'hdmi'") as err:
        select_device(DEVICES, "hdmi")  # exists, but cannot record
    _assert_one_line_naming(err, "USB PnP")
    with pytest.raises(AudioError, match="index 0") as err:
        select_device(DEVICES, 0)
    _assert_one_line_naming(err, "input devices")
    with pytest.raises(AudioError, match="^no audio input device: no sound card found") as err:
        select_device([], None)
    _assert_one_line_naming(err, "sound card")
    with pytest.raises(AudioError, match="none of the 1 audio devices can record"):
        select_device(DEVICES[:1], None)


def test_select_device_error_lists_only_a_few_devices() -> None:
    many = [DeviceInfo(i, f"mic {i}", 1, 0, 16000) for i in range(40)]
    with pytest.raises(AudioError) as err:
        select_device(many, "nope")
    assert "(+34 more)" in str(err.value) and len(str(err.value)) < 200


def test_mic_without_sound_card_is_a_one_line_error() -> None:
    if audio.list_devices():
        pytest.skip("this machine has audio devices")
    with pytest.raises(AudioError, match="^no audio input device") as err:
        MicSource()
    assert "\n" not in str(err.value)


@pytest.fixture
def unopened_mic(monkeypatch: pytest.MonkeyPatch) -> MicSource:
    """A MicSource whose stream is never opened; tests drive its PortAudio callback by hand."""
    monkeypatch.setattr(MicSource, "_start", lambda self, device: None)
    return MicSource(chunk_samples=100, ring_chunks=3)


def _block(value: int, n: int = 100) -> bytes:
    return np.full(n, value, dtype=np.int16).tobytes()


def test_mic_callback_feeds_chunks(unopened_mic: MicSource) -> None:
    mic = unopened_mic
    for value in (1, 2, 3):
        assert mic._on_audio(_block(value), 100, {}, 0) == (None, 0)
    chunks = list(itertools.islice(mic.chunks(150), 2))
    mic.close()

    assert [len(c) for c in chunks] == [150, 150]
    np.testing.assert_array_equal(np.concatenate(chunks), np.repeat([1, 2, 3], 100))
    assert mic.dropped_frames == 0
    assert (mic.rate_hz, mic.realtime) == (SAMPLE_RATE_HZ, True)


def test_mic_ring_overflow_drops_oldest_and_counts(unopened_mic: MicSource) -> None:
    mic = unopened_mic
    for value in range(1, 6):  # 5 blocks into a ring of 3
        mic._on_audio(_block(value), 100, {}, 0)
    mic._on_audio(_block(6, 40), 40, {}, audio._PA_INPUT_OVERFLOW)

    assert mic.dropped_frames == 300  # blocks 1, 2, 3
    assert mic.input_overflows == 1
    chunks = list(itertools.islice(mic.chunks(100), 2))
    np.testing.assert_array_equal(np.concatenate(chunks), np.repeat([4, 5], 100))
    mic.close()


def test_mic_ring_outlasts_the_longest_spoken_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Playing a translation blocks the loop for the phrase's length (Mandarin: up to 2.4 s); the
    # microphone audio of that time must wait in the ring, not be dropped.
    monkeypatch.setattr(MicSource, "_start", lambda self, device: None)
    mic = MicSource(chunk_samples=640)
    blocks = int(3.0 * SAMPLE_RATE_HZ / 640)
    for value in range(blocks):
        mic._on_audio(_block(value % 100, 640), 640, {}, 0)
    assert mic.dropped_frames == 0 and len(mic._ring) == blocks
    mic.close()


def test_mic_close_stops_a_blocked_reader(unopened_mic: MicSource) -> None:
    import threading

    mic = unopened_mic
    got: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: got.extend(mic.chunks(100)))
    reader.start()
    mic._on_audio(_block(7), 100, {}, 0)
    threading.Timer(0.2, mic.close).start()
    reader.join(timeout=3)

    assert not reader.is_alive()
    assert len(got) == 1
    mic._on_audio(_block(8), 100, {}, 0)  # late callbacks after close are harmless
    assert mic.dropped_frames == 0


def test_mic_stall_raises(unopened_mic: MicSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "MIC_STALL_TIMEOUT_S", 0.2)
    with pytest.raises(AudioError, match="delivered nothing") as err:
        next(unopened_mic.chunks(100))
    assert "\n" not in str(err.value)
    unopened_mic.close()


def test_the_microphone_delivers_blocks_of_the_configured_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """chunk_samples = 640 halves the decision latency only if PortAudio hands over 640 at a time."""
    asked: dict[str, object] = {}

    def fake_open(device, output, frames_per_buffer, stream_callback, start):  # no sound card here
        asked["frames_per_buffer"] = frames_per_buffer
        raise AudioError("no sound card found")

    monkeypatch.setattr(audio, "_open_device", fake_open)
    with pytest.raises(AudioError):
        open_source("mic", chunk_samples=640)
    assert asked["frames_per_buffer"] == 640

"""Audio in and out: WAV files, raw PCM on stdin, microphone and speaker.

Everything inside the runtime is 16 kHz mono int16. Sources convert whatever they get to that
format and hand it out in fixed-size chunks; sinks take it and write it to a WAV file or a
sound card. Problems surface as `AudioError` with a one-line message naming the file or
device, so the CLI can print it without a traceback.

PyAudio is imported lazily so that file and stdin audio work on machines without PortAudio.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
import threading
import time
import warnings
import wave
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol, TypeVar

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
MIN_RATE_HZ = 4000
MAX_RATE_HZ = 384_000

MIC_STALL_TIMEOUT_S = 5.0
"""A microphone that delivers nothing for this long is treated as gone (unplugged, driver hang)."""
MIC_RING_S = 10.0
"""Microphone audio held while the loop is busy. Playing a translation blocks the loop for the
phrase's length (Mandarin phrases run to 2.4 s), so the ring must outlast the longest one."""

_POLL_S = 0.1
"""How often a blocked MicSource.chunks() wakes up to notice close() or a stalled device."""

_READ_BLOCK_FRAMES = 1 << 20
"""WAV files are read in blocks so a bogus 4 GB length field never turns into one huge allocation."""

_UNKNOWN_LENGTH_BYTES = 0x7FFF0000
"""Streaming writers (sox, ffmpeg to a pipe) put a placeholder near 2**31 or 2**32 in the data size."""

# PyAudio constants, copied as plain values so the callback never needs the module.
_PA_CONTINUE = 0
_PA_INPUT_OVERFLOW = 2


class AudioError(Exception):
    """An audio file, stream or device problem, described in one line."""


# --------------------------------------------------------------------------- conversion


def _one_line(text: object) -> str:
    """Collapse whitespace so device names and OS messages cannot break the one-line rule."""
    return " ".join(str(text).split())


def _to_int16(x: np.ndarray) -> np.ndarray:
    """Round and clip values on the int16 scale to int16."""
    if x.dtype == np.int16:
        return x
    if np.issubdtype(x.dtype, np.integer):
        return np.clip(x, -32768, 32767).astype(np.int16)
    if not np.isfinite(x).all():  # NaN would come out as silence, without a word
        raise AudioError("audio has NaN or infinite samples")
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def check_rate(rate_hz: int, what: str = "sample rate") -> None:
    """A rate the resampler can take: its filter grows with the rate, and a corrupt header's
    4-billion-Hz rate would ask for gigabytes."""
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise AudioError(f"invalid {what} {rate_hz} Hz (polyvox takes {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)")


@lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """Anti-aliasing filter for resample_poly (its usual Kaiser design, made explicit so the
    streaming resampler knows its exact length and reproduces the one-shot result)."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    from scipy.signal import firwin  # lazily: scipy.signal costs ~75 MB of RSS, needed only to resample

    return firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _resample_factors(rate_in: int, rate_out: int) -> tuple[int, int]:
    g = math.gcd(rate_in, rate_out)
    return rate_out // g, rate_in // g


def to_int16_mono_16k(samples: np.ndarray, rate_hz: int, channels: int) -> np.ndarray:
    """Convert audio on the int16 scale (any numeric dtype) to int16 mono at 16 kHz.

    `samples` is either interleaved 1-D or shaped (frames, channels). Channels are averaged,
    the rate is changed with a polyphase filter, and the result is rounded and clipped.
    """
    check_rate(rate_hz)
    if channels < 1:
        raise AudioError(f"invalid channel count {channels}")
    x = np.asarray(samples)
    if x.ndim == 1 and channels > 1:
        if x.size % channels:
            raise AudioError(f"{x.size} interleaved samples do not divide into {channels} channels")
        x = x.reshape(-1, channels)
    if x.ndim == 2:
        if x.shape[1] != channels:
            raise AudioError(f"samples have {x.shape[1]} channels, expected {channels}")
        # float32 keeps long files affordable on a Pi and is exact enough for 24-bit input.
        x = x.mean(axis=1, dtype=np.float32) if channels > 1 else x[:, 0]
    elif x.ndim != 1:
        raise AudioError(f"expected 1-D or (frames, channels) samples, got shape {x.shape}")

    if rate_hz != SAMPLE_RATE_HZ and x.size:
        up, down = _resample_factors(rate_hz, SAMPLE_RATE_HZ)
        from scipy.signal import resample_poly

        x = resample_poly(x.astype(np.float32), up, down, window=_lowpass(up, down))
    return _to_int16(x)


class _StreamResampler:
    """Polyphase resampling of a stream, block by block, with the same output as one
    resample_poly call over the whole signal.

    Each block is filtered together with `ctx` real input samples on either side, so block
    edges never see zero padding; blocks are multiples of `down` input samples, so every block
    starts on the same output phase.
    """

    def __init__(self, rate_in_hz: int, rate_out_hz: int = SAMPLE_RATE_HZ) -> None:
        self.up, self.down = _resample_factors(rate_in_hz, rate_out_hz)
        self._h = _lowpass(self.up, self.down)
        reach = math.ceil((len(self._h) // 2) / self.up) + 1  # filter half-length in input samples
        self._ctx = math.ceil(reach / self.down) * self.down
        # [ctx samples already emitted | samples not emitted yet]; starts with zeros as
        # resample_poly pads the start of a signal with zeros.
        self._buf = np.zeros(self._ctx, dtype=np.float32)

    def _run(self, segment: np.ndarray, n_in: int) -> np.ndarray:
        from scipy.signal import resample_poly

        y = resample_poly(segment, self.up, self.down, window=self._h)
        start = self._ctx * self.up // self.down
        return y[start : start + math.ceil(n_in * self.up / self.down)]

    def process(self, x: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, x.astype(np.float32)])
        pending = len(self._buf) - self._ctx
        ready = (pending - self._ctx) // self.down * self.down  # keep ctx samples of lookahead
        if ready <= 0:
            return np.zeros(0, dtype=np.float32)
        out = self._run(self._buf[: 2 * self._ctx + ready], ready)
        self._buf = self._buf[ready:]
        return out

    def flush(self) -> np.ndarray:
        pending = len(self._buf) - self._ctx
        if pending <= 0:
            return np.zeros(0, dtype=np.float32)
        out = self._run(np.concatenate([self._buf, np.zeros(self._ctx, dtype=np.float32)]), pending)
        self._buf = np.zeros(self._ctx, dtype=np.float32)
        return out


# --------------------------------------------------------------------------- WAV files


def _decode_pcm(data: bytes, sampwidth: int) -> np.ndarray:
    """PCM bytes as read by `wave` (native byte order) → float32 on the int16 scale."""
    if sampwidth == 1:
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) * 256.0
    if sampwidth == 2:
        return np.frombuffer(data, dtype=np.int16).astype(np.float32)
    if sampwidth == 3:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        if sys.byteorder == "big":  # wave byte-swaps to native order
            b = b[:, ::-1]
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / 256.0
    if sampwidth == 4:
        return np.frombuffer(data, dtype=np.int32).astype(np.float32) / 65536.0
    raise ValueError(sampwidth)


def _scale_scipy(data: np.ndarray, name: str) -> np.ndarray:
    """Samples from scipy.io.wavfile → float32 on the int16 scale."""
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) * 256.0
    if data.dtype == np.int16:
        return data.astype(np.float32)
    if data.dtype == np.int32:  # scipy returns 24-bit audio left-aligned in int32 as well
        return data.astype(np.float32) / 65536.0
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32) * 32768.0
    raise AudioError(f"cannot read {name}: unsupported WAV sample type {data.dtype}")


def _read_with_scipy(path: Path, name: str) -> tuple[np.ndarray, int, int]:
    """Fallback for what `wave` refuses: float and WAVE_FORMAT_EXTENSIBLE files."""
    from scipy.io import wavfile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rate, data = wavfile.read(path)
    for w in caught:
        log.debug("%s: %s", name, w.message)
    channels = 1 if data.ndim == 1 else data.shape[1]
    return _scale_scipy(data, name), int(rate), channels


def _read_with_wave(f: BinaryIO, name: str) -> tuple[np.ndarray, int, int]:
    with wave.open(f, "rb") as w:
        channels, sampwidth, rate, promised = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        if sampwidth not in (1, 2, 3, 4):
            raise AudioError(f"cannot read {name}: unsupported WAV sample width {sampwidth} bytes")
        frame_bytes = channels * sampwidth
        unknown_length = promised * frame_bytes >= _UNKNOWN_LENGTH_BYTES
        blocks = []
        while True:
            block = w.readframes(_READ_BLOCK_FRAMES)
            if not block:
                break
            blocks.append(block)
    data = b"".join(blocks)
    found = len(data) // frame_bytes
    if found < promised and not unknown_length:
        raise AudioError(f"{name} is truncated: header promises {promised} frames, found {found}")
    data = data[: found * frame_bytes]
    return _decode_pcm(data, sampwidth), rate, channels


def read_wav(path: str | Path) -> np.ndarray:
    """Read a WAV file as int16 mono samples at 16 kHz.

    Handles 8-bit unsigned, 16-, 24- and 32-bit integer PCM, and float WAVs through scipy.
    """
    path = Path(path)
    name = f"'{path}'"
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if not head:
                raise AudioError(f"cannot read {name}: file is empty (0 bytes)")
            if len(head) < 12 or head[:4] != b"RIFF":
                raise AudioError(f"cannot read {name}: not a WAV file (no RIFF header)")
            if head[8:12] != b"WAVE":
                raise AudioError(f"cannot read {name}: not a WAV file (RIFF but not WAVE)")
            f.seek(0)
            try:
                samples, rate, channels = _read_with_wave(f, name)
            except (wave.Error, EOFError, RuntimeError, struct.error) as e:  # RuntimeError: a bad chunk size
                problem = _one_line(e) or "header is cut short"
                try:
                    samples, rate, channels = _read_with_scipy(path, name)
                except AudioError:
                    raise
                except Exception as scipy_error:  # a fallback: any failure means "not readable"
                    # For formats `wave` does not know, scipy's complaint is the informative one.
                    if problem.startswith("unknown format"):
                        problem = _one_line(scipy_error) or problem
                    raise AudioError(f"cannot read {name}: invalid WAV ({problem})") from None
    except FileNotFoundError:
        raise AudioError(f"no such audio file: {name}") from None
    except OSError as e:
        raise AudioError(f"cannot read {name}: {_one_line(e.strerror or e)}") from None

    try:
        check_rate(rate)
    except AudioError as e:
        raise AudioError(f"cannot read {name}: {e}") from None
    if samples.size == 0:
        raise AudioError(f"{name} is empty (no audio frames)")
    try:
        out = to_int16_mono_16k(samples, rate, channels)
    except AudioError as e:
        raise AudioError(f"cannot read {name}: {e}") from None
    log.debug("read %s: %d Hz, %d channel(s) → %d samples at 16 kHz", name, rate, channels, out.size)
    return out


def _as_mono_int16(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise AudioError(f"expected 1-D mono samples, got shape {x.shape}")
    return _to_int16(x)


def room_tone(samples: np.ndarray, seconds: float, rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray | None:
    """The quietest `seconds` of a recording (by energy in 10 ms steps): its room with nobody
    speaking, or None when the recording is shorter than twice that (a clip may be all word)."""
    n, step = round(seconds * rate_hz), rate_hz // 100
    if len(samples) < 2 * n:
        return None
    # Frame energies a block at a time: an hour-long file must not be copied as floats whole.
    usable = len(samples) // step * step
    frames = np.empty(usable // step)
    block = step * 4096
    for start in range(0, usable, block):
        x = samples[start : min(start + block, usable)].astype(np.float32).reshape(-1, step)
        frames[start // step : start // step + len(x)] = np.einsum("ij,ij->i", x, x)
    energy = np.cumsum(np.concatenate([[0.0], frames]))
    per = n // step
    start = int(np.argmin(energy[per:] - energy[:-per])) * step
    return samples[start : start + n]


def write_wav(path: str | Path, samples: np.ndarray, rate_hz: int = SAMPLE_RATE_HZ) -> None:
    """Write int16 mono samples to a WAV file (no resampling: `rate_hz` goes into the header)."""
    x = _as_mono_int16(samples)
    try:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate_hz)
            w.writeframes(x.tobytes())
    except OSError as e:
        raise AudioError(f"cannot write '{path}': {_one_line(e.strerror or e)}") from None


# --------------------------------------------------------------------------- sources and sinks


class AudioSource(Protocol):
    rate_hz: int
    realtime: bool

    @property
    def dropped_frames(self) -> int: ...

    def chunks(self, chunk_samples: int) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


class AudioSink(Protocol):
    rate_hz: int

    def write(self, samples: np.ndarray) -> None: ...

    def close(self) -> None: ...


_C = TypeVar("_C", bound="_Closing")


class _Closing:
    """Context-manager support for anything with close()."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_chunk_samples(chunk_samples: int) -> None:
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")


class WavSource(_Closing):
    """A whole WAV file, optionally paced at real time (as if it came from a microphone)."""

    def __init__(self, path: str | Path, realtime: bool = False) -> None:
        self.path = Path(path)
        self.samples = read_wav(self.path)
        self.rate_hz = SAMPLE_RATE_HZ
        self.realtime = realtime
        self.dropped_frames = 0
        self._closed = False

    def chunks(self, chunk_samples: int) -> Iterator[np.ndarray]:
        _check_chunk_samples(chunk_samples)
        start_time = time.monotonic()
        for start in range(0, len(self.samples), chunk_samples):
            if self._closed:
                return
            end = min(start + chunk_samples, len(self.samples))
            if self.realtime:
                # A microphone delivers a chunk once its last sample has been recorded.
                delay = start_time + end / self.rate_hz - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.samples[start:end]

    def close(self) -> None:
        self._closed = True


class StdinSource(_Closing):
    """Raw 16-bit little-endian mono PCM from stdin (or any binary stream), read as it arrives."""

    def __init__(self, rate_hz: int = SAMPLE_RATE_HZ, stream: BinaryIO | None = None) -> None:
        check_rate(rate_hz, "stdin sample rate")
        self.input_rate_hz = rate_hz
        self.rate_hz = SAMPLE_RATE_HZ
        self.realtime = False
        self.dropped_frames = 0
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._closed = False

    def chunks(self, chunk_samples: int) -> Iterator[np.ndarray]:
        _check_chunk_samples(chunk_samples)
        resampler = _StreamResampler(self.input_rate_hz) if self.input_rate_hz != SAMPLE_RATE_HZ else None
        # Ask for about one output chunk's worth of input per read.
        read_bytes = 2 * max(1, math.ceil(chunk_samples * self.input_rate_hz / SAMPLE_RATE_HZ))
        pending = np.zeros(0, dtype=np.int16)
        carry = b""  # an odd trailing byte waits for its partner in the next read
        while not self._closed:
            try:
                data = self._stream.read(read_bytes)
            except OSError as e:
                raise AudioError(f"cannot read audio from stdin: {_one_line(e.strerror or e)}") from None
            if not data:
                break
            if isinstance(data, str):
                raise AudioError("stdin audio stream must be binary, got text")
            data = carry + data
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
            if resampler is not None:
                samples = _to_int16(resampler.process(samples))
            pending = np.concatenate([pending, samples])
            while len(pending) >= chunk_samples:
                yield pending[:chunk_samples]
                pending = pending[chunk_samples:]
        if self._closed:
            return
        if carry:
            log.warning("stdin audio ended with an odd byte; dropped it")
        if resampler is not None:
            pending = np.concatenate([pending, _to_int16(resampler.flush())])
        for start in range(0, len(pending), chunk_samples):
            yield pending[start : start + chunk_samples]

    def close(self) -> None:
        # The stream belongs to the caller (usually sys.stdin), so it stays open.
        self._closed = True


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate_hz: int


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send fd 2 to /dev/null: PortAudio's ALSA and JACK probing prints dozens of lines there
    that are not errors. Python-level and C-level writes are both silenced, then restored."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield  # no usable fd 2 (e.g. closed stderr): nothing to silence
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _init_pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError:
        raise AudioError("PyAudio is not installed (pip install pyaudio)") from None
    try:
        with _quiet_stderr():
            return pyaudio.PyAudio()
    except Exception as e:  # PortAudio can fail in many ways; all mean "no audio"
        raise AudioError(f"cannot initialise PortAudio: {_one_line(e)}") from None


def _terminate_pyaudio(pa: Any) -> None:
    try:
        with _quiet_stderr():
            pa.terminate()
    except Exception as e:  # shutting down; nothing useful to do about it
        log.debug("PortAudio terminate failed: %s", e)


@contextmanager
def open_pyaudio() -> Iterator[Any]:
    """A PyAudio instance, initialised without stderr noise and terminated afterwards.
    Raises AudioError if PyAudio is missing or PortAudio cannot start."""
    pa = _init_pyaudio()
    try:
        yield pa
    finally:
        _terminate_pyaudio(pa)


def _devices_of(pa: Any) -> list[DeviceInfo]:
    devices = []
    with _quiet_stderr():
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            devices.append(
                DeviceInfo(
                    index=int(info["index"]),
                    name=_one_line(info["name"]),
                    max_input_channels=int(info["maxInputChannels"]),
                    max_output_channels=int(info["maxOutputChannels"]),
                    default_rate_hz=int(round(info["defaultSampleRate"])),
                )
            )
    return devices


def _default_index(pa: Any, output: bool) -> int | None:
    try:
        with _quiet_stderr():
            info = pa.get_default_output_device_info() if output else pa.get_default_input_device_info()
        return int(info["index"])
    except (OSError, KeyError):
        return None


def _probe_devices() -> tuple[list[DeviceInfo], str]:
    """Devices PortAudio sees, and why there are none if the list is empty."""
    try:
        with open_pyaudio() as pa:
            devices = _devices_of(pa)
    except AudioError as e:
        return [], f"no audio devices: {e}"
    except Exception as e:  # a broken driver must not crash a device listing
        return [], f"no audio devices: PortAudio failed: {_one_line(e)}"
    return devices, "no sound card found (PortAudio sees no audio devices)"


def list_devices() -> list[DeviceInfo]:
    """All audio devices PortAudio sees; [] if there are none or PortAudio is unavailable."""
    devices, why_empty = _probe_devices()
    if not devices:
        log.debug(why_empty)
    return devices


def describe_devices() -> str:
    """A human-readable device table, or one line saying why there is none."""
    devices, why_empty = _probe_devices()
    if not devices:
        return why_empty
    lines = [f"{'index':>5}  {'in':>3}  {'out':>3}  {'rate':>6}  name"]
    for d in devices:
        lines.append(
            f"{d.index:>5}  {d.max_input_channels:>3}  {d.max_output_channels:>3}  {d.default_rate_hz:>6}  {d.name}"
        )
    return "\n".join(lines)


def select_device(
    devices: list[DeviceInfo], spec: str | int | None, *, output: bool = False, default_index: int | None = None
) -> DeviceInfo:
    """Pick a device by index (int or digit string) or case-insensitive name substring.

    Only devices that can record (or play, with output=True) are considered. Without a spec
    the system default is used, or the first capable device if there is no default.
    """
    kind = "output" if output else "input"
    capable = [d for d in devices if (d.max_output_channels if output else d.max_input_channels) > 0]
    if not capable:
        if not devices:
            raise AudioError(f"no audio {kind} device: no sound card found (PortAudio sees no audio devices)")
        verb = "play" if output else "record"
        raise AudioError(f"no audio {kind} device: none of the {len(devices)} audio devices can {verb}")

    def listing() -> str:
        shown = ", ".join(f"#{d.index} '{d.name}'" for d in capable[:6])
        more = f" (+{len(capable) - 6} more)" if len(capable) > 6 else ""
        return f"{kind} devices: {shown}{more}"

    if spec is None:
        for d in capable:
            if d.index == default_index:
                return d
        return capable[0]
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        for d in capable:
            if d.index == index:
                return d
        raise AudioError(f"no audio {kind} device with index {index}; {listing()}")
    wanted = spec.strip().lower()
    exact = [d for d in capable if d.name.lower() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in capable if wanted in d.name.lower()]
    if not matches:
        raise AudioError(f"no audio {kind} device matches '{spec}'; {listing()}")
    if len(matches) > 1:
        log.info(
            "'%s' matches %d %s devices; using #%d '%s'", spec, len(matches), kind, matches[0].index, matches[0].name
        )
    return matches[0]


def _open_device(device: str | int | None, *, output: bool, **stream_kwargs: Any) -> tuple[Any, Any, DeviceInfo]:
    """Initialise PortAudio, choose a device and open a 16 kHz mono int16 stream on it."""
    pa = _init_pyaudio()  # reports a missing PyAudio as AudioError, so the import below is safe
    import pyaudio

    kind = "output" if output else "input"
    chosen: DeviceInfo | None = None
    try:
        chosen = select_device(_devices_of(pa), device, output=output, default_index=_default_index(pa, output))
        with _quiet_stderr():
            stream = pa.open(
                rate=SAMPLE_RATE_HZ,
                channels=1,
                format=pyaudio.paInt16,
                input=not output,
                output=output,
                **{f"{kind}_device_index": chosen.index},
                **stream_kwargs,
            )
    except AudioError:
        _terminate_pyaudio(pa)
        raise
    except Exception as e:  # PortAudio reports unsupported formats as OSError or ValueError
        _terminate_pyaudio(pa)
        what = f"#{chosen.index} '{chosen.name}'" if chosen is not None else "device"
        raise AudioError(
            f"cannot open audio {kind} {what} at 16 kHz mono: {_one_line(e)} "
            "(try the 'default' device, which converts rates)"
        ) from None
    return pa, stream, chosen


class _Ring:
    """Bounded FIFO of audio blocks between the PortAudio callback thread and the reader.

    When full, the oldest block is dropped: for live audio, fresh data matters more than
    complete data, and a slow consumer must never stall or crash the capture.
    """

    def __init__(self, max_blocks: int) -> None:
        if max_blocks < 1:
            raise ValueError(f"ring needs at least one block, got {max_blocks}")
        self._blocks: deque[np.ndarray] = deque()
        self._max_blocks = max_blocks
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_frames = 0

    def push(self, block: np.ndarray) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._blocks) >= self._max_blocks:
                if self.dropped_frames == 0:
                    log.warning("audio consumer is too slow; dropping the oldest microphone audio")
                self.dropped_frames += len(self._blocks.popleft())
            self._blocks.append(block)
            self._cond.notify()

    def pop(self, timeout: float) -> np.ndarray | None:
        """The oldest block, or None after `timeout` seconds without audio or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._blocks or self._closed, timeout)
            if self._closed or not self._blocks:
                return None
            return self._blocks.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._blocks.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._blocks)


class MicSource(_Closing):
    """Microphone capture at 16 kHz mono int16 through PyAudio's callback mode.

    The callback only copies into a bounded ring; chunks() re-cuts the ring's blocks into the
    size the caller asks for. Overflow drops the oldest audio and counts it in dropped_frames.
    """

    def __init__(self, device: str | int | None = None, chunk_samples: int = 1280,
                 ring_chunks: int | None = None) -> None:
        _check_chunk_samples(chunk_samples)
        self.rate_hz = SAMPLE_RATE_HZ
        self.realtime = True
        self.chunk_samples = chunk_samples
        self.device_name: str | None = None
        self.input_overflows = 0
        """PortAudio-level overruns (audio lost before our callback ran); count unknown."""
        self._ring = _Ring(ring_chunks or math.ceil(MIC_RING_S * SAMPLE_RATE_HZ / chunk_samples))
        self._pa: Any = None
        self._stream: Any = None
        self._closed = False
        self._start(device)

    @property
    def dropped_frames(self) -> int:
        return self._ring.dropped_frames

    def _start(self, device: str | int | None) -> None:
        self._pa, self._stream, chosen = _open_device(
            device,
            output=False,
            frames_per_buffer=self.chunk_samples,
            stream_callback=self._on_audio,
            start=True,
        )
        self.device_name = chosen.name
        log.info("listening on audio input #%d '%s'", chosen.index, chosen.name)

    def _on_audio(self, in_data: bytes | None, frame_count: int, time_info: Any, status_flags: int) -> tuple[None, int]:
        """PortAudio callback (runs on its thread): copy the block into the ring, nothing more."""
        if in_data:
            self._ring.push(np.frombuffer(in_data, dtype=np.int16).copy())
        if status_flags & _PA_INPUT_OVERFLOW:
            self.input_overflows += 1
        return None, _PA_CONTINUE

    def chunks(self, chunk_samples: int) -> Iterator[np.ndarray]:
        _check_chunk_samples(chunk_samples)
        pending = np.zeros(0, dtype=np.int16)
        last_audio = time.monotonic()
        while True:
            block = self._ring.pop(timeout=_POLL_S)
            if block is None:
                if self._ring.closed:
                    return  # close(): a partial chunk of live audio is of no use to anyone
                if time.monotonic() - last_audio > MIC_STALL_TIMEOUT_S:
                    name = f"'{self.device_name}'" if self.device_name else "microphone"
                    raise AudioError(f"audio input {name} delivered nothing for {MIC_STALL_TIMEOUT_S:g} s")
                continue
            last_audio = time.monotonic()
            pending = np.concatenate([pending, block])
            while len(pending) >= chunk_samples:
                yield pending[:chunk_samples]
                pending = pending[chunk_samples:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ring.close()
        if self._stream is not None:
            try:
                with _quiet_stderr():
                    self._stream.stop_stream()
                    self._stream.close()
            except Exception as e:  # the device may already be gone; closing must still succeed
                log.debug("closing the input stream failed: %s", e)
            self._stream = None
        if self._pa is not None:
            _terminate_pyaudio(self._pa)
            self._pa = None
        if self.dropped_frames:
            log.warning("dropped %d microphone samples because the consumer fell behind", self.dropped_frames)


class WavSink(_Closing):
    """Streams 16 kHz mono int16 audio into a WAV file; the header is finalised on close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rate_hz = SAMPLE_RATE_HZ
        try:
            # Stays open across write() calls; close() finalises the header.
            self._wave: Any = wave.open(str(self.path), "wb")  # noqa: SIM115
            self._wave.setnchannels(1)
            self._wave.setsampwidth(2)
            self._wave.setframerate(SAMPLE_RATE_HZ)
        except OSError as e:
            raise AudioError(f"cannot write '{self.path}': {_one_line(e.strerror or e)}") from None

    def write(self, samples: np.ndarray) -> None:
        if self._wave is None:
            raise AudioError(f"cannot write '{self.path}': sink is closed")
        try:
            self._wave.writeframes(_as_mono_int16(samples).tobytes())
        except OSError as e:
            raise AudioError(f"cannot write '{self.path}': {_one_line(e.strerror or e)}") from None

    def close(self) -> None:
        if self._wave is None:
            return
        try:
            self._wave.close()
        except OSError as e:
            raise AudioError(f"cannot write '{self.path}': {_one_line(e.strerror or e)}") from None
        finally:
            self._wave = None


class SpeakerSink(_Closing):
    """Plays 16 kHz mono int16 audio through PyAudio; write() blocks until PortAudio has taken it."""

    def __init__(self, device: str | int | None = None) -> None:
        self.rate_hz = SAMPLE_RATE_HZ
        self._pa, self._stream, chosen = _open_device(device, output=True)
        self.device_name = chosen.name
        log.info("playing on audio output #%d '%s'", chosen.index, chosen.name)

    def write(self, samples: np.ndarray) -> None:
        if self._stream is None:
            raise AudioError(f"cannot play on '{self.device_name}': sink is closed")
        try:
            self._stream.write(_as_mono_int16(samples).tobytes())
        except OSError as e:
            raise AudioError(f"cannot play on '{self.device_name}': {_one_line(e)}") from None

    def close(self) -> None:
        if self._stream is not None:
            try:
                with _quiet_stderr():
                    self._stream.stop_stream()  # lets queued audio finish playing
                    self._stream.close()
            except Exception as e:  # the device may already be gone; closing must still succeed
                log.debug("closing the output stream failed: %s", e)
            self._stream = None
        if self._pa is not None:
            _terminate_pyaudio(self._pa)
            self._pa = None


def open_source(
    spec: str, *, rate_hz: int = SAMPLE_RATE_HZ, device: str | None = None, realtime: bool = False,
    chunk_samples: int = 1280,
) -> WavSource | StdinSource | MicSource:
    """Open a source: "mic" is the microphone, "-" raw PCM on stdin at `rate_hz`, anything else a WAV file.
    The microphone delivers blocks of chunk_samples, the size the loop will read."""
    if spec == "mic":
        return MicSource(device, chunk_samples)
    if device is not None:
        log.warning("--device only applies to the microphone; ignoring it for %r", spec)
    if spec == "-":
        return StdinSource(rate_hz)
    path = Path(spec)
    if not path.exists():
        raise AudioError(f"no such audio file: '{spec}'")
    return WavSource(path, realtime=realtime)

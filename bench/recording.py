"""The fixed test recording for `bench.compare`: offline TTS voices, silence and noise, with the
exact start and end time of every spoken item.

Every engine gets the items it is meant to detect: the polyvox wake phrase ("computer"), the
peers' built-in wake words, polyvox's English commands and the ten digits, among distractor
sentences, noise bursts and a quiet pink-noise floor. Voices are those the toolchain holds out
by its voice hash (`quantize.voices.split_voices`), so no polyvox model was trained on them.

The build is deterministic for a given set of installed voices (one seed drives order, voices,
levels and noise) and is cached in .cache/bench/ as a WAV with a JSON of item times beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".cache" / "bench"
SAMPLE_RATE_HZ = 16000
RECORDING_VERSION = 1
"""Bump when the layout below changes, so cached recordings are rebuilt."""
SEED = 20261123

POLYVOX_WAKE = ("computer",)
PEER_WAKE = ("alexa", "hey jarvis", "okay nabu", "hey mycroft")
"""The wake words that ship inside both pymicro-wakeword and pyopen-wakeword."""
COMMANDS = {
    # One phrasing per en-command intent; several are not the first phrasing of the catalog.
    "lights_on": "turn on the lights", "lights_off": "lights off", "brighter": "brighter",
    "dimmer": "dim the lights", "volume_up": "volume up", "volume_down": "quieter", "play": "play music",
    "pause": "pause", "stop": "stop", "next": "next song", "previous": "previous", "temperature_up": "warmer",
    "temperature_down": "cooler", "open_curtains": "open the curtains", "close_curtains": "close curtains",
    "what_time": "what time is it", "yes": "yes", "no": "no", "cancel": "cancel", "help": "help",
}
DIGITS = {f"digit_{i}": w for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}
SENTENCES = (
    # Distractors: no wake word, command word or digit inside, none from a training catalog.
    "she walked along the quiet beach at sunset",
    "please remember to buy bread and milk",
    "the children are playing in the garden",
    "my brother works at a small bakery",
    "it has been raining since early morning",
    "can you tell me where the station is",
    "we watched an old film last weekend",
    "the soup here is surprisingly good",
    "our neighbours painted their fence green",
    "he forgot his umbrella on the bus",
    "that mountain looks beautiful in winter",
    "i think the meeting was moved to friday",
)
NOISES = ("white", "pink", "brown", "hum", "clatter")


@dataclass(frozen=True)
class Item:
    kind: str
    """wake, command, digit, sentence or noise."""
    label: str
    """The wake phrase, the command intent id, `digit_N`, or `sentence` / the noise type."""
    text: str
    voice: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Layout:
    """How many of each item; the full and tiny recordings differ only here."""

    name: str
    voices: int
    wake_per_voice: bool
    """Every wake phrase once per voice (else once in all)."""
    command_voices: int
    digit_voices: int
    sentences: int
    noises_per_type: int
    gap_s: tuple[float, float]


FULL = Layout("full", voices=10, wake_per_voice=True, command_voices=2, digit_voices=3, sentences=12,
              noises_per_type=2, gap_s=(1.0, 1.8))
TINY = Layout("tiny", voices=2, wake_per_voice=False, command_voices=0, digit_voices=0, sentences=1,
              noises_per_type=0, gap_s=(0.8, 1.0))
TINY_EXTRA = (("command", "lights_on"), ("digit", "digit_7"), ("noise", "pink"))
"""The tiny recording's items beyond one of each wake phrase and one sentence."""


@dataclass(frozen=True)
class Recording:
    wav: Path
    items: list[Item]
    duration_s: float
    voices: list[str]

    def read_audio(self) -> np.ndarray:
        return read_wav_int16(self.wav)


# -- noise ----------------------------------------------------------------------------------
def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power falling as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    f[0] = f[1]
    # Brown noise would be all rumble below 20 Hz, which no microphone passes.
    spectrum *= np.where(f < 20, 0.0, 1 / f ** (exponent / 2))
    return np.fft.irfft(spectrum, n)


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of a named kind."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _coloured(rng, n, 1.0)
    elif kind == "brown":
        x = _coloured(rng, n, 2.0)
    elif kind == "hum":
        # Mains hum with harmonics, as from a fridge or a cheap power supply.
        t = np.arange(n) / SAMPLE_RATE_HZ
        x = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
    elif kind == "clatter":
        # Sparse decaying clicks, like cutlery and dishes.
        x = np.zeros(n)
        decay = np.exp(-np.arange(800) / 120)
        for pos in rng.integers(0, max(1, n - 800), size=max(1, n // 1600)):
            x[pos : pos + 800] += rng.standard_normal(800) * decay * rng.uniform(0.3, 1.0)
    else:
        raise ValueError(f"unknown noise {kind!r}")
    x = np.asarray(x, dtype=np.float64)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-9)


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale so that the RMS over the non-silent part is `dbfs` (re. int16 full scale)."""
    x = x.astype(np.float64)
    active = x[np.abs(x) > 0.05 * max(float(np.abs(x).max()), 1e-9)]
    rms = float(np.sqrt(np.mean(active**2))) if len(active) else 1.0
    return x * (32767 * 10 ** (dbfs / 20) / max(rms, 1e-9))


# -- voices and speech ----------------------------------------------------------------------
MAINSTREAM_ACCENTS = ("en-us+", "en-gb-x-rp")


def heldout_voices(count: int, rng: np.random.Generator) -> list:
    """Voices no polyvox model trains on: every non-espeak held-out voice, then espeak ones (of the
    engines a build uses by default, so that installing an opt-in engine leaves the recording be)."""
    from quantize.voices import OPT_IN_ENGINES, available_voices, split_voices

    _, held = split_voices([v for v in available_voices("en") if v.engine not in OPT_IN_ENGINES], 0.2)
    if not held:
        raise RuntimeError("no English TTS voice is installed; install espeak-ng")
    # Native-accent voices before MBROLA's accented English (mb-de1-en, ...), then espeak variants.
    others = sorted((v for v in held if v.engine != "espeak"), key=lambda v: ("-en" in v.name, v.id))
    espeak = [v for v in held if v.engine == "espeak"]
    shuffled = [espeak[i] for i in rng.permutation(len(espeak))]
    if not others:
        # No MBROLA or Pico voice installed: mainstream accents first, so that the peers' wake
        # words are spoken by voices they can hear (they miss regional espeak-ng variants).
        shuffled.sort(key=lambda v: not v.name.startswith(MAINSTREAM_ACCENTS))
    picked = others[: max(1, count // 2)] + shuffled
    return picked[:count]


def speak(text: str, voice) -> np.ndarray:
    from quantize.voices import synthesize, trim_silence

    return trim_silence(synthesize(text, voice)).astype(np.float64)


def plan(layout: Layout, voices: list, rng: np.random.Generator) -> list[tuple[str, str, str, object]]:
    """(kind, label, text, voice or None) for every item, in playing order."""
    items: list[tuple[str, str, str, object]] = []
    wake = POLYVOX_WAKE + PEER_WAKE
    if layout.wake_per_voice:
        items += [("wake", w, w, v) for v in voices for w in wake]
    else:
        items += [("wake", w, w, voices[i % len(voices)]) for i, w in enumerate(wake)]
    for i, (intent, text) in enumerate(COMMANDS.items()):
        items += [("command", intent, text, voices[(i + k) % len(voices)]) for k in range(layout.command_voices)]
    for i, (label, text) in enumerate(DIGITS.items()):
        items += [("digit", label, text, voices[(i + 3 * k) % len(voices)]) for k in range(layout.digit_voices)]
    items += [("sentence", "sentence", s, voices[i % len(voices)]) for i, s in enumerate(SENTENCES[: layout.sentences])]
    items += [("noise", n, "", None) for n in NOISES for _ in range(layout.noises_per_type)]
    if layout is TINY:
        table = {"command": COMMANDS, "digit": DIGITS}
        items += [(kind, label, table.get(kind, {}).get(label, ""), voices[0] if kind != "noise" else None)
                  for kind, label in TINY_EXTRA]
        return items  # the tiny recording keeps this order: readable when a test fails
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def build(layout: Layout, out_wav: Path) -> Recording:
    rng = np.random.default_rng(SEED)
    voices = heldout_voices(layout.voices, rng)
    log.info("building the %s bench recording with %d voices: %s", layout.name, len(voices),
             ", ".join(v.id for v in voices))
    parts: list[np.ndarray] = []
    items: list[Item] = []
    pos = int(1.5 * SAMPLE_RATE_HZ)  # lead-in: every engine settles on the noise floor first
    parts.append(np.zeros(pos))
    for kind, label, text, voice in plan(layout, voices, rng):
        if kind == "noise":
            clip = at_level(make_noise(label, int(rng.uniform(1.5, 2.5) * SAMPLE_RATE_HZ), rng),
                            float(rng.uniform(-40, -30)))
        else:
            clip = at_level(speak(text, voice), float(rng.uniform(-32, -18)))
        items.append(Item(kind, label, text, voice.id if voice else "", round(pos / SAMPLE_RATE_HZ, 3),
                          round((pos + len(clip)) / SAMPLE_RATE_HZ, 3)))
        gap = np.zeros(int(rng.uniform(*layout.gap_s) * SAMPLE_RATE_HZ))
        parts += [clip, gap]
        pos += len(clip) + len(gap)
    parts.append(np.zeros(2 * SAMPLE_RATE_HZ))  # tail: every engine closes its last utterance
    audio = np.concatenate(parts)
    audio += at_level(make_noise("pink", len(audio), rng), -62.0)  # a quiet room, never digital silence
    samples = np.clip(np.rint(audio), -32768, 32767).astype(np.int16)
    write_wav_int16(out_wav, samples)
    rec = Recording(out_wav, items, round(len(samples) / SAMPLE_RATE_HZ, 3), [v.id for v in voices])
    out_wav.with_suffix(".json").write_text(json.dumps(
        {"version": RECORDING_VERSION, "seed": SEED, "layout": layout.name, "sample_rate_hz": SAMPLE_RATE_HZ,
         "duration_s": rec.duration_s, "voices": rec.voices, "items": [asdict(i) for i in items]}, indent=1))
    return rec


def recording(tiny: bool = False, cache_dir: Path = CACHE_DIR) -> Recording:
    """The cached recording, built on first use (about a minute for the full one)."""
    from quantize.voices import OPT_IN_ENGINES, available_voices

    layout = TINY if tiny else FULL
    # The voices come from the engines installed: MBROLA or Pico added later is another recording.
    engines = sorted({v.engine for v in available_voices("en")} - set(OPT_IN_ENGINES))
    key = hashlib.sha256(json.dumps([RECORDING_VERSION, SEED, asdict(layout), POLYVOX_WAKE, PEER_WAKE, COMMANDS,
                                     DIGITS, SENTENCES, NOISES, TINY_EXTRA, engines]).encode()).hexdigest()[:10]
    wav = Path(cache_dir) / f"recording-{layout.name}-{key}.wav"
    meta = wav.with_suffix(".json")
    if wav.is_file() and meta.is_file():
        return load(wav)
    wav.parent.mkdir(parents=True, exist_ok=True)
    return build(layout, wav)


def load(wav: Path) -> Recording:
    meta = json.loads(Path(wav).with_suffix(".json").read_text())
    return Recording(Path(wav), [Item(**i) for i in meta["items"]], meta["duration_s"], meta["voices"])


# -- WAV I/O with the standard library only: the benchmark's child processes must not pay for
# importing polyvox just to read their input.
def write_wav_int16(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE_HZ)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav_int16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE_HZ):
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)

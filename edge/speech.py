"""Spoken output for translation mode: offline TTS through espeak-ng, rendered once and cached.

Mandarin is spoken from toned pinyin that the toolchain stored in the phrase bundle, because
espeak-ng's Hanzi reader mixes in English phonemes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edge.audio import AudioError, read_wav

log = logging.getLogger(__name__)

VOICES = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "zh": "cmn-latn-pinyin"}


class Tts:
    """text → int16 mono 16 kHz, cached per (language, text)."""

    def __init__(self, rate_wpm: int = 150) -> None:
        if not shutil.which("espeak-ng"):
            raise AudioError("espeak-ng is not installed: translation mode cannot speak (apt install espeak-ng)")
        self.rate_wpm = rate_wpm
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._installed: set[str] | None = None

    def _check_voice(self, voice: str) -> None:
        """espeak-ng speaks a voice it lacks in its default English voice, without a word: a
        Mandarin target would come out in English phonemes. Refuse it instead."""
        if self._installed is None:
            proc = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=20)
            self._installed = {line.split()[1].lower() for line in proc.stdout.splitlines()[1:] if line.split()}
        if voice.lower() not in self._installed:
            raise AudioError(f"espeak-ng has no voice {voice!r} here (espeak-ng --voices lists what it has)")

    def render(self, text: str, language: str) -> np.ndarray:
        key = (language, text)
        if key not in self._cache:
            voice = VOICES.get(language)
            if voice is None:
                raise AudioError(f"no voice for language {language!r}")
            self._check_voice(voice)
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "say.wav"
                proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(self.rate_wpm), "-w", str(wav), "--", text],
                                      capture_output=True, timeout=20)
                if proc.returncode != 0 or not wav.is_file():
                    raise AudioError(f"espeak-ng failed to say {text!r}: {proc.stderr.decode(errors='replace')[:200]}")
                self._cache[key] = read_wav(wav)
        return self._cache[key]

    def prerender(self, spoken: dict[str, dict[str, str]], language: str) -> None:
        """Render every phrase of `language` ahead of time, so speaking starts at once."""
        for texts in spoken.values():
            if language in texts:
                self.render(texts[language], language)

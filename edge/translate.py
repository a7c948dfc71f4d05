"""Translation mode: a recognized phrasebook phrase becomes a translation event and target speech."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge.events import Event
from edge.pipeline import ModelSet
from edge.speech import Tts


@dataclass
class Translation:
    event: Event
    audio: np.ndarray
    """Target speech, int16 mono 16 kHz."""


class Translator:
    """Looks up the phrase in the bundle's phrasebook and renders it in the target language."""

    def __init__(self, models: ModelSet, target_language: str, tts: Tts | None = None) -> None:
        self.tts = tts or Tts()
        self.target_language = target_language
        self.translations: dict[str, dict[str, str]] = {}
        self.spoken: dict[str, dict[str, str]] = {}
        for head in models.command_heads:
            if head.bundle.task == "phrase":
                self.translations.update(head.bundle.manifest.get("translations", {}))
                self.spoken.update(head.bundle.manifest.get("spoken", {}))
        self.tts.prerender(self.spoken, target_language)

    def set_target(self, language: str) -> None:
        self.target_language = language
        self.tts.prerender(self.spoken, language)

    def translate(self, event: Event) -> Translation | None:
        texts = self.translations.get(event.intent)
        if texts is None or self.target_language not in texts:
            return None
        t0 = time.perf_counter()
        target_text = texts[self.target_language]
        audio = self.tts.render(self.spoken.get(event.intent, {}).get(self.target_language, target_text),
                                self.target_language)
        out = Event("translation", event.intent, event.language, event.text, event.confidence, event.t_start,
                    event.t_end, event.t_emit, event.model)
        out.extra = {
            "phrase": event.intent,
            "source": {"language": event.language, "text": texts.get(event.language, event.text)},
            "target": {"language": self.target_language, "text": target_text},
            "render_s": round(time.perf_counter() - t0, 4),
        }
        return Translation(out, audio)

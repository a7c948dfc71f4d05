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
        self.translations: dict[str, dict[str, str]] = {}
        self.spoken: dict[str, dict[str, str]] = {}
        self.heard: tuple[str, ...] = ()
        """The languages listened for; two make a conversation (see target_for)."""
        for head in models.command_heads:
            if head.bundle.task == "phrase":
                self.translations.update(head.bundle.manifest.get("translations", {}))
                self.spoken.update(head.bundle.manifest.get("spoken", {}))
                if head.bundle.language not in self.heard:
                    self.heard += (head.bundle.language,)
        self.set_target(target_language)

    def set_target(self, language: str) -> None:
        """Speak in `language` from now on. Renders every phrase the box may then speak first, so
        speaking starts at once (seconds on a Pi: call it off the audio and MQTT threads); on an
        AudioError the previous target stays."""
        previous = getattr(self, "target_language", None)
        self.target_language = language
        try:
            for code in {self.target_for(heard) for heard in self.heard} - {None} | {language}:
                self.tts.prerender(self.spoken, code)
        except Exception:
            if previous is not None:
                self.target_language = previous
            raise

    def target_for(self, source_language: str) -> str | None:
        """The target language, except for a phrase heard in it. In a two-language conversation
        (`--language en+fr --target-language en`) that one is spoken in the other language, so
        two people can talk across the box; with more languages (or `auto`) there is no one other
        language, so it is not translated (None: it stays a plain phrase event)."""
        if source_language != self.target_language:
            return self.target_language
        others = [code for code in self.heard if code != source_language]
        return others[0] if len(others) == 1 else None

    def translate(self, event: Event) -> Translation | None:
        texts = self.translations.get(event.intent)
        target = self.target_for(event.language)
        if texts is None or target is None or target not in texts:
            return None
        t0 = time.perf_counter()
        target_text = texts[target]
        audio = self.tts.render(self.spoken.get(event.intent, {}).get(target, target_text), target)
        out = Event("translation", event.intent, event.language, event.text, event.confidence, event.t_start,
                    event.t_end, event.t_emit, event.model)
        out.extra = {
            "phrase": event.intent,
            "source": {"language": event.language, "text": texts.get(event.language, event.text)},
            "target": {"language": target, "text": target_text},
            "render_s": round(time.perf_counter() - t0, 4),
        }
        return Translation(out, audio)

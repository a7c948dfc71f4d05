"""The bundled demo recording: wake phrases and commands by a voice no model trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio import write_wav
from quantize.voices import Voice, synthesize, trim_silence

SCRIPT = ["computer", "turn on the lights", "computer", "what time is it", "computer", "volume down",
          "the weather is nice today", "computer", "seven", "computer", "stop"]
VOICE = Voice("pico", "en-GB", "en")  # held out from every English training run


def make_demo(out: Path, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    parts = [np.zeros(8000, np.float32)]
    for text in SCRIPT:
        parts.append(trim_silence(synthesize(text, VOICE)).astype(np.float32) * 0.5)
        gap = 0.6 if text == "computer" else 1.4
        parts.append(np.zeros(int(gap * 16000), np.float32))
    audio = np.concatenate(parts)
    audio += rng.standard_normal(len(audio)).astype(np.float32) * 30  # a quiet room, not digital silence
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, np.clip(audio, -32768, 32767).astype(np.int16))
    return out

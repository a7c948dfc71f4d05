"""Events the runtime emits: one JSON object per line on stdout, or one MQTT message."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Event:
    type: str
    """wake, command, translation, language, ..."""
    intent: str
    language: str
    text: str
    confidence: float
    """0..1, the decision's (smoothed) posterior."""
    t_start: float
    """Stream time of the utterance start, seconds."""
    t_end: float
    """Stream time of the utterance end, seconds."""
    t_emit: float = 0.0
    """Stream time at which the decision was taken; t_emit - t_end is the detection latency."""
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data["confidence"] = round(float(self.confidence), 4)
        for key in ("t_start", "t_end", "t_emit"):
            data[key] = round(float(data[key]), 3)
        data["latency_s"] = round(float(self.t_emit - self.t_end), 3)
        data.update(extra)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

"""Mandarin from the MBROLA cn1 diphone voice (a recorded native speaker), driven from toned pinyin.

espeak-ng lists `mb-cn1` but cannot drive it (its zh_phtrans table is not shipped), so this
module writes MBROLA's .pho input itself: each syllable becomes an initial unit and a final
unit in the voice's own inventory (see /usr/share/doc/mbrola-cn1/README.txt: a medial vowel
goes with the initial, hu-an, bi-ao, ju-an), with a pitch contour per tone. It is the only
natural-sounding Mandarin voice installed here; espeak-ng's pinyin voice is formant-synthesized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantize.mbrola import run_mbrola

CN1_DATABASE = Path("/usr/share/mbrola/cn1/cn1")

INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c",
            "s", "y", "w")
I_MEDIAL = {"b", "d", "j", "l", "m", "n", "p", "q", "t", "x"}
"""Initials that have a combined unit with medial i (bi-an, li-ang, xi-ong)."""
U_MEDIAL = {"ch", "c", "d", "g", "h", "k", "l", "n", "r", "sh", "s", "t", "zh", "z"}
"""Initials that have a combined unit with medial u (hu-an, shu-o)."""
V_MEDIAL = {"j", "q", "x", "y"}
"""Initials that have a combined unit with medial ü (ju-an, yu-an)."""
FINALS = {"a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "er", "o", "ou", "i", "ie", "ll", "u", "v", "ong", "in",
          "ing", "ii", "ui", "iu", "ue", "un"}

# Pitch targets (Hz, before the variant's ratio) at (percent of the final, value): tone 1 high
# level, 2 rising, 3 low dipping, 4 falling, 5 neutral (short, mid).
TONE_CONTOUR = {1: ((0, 285), (100, 280)), 2: ((0, 205), (100, 300)), 3: ((0, 195), (50, 160), (100, 185)),
                4: ((0, 320), (100, 175)), 5: ((0, 220), (100, 205))}
INITIAL_MS = {"b": 45, "d": 45, "g": 50, "p": 95, "t": 95, "k": 95, "q": 110, "c": 110, "ch": 110, "z": 80, "zh": 85,
              "j": 80, "f": 110, "s": 120, "sh": 120, "x": 120, "h": 100, "m": 70, "n": 65, "l": 65, "r": 75,
              "y": 55, "w": 55}


@dataclass(frozen=True)
class Cn1Variant:
    """One pseudo-speaker: pitch ratio, and the rate the diphones are replayed at (MBROLA's
    voice-frequency option shifts formants, as a longer or shorter vocal tract would)."""

    pitch_ratio: float = 1.0
    voice_hz: int = 22050


CN1_VARIANTS = {"": Cn1Variant(), "low": Cn1Variant(0.8, 20000), "deep": Cn1Variant(0.55, 18000),
                "bright": Cn1Variant(1.15, 24000)}


def syllable_units(syllable: str) -> tuple[str | None, str, int]:
    """A toned pinyin syllable ('huan4', 'lv3', 'shi2') → (initial unit or None, final unit, tone)."""
    m = re.fullmatch(r"([a-zü:]+)([1-5]?)", syllable.lower())
    if not m:
        raise ValueError(f"not a pinyin syllable: {syllable!r}")
    body = m.group(1).replace("ü", "v").replace("u:", "v")
    tone = int(m.group(2) or 5)
    ini = next((i for i in INITIALS if body.startswith(i) and len(body) > len(i)), "")
    fin = body[len(ini):]
    if ini in V_MEDIAL and fin.startswith("u"):
        fin = "v" + fin[1:]  # ju, que, xuan, yun are written with u but say ü
    if ini in ("zh", "ch", "sh", "r") and fin == "i":
        return ini, "ll", tone
    if ini in ("z", "c", "s") and fin == "i":
        return ini, "ii", tone
    if fin == "o" and ini in ("l", "y"):
        fin = "ou"  # lo, yo: interjections the voice has no o-diphone for
    fin = {"iou": "iu", "uei": "ui", "uen": "un", "ve": "ue", "vn": "un", "ueng": "eng"}.get(fin, fin)
    if ini == "y":
        # y + i-less finals: ya = y-a, yan = y-an, ye = y-e, yi = y-i, yin = y-in
        if fin == "van":
            return "yu", "an", tone
        return "y", {"v": "v", "ue": "ue", "un": "un"}.get(fin, fin), tone
    if ini == "w":
        return "w", fin, tone
    if fin in FINALS:
        return ini or None, fin, tone
    # A compound final: its medial moves into the initial's unit.
    head, rest = fin[0], fin[1:]
    if head == "i" and (not ini or ini in I_MEDIAL) and rest in FINALS:
        return (ini + "i") if ini else "y", rest, tone
    if head == "u" and (not ini or ini in U_MEDIAL) and rest in FINALS:
        return (ini + "u") if ini else "w", rest, tone
    if head == "v" and ini in V_MEDIAL and rest in FINALS:
        return ini + "u", rest, tone
    raise ValueError(f"pinyin syllable {syllable!r} has no cn1 units")


def pinyin_to_pho(pinyin: str, rate: float = 1.0, pitch_ratio: float = 1.0) -> str:
    """MBROLA .pho text for space-separated toned pinyin; punctuation becomes a pause."""
    lines = ["_ 120"]
    syllables = pinyin.split()
    for k, syl in enumerate(syllables):
        if not re.search(r"[a-zü]", syl.lower()):
            lines.append(f"_ {int(180 / rate)}")
            continue
        ini, fin, tone = syllable_units(syl)
        if k:  # the voice has no diphones across syllables: a few ms of silence joins them
            lines.append(f"_ {int(10 / rate)}")
        last = k == len(syllables) - 1 or not re.search(r"[a-zü]", syllables[k + 1].lower())
        if ini:
            base = INITIAL_MS.get(ini[:2] if ini[:2] in INITIAL_MS else ini[:1], 70)
            extra = 45 if len(ini) > 1 and ini[-1] in "iu" and ini not in ("zh", "ch", "sh") else 0
            lines.append(f"{ini} {int((base + extra) / rate)}")
        dur = 130 if tone == 5 else 300 if last else 215
        contour = " ".join(f"{p} {int(f * pitch_ratio)}" for p, f in TONE_CONTOUR[tone])
        lines.append(f"{fin} {int(dur / rate)} {contour}")
    lines.append("_ 150")
    return "\n".join(lines) + "\n"


def synthesize_cn1(pinyin: str, variant: str = "", rate: float = 1.0, pitch_ratio: float = 1.0) -> np.ndarray:
    """Speak toned pinyin with the cn1 voice; int16 mono at 16 kHz."""
    v = CN1_VARIANTS[variant]
    pho = pinyin_to_pho(pinyin, rate, v.pitch_ratio * pitch_ratio)
    return run_mbrola(CN1_DATABASE, pho, f"cn1 failed on {pinyin!r}", ("-l", str(v.voice_hz)))


def cn1_installed() -> bool:
    import shutil

    return CN1_DATABASE.is_file() and shutil.which("mbrola") is not None

"""The Spanish MBROLA voices, spoken without the gaps espeak-ng leaves in them.

espeak-ng drives MBROLA databases through per-voice phoneme tables, and its Spanish ones do
not fit the databases Debian ships: with mb-es1, mb-es2, mb-mx1, mb-mx2 and mb-vz1 a fifth of
the diphones in our catalogs are unknown (stressed "e/" and "o/" do not exist in them), and
MBROLA replaces each unknown diphone with silence ("cuatro" loses its final o); mb-es3's table
turns "cuatro" into "kbatho". So we take espeak-ng's phonemes and prosody from its one table
whose symbols are right apart from those two vowels (mb-es1), spell them in each database's
own inventory (probed with MBROLA itself; see each README in /usr/share/doc/mbrola-*) and run
MBROLA ourselves, as quantize.pinyin_mbrola does for Mandarin.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.audio import AudioError
from quantize.mbrola import run_mbrola

MBROLA_DIR = Path("/usr/share/mbrola")
SOURCE_VOICE = "mb-es1"
VOWELS = {"a", "e", "i", "o", "u"}


@dataclass(frozen=True)
class Database:
    spelling: dict[str, str] = field(default_factory=dict)
    """espeak-ng (mb-es1) symbol -> this database's symbol, where they differ."""
    pitch_ratio: float = 1.0
    """The source prosody is mb-es1's (male, 82-117 Hz in espeak-ng); a female voice speaks higher."""
    glides: tuple[str, str] | None = None
    """Symbols for i and u next to another vowel, where a database has them as glides."""
    caribbean: bool = False
    """b, d, g as spirants B, D, G except after silence or a nasal, and s aspirated (h) before a
    consonant or silence: the allophones a Venezuelan database was recorded with."""


# Every table starts from the two stressed vowels none of the databases has.
_STRESS = {"e/": "e", "o/": "o"}
DATABASES = {
    "mb-es1": Database(_STRESS),
    "mb-es2": Database(_STRESS),
    # es3 has neither w, x, T, L, tS, jj, J nor rr; its j is the jota, z the Castilian c/z.
    "mb-es3": Database(_STRESS | {"x": "j", "jj": "Y", "L": "Y", "tS": "H", "w": "u", "T": "z", "J": "N", "rr": "R"},
                       pitch_ratio=2.0),
    "mb-es4": Database(_STRESS | {"w": "u"}),
    # American Spanish: no Castilian T; ll as y.
    "mb-mx1": Database(_STRESS | {"T": "s", "L": "jj"}),
    "mb-mx2": Database(_STRESS | {"T": "s", "L": "j", "jj": "j", "J": "ny"}),
    # vz1: the jota as h, i/u before or after a vowel as j/w, and Caribbean allophones.
    "mb-vz1": Database(_STRESS | {"T": "s", "x": "h", "jj": "j"}, glides=("j", "w"), caribbean=True),
}


def drives(voice_name: str) -> bool:
    return voice_name in DATABASES


def respell(pho: str, db: Database) -> str:
    """An MBROLA .pho script with each phoneme spelled in the database's inventory."""
    rows = [line.split() for line in pho.splitlines() if line.strip() and not line.startswith(";")]
    phones = [db.spelling.get(r[0], r[0]) for r in rows]
    if db.glides:
        for k, ph in enumerate(phones):
            near_vowel = any(0 <= j < len(phones) and phones[j] in VOWELS - {"i", "u"} for j in (k - 1, k + 1))
            if ph in ("i", "u") and near_vowel:
                phones[k] = db.glides[0] if ph == "i" else db.glides[1]
    if db.caribbean:
        for k, ph in enumerate(phones):
            before = phones[k - 1] if k else "_"
            after = phones[k + 1] if k + 1 < len(phones) else "_"
            if ph in ("b", "d", "g") and before not in ("_", "m", "n"):
                phones[k] = ph.upper()
            elif ph == "s" and after not in VOWELS:
                phones[k] = "h"
    out = []
    for ph, row in zip(phones, rows, strict=True):
        pitch = [f"{float(v) * db.pitch_ratio:.0f}" if i % 2 else v for i, v in enumerate(row[2:])]
        out.append(" ".join([ph, row[1], *pitch]))
    return "\n".join(out) + "\n"


def synthesize_spanish_mbrola(text: str, voice_name: str, rate: float = 1.0, pitch: int = 50,
                              word_gap: int = 0) -> np.ndarray:
    """Speak Spanish text with one of the DATABASES; int16 mono at 16 kHz."""
    db = DATABASES[voice_name]
    database = MBROLA_DIR / voice_name.removeprefix("mb-") / voice_name.removeprefix("mb-")
    cmd = ["espeak-ng", "-v", SOURCE_VOICE, "-s", str(int(165 * rate)), "-p", str(pitch), "-g", str(word_gap), "-q",
           "--pho", "--", text]
    what = f"{voice_name} failed on {text!r}"
    try:
        pho = subprocess.run(cmd, capture_output=True, timeout=30, check=True).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise AudioError(f"espeak-ng for mbrola {what}: {exc}") from None
    # -e: a diphone still missing is spoken as silence rather than failing the clip.
    return run_mbrola(database, respell(pho, db), what, ("-e",))

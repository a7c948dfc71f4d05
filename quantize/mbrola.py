"""Run the MBROLA diphone synthesizer on a .pho script we wrote ourselves (Mandarin cn1, the
Spanish databases): espeak-ng cannot drive those voices correctly."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edge.audio import AudioError, read_wav


def run_mbrola(database: Path, pho: str, what: str, options: tuple[str, ...] = ()) -> np.ndarray:
    """int16 mono at 16 kHz from `database` speaking `pho`; AudioError names `what` on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        try:
            out = subprocess.run(["mbrola", *options, str(database), "-", str(wav)], input=pho.encode(),
                                 capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AudioError(f"mbrola {what}: {exc}") from None
        if out.returncode != 0 or not wav.is_file():
            raise AudioError(f"mbrola {what}: {out.stderr.decode(errors='replace').strip()[:200]}")
        return read_wav(wav)

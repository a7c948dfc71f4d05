"""Shared fixtures: real espeak-ng speech and a tiny bundle built by the real toolchain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DEV = ROOT.parent / "shared" / "data" / "real-dev"
TINY_CATALOG = """\
language = "en"
task = "command"

[intents]
lights_on = ["lights on", "turn on the lights"]
stop = ["stop"]
seven = ["seven"]

[negatives]
phrases = ["hello there", "good morning", "what a nice day", "the cat is sleeping", "window", "eleven"]
"""


def espeak(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """Real espeak-ng speech, int16 mono 16 kHz."""
    from edge.audio import read_wav

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    tmp = Path(subprocess.run(["mktemp", "--suffix=.wav"], capture_output=True, text=True).stdout.strip())
    try:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(tmp), text], check=True)
        return read_wav(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def with_silence(*clips: np.ndarray, gap_s: float = 1.0) -> np.ndarray:
    gap = np.zeros(int(gap_s * 16000), dtype=np.int16)
    parts = [gap]
    for c in clips:
        parts += [c.astype(np.int16), gap]
    return np.concatenate(parts)


TINY_DE_CATALOG = """\
language = "de"
task = "command"

[intents]
lights_on = ["Licht an", "mach das Licht an"]
stop = ["stopp", "halt"]
seven = ["sieben"]

[negatives]
phrases = ["hallo", "guten Morgen", "das Wetter ist schön", "die Katze schläft", "Fenster", "elf"]
"""


def build_bundle(catalog_text: str, work: Path, name: str) -> Path:
    """`python -m quantize build --quick` on a catalog given as text; returns work/name."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("pyopen_wakeword")
    catalog = work / f"{name}.toml"
    catalog.write_text(catalog_text)
    out = work / name
    proc = subprocess.run([sys.executable, "-m", "quantize", "-q", "build", "--catalog", str(catalog), "--out",
                           str(out), "--quick", "--no-real"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def copy_bundle(bundle: Path, out: Path, **manifest: object) -> Path:
    """Copy a bundle elsewhere, keeping its embedding reachable, optionally changing manifest keys."""
    import json

    shutil.copytree(bundle, out)
    m = json.loads((out / "manifest.json").read_text())
    m.update(manifest)
    if "embedding" in m:  # the manifest's embedding path is relative to the bundle
        m["embedding"]["path"] = str((bundle / m["embedding"]["path"]).resolve())
    (out / "manifest.json").write_text(json.dumps(m))
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle built from TINY_CATALOG by `python -m quantize build --quick` (about a minute)."""
    return build_bundle(TINY_CATALOG, tmp_path_factory.mktemp("tiny"), "bundle")


@pytest.fixture(scope="session")
def tiny_de_bundle(tmp_path_factory) -> Path:
    """A German bundle built from TINY_DE_CATALOG, named de-tiny."""
    return build_bundle(TINY_DE_CATALOG, tmp_path_factory.mktemp("tiny-de"), "de-tiny")

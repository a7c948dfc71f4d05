"""Every shipped bundle loads under the runtime's own frontend and records its measurements."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.bundle import find_bundles, load_bundle
from edge.frontend import FrontendConfig
from quantize.build import MAX_MODEL_BYTES

MODELS = Path(__file__).resolve().parent.parent / "models"
BUNDLES = [p for p in find_bundles(MODELS) + find_bundles(MODELS / "keywords") if p.name != "embedding"]


@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_shipped_bundle_is_int8_measured_and_fits(path: Path):
    b = load_bundle(path, FrontendConfig())
    m = b.manifest
    assert b.input.dtype == "int8" and b.output.dtype == "int8"
    # 150 KB for command and wake models; phrasebook and language-id ensembles of three may spend more.
    assert b.model_path.stat().st_size <= MAX_MODEL_BYTES[m["task"]]
    metrics = m["metrics"]
    assert 0 < metrics["heldout_int8_accuracy"] <= 1 and 0 < metrics["heldout_float_accuracy"] <= 1
    assert metrics["heldout_float_accuracy"] - metrics["heldout_int8_accuracy"] <= 0.01  # the parity gate
    assert m["training"]["heldout_voices"] and m["training"]["examples"] > 0
    assert (path / "report.md").is_file()


def test_the_embedding_bundle_carries_its_notice():
    b = load_bundle(MODELS / "embedding", FrontendConfig())
    assert b.task == "embedding" and "Apache" in (MODELS / "embedding" / "NOTICE").read_text()
    assert b.manifest["quantization"]["parity"]["cosine_min"] >= 0.98


def test_the_keypad_hears_digits_spoken_in_a_row(tmp_path: Path):
    """FSDD-style clips as each speaker's stream, through one edge pipeline (the real-speech
    `fsdd_digit_streams` figure): fresh espeak-ng digits by two voices, 0.35 s apart."""
    from edge.audio import write_wav
    from quantize.realdev import fsdd_streams
    from tests.conftest import ROOT, espeak

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for speaker, voice in (("us", "en-us"), ("rp", "en-gb-x-rp")):
        for d in (1, 4, 7, 9):
            write_wav(tmp_path / f"{d}_{speaker}_0.wav", espeak(words[d], voice, 150))
    result = fsdd_streams(ROOT / "models" / "keywords" / "en-digits", tmp_path)
    assert result["clips"] == 8 and result["speakers"] == 2 and result["gap_s"] == 0.35
    assert result["accuracy"] + result["wrong"] + result["rejected"] == pytest.approx(1.0)
    assert result["accuracy"] >= 0.75, result


def test_the_readme_models_table_is_what_the_manifests_say():
    from quantize.table import models_table

    root = Path(__file__).resolve().parent.parent
    table = models_table(root / "models")
    readme = (root / "README.md").read_text()
    assert table.split("\n", 1)[0] in readme, "README has no models table"
    assert table in readme, "README's models table is stale: paste `python -m quantize table`"

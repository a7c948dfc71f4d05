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

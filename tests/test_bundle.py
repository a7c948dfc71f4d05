"""Bundles: a good one loads; every kind of mismatch or corruption is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import BundleError, TensorSpec, dequantize, load_bundle, quantize
from edge.frontend import FrontendConfig
from tests.conftest import copy_bundle


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return copy_bundle(bundle, tmp_path / "b")


def _edit(path: Path, fn) -> None:
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _refused(path: Path, match: str, frontend: FrontendConfig | None = None) -> None:
    with pytest.raises(BundleError, match=match) as err:
        load_bundle(path, frontend or FrontendConfig())
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_good_bundle_loads_and_describes_itself(tiny_bundle, tmp_path):
    b = load_bundle(_copy(tiny_bundle, tmp_path), FrontendConfig())
    assert b.labels[0] == "_unknown_" and set(b.labels[1:]) == {"lights_on", "stop", "seven"}
    assert b.input.dtype == "int8" and b.output.dtype == "int8"
    assert b.input.shape == (1, 16, 96)
    assert b.frontend.hash == FrontendConfig().hash


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m.update(schema_version=99), "schema_version"),
    (lambda m: m["frontend"]["config"].update(mel_bands=40), "frontend hash"),
    (lambda m: m["input"].update(shape=[1, 20, 96]), "input is int8"),
    (lambda m: m["input"].update(scale=123.0), "quantization"),
    (lambda m: m["output"].update(dtype="float32"), "output"),
    (lambda m: m.update(labels=["a", "a", "b", "c"]), "not unique"),
    (lambda m: m.update(labels=["a", "b"]), "outputs but 2 labels"),
    (lambda m: m.update(task="dance"), "unknown task"),
    (lambda m: m.pop("labels"), "no 'labels'"),
    (lambda m: m.update(sha256="0" * 64), "sha256"),
])
def test_manifest_mismatches_are_refused(tiny_bundle, tmp_path, mutate, match):
    path = _copy(tiny_bundle, tmp_path)
    _edit(path, mutate)
    _refused(path, match)


def test_a_runtime_with_another_frontend_refuses_the_model(tiny_bundle, tmp_path):
    _refused(_copy(tiny_bundle, tmp_path), "does not match the runtime", FrontendConfig(mel_bands=40))


def test_corrupt_missing_and_garbled_files_are_refused(tiny_bundle, tmp_path):
    path = _copy(tiny_bundle, tmp_path)
    _edit(path, lambda m: m.pop("sha256"))
    data = (path / "model.tflite").read_bytes()
    (path / "model.tflite").write_bytes(data[: len(data) // 3])
    _refused(path, "not a valid TFLite model")
    (path / "model.tflite").unlink()
    _refused(path, "model.tflite is missing")
    (path / "manifest.json").write_text("{not json")
    _refused(path, "not valid JSON")
    (path / "manifest.json").unlink()
    _refused(path, "manifest.json is missing")
    _refused(tmp_path / "nowhere", "no such bundle")


def test_int8_helpers_round_trip():
    spec = TensorSpec((1, 4), "int8", 0.05, -3)
    x = np.array([-5.0, 0.0, 0.5, 7.0], dtype=np.float32)
    q = quantize(x, spec)
    assert q.dtype == np.int8
    assert q.tolist() == [-103, -3, 7, 127]  # 7.0 saturates at 127
    np.testing.assert_allclose(dequantize(q, spec)[:3], x[:3], atol=0.025)


def test_bundles_with_their_own_copies_of_one_embedding_share_it_and_different_ones_are_refused(tmp_path):
    import hashlib
    import shutil

    from edge.pipeline import load_models

    root = Path(__file__).resolve().parent.parent / "models"
    copy = tmp_path / "elsewhere"
    shutil.copytree(root / "en-wake", copy / "en-wake")
    shutil.copy(root / "embedding" / "model.tflite", copy / "model.tflite")
    _edit(copy / "en-wake", lambda m: m["embedding"].update(path="../model.tflite"))
    models = load_models([copy / "en-wake", root / "en-command"], FrontendConfig())
    assert models.embedder is not None and len(models.heads) == 2

    with open(copy / "model.tflite", "ab") as f:  # another model: its manifest says so
        f.write(b"\0")
    sha = hashlib.sha256((copy / "model.tflite").read_bytes()).hexdigest()
    _edit(copy / "en-wake", lambda m: m["embedding"].update(sha256=sha))
    with pytest.raises(BundleError, match="different embedding models") as err:
        load_models([copy / "en-wake", root / "en-command"], FrontendConfig())
    assert "\n" not in str(err.value)

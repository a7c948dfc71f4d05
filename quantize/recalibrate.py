"""Re-derive a bundle's threshold from its cached held-out features (no retraining).

The feature cache (.cache/features) holds the held-out rows of every build; the bundle's
manifest names its held-out voices, which identifies the cache file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.bundle import read_manifest
from quantize.build import calibrate_command_threshold, calibrate_wake_threshold
from quantize.convert import tflite_predict
from quantize.corpus import CACHE


def cached_features(manifest: dict) -> tuple[Path, dict[str, np.ndarray]]:
    """The feature-cache file a bundle was trained from: the one its manifest names, or for a
    bundle built before manifests named it, one with its task, held-out voices and row counts."""
    named = manifest["training"].get("features_cache")
    if named:
        path = CACHE / "features" / named
        if not path.is_file():
            raise RuntimeError(f"bundle {manifest.get('name')!r} was trained from {named}, which is not in "
                               f"{CACHE / 'features'}; rebuild it instead")
        with np.load(path) as data:
            return path, dict(data)
    held_voices = set(manifest["training"]["heldout_voices"])
    n_labels = len(manifest["labels"])
    rows = (manifest["training"].get("examples"), manifest["training"].get("heldout_examples"))
    for path in sorted((CACHE / "features").glob(f"{manifest['task']}-*.npz"), key=lambda p: -p.stat().st_mtime):
        with np.load(path) as data:  # lazy: a candidate's embeddings are read only if it matches
            held = data["heldout"]
            # Held-out rows also hold the other languages' held-out voices (speech to leave alone).
            voices = set(data["voice"][held]) - {"noise"}
            if not held_voices <= voices or int(data["label"].max()) + 1 != n_labels:
                continue
            # Another build for the same language shares the held-out voices: the row counts tell them apart.
            if rows != (None, None) and rows != (len(held), int(held.sum())):
                continue
            return path, dict(data)
    raise RuntimeError(f"no cached features match bundle {manifest.get('name')!r}; rebuild it instead")


def recalibrate(bundle: Path) -> dict:
    manifest = read_manifest(bundle)  # names the bundle when it is missing or corrupt
    if "training" not in manifest:
        raise ValueError(f"bundle '{bundle}' records no training (not built by this toolchain): nothing to recalibrate")
    path, data = cached_features(manifest)
    held = data["heldout"]
    logits = manifest["output"].get("activation") == "logits"
    probs = tflite_predict(bundle / "model.tflite", data["emb"][held], logits=logits)
    if manifest["task"] == "wake":
        from quantize.negstream import apply_stream_calibration

        stream = apply_stream_calibration(bundle, probs[:, 1], data["label"][held])
        if stream is not None:
            return {**stream, "features": path.name}
        calib = calibrate_wake_threshold(probs, data["label"][held])
        manifest["decision"].update(calib)
        threshold = calib["threshold"]
    else:
        threshold, calib = calibrate_command_threshold(probs, data["label"][held])
        manifest["decision"]["threshold"] = threshold
        manifest["metrics"].update(calib)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return {"threshold": threshold, **calib, "features": path.name}

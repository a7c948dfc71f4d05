"""Re-derive a bundle's threshold from its cached held-out features (no retraining).

The feature cache (.cache/features) holds the held-out rows of every build; the bundle's
manifest names its held-out voices, which identifies the cache file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from quantize.build import calibrate_command_threshold, calibrate_wake_threshold
from quantize.convert import tflite_predict
from quantize.corpus import CACHE


def recalibrate(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    held_voices = set(manifest["training"]["heldout_voices"])
    n_labels = len(manifest["labels"])
    for path in sorted((CACHE / "features").glob(f"{manifest['task']}-*.npz"), key=lambda p: -p.stat().st_mtime):
        data = np.load(path)
        held = data["heldout"]
        voices = set(data["voice"][held]) - {"noise"}
        if voices != held_voices or int(data["label"].max()) + 1 != n_labels:
            continue
        # Another build for the same language shares the held-out voices: the row counts tell them apart.
        rows = (manifest["training"].get("examples"), manifest["training"].get("heldout_examples"))
        if rows != (None, None) and rows != (len(held), int(held.sum())):
            continue
        logits = manifest["output"].get("activation") == "logits"
        probs = tflite_predict(bundle / "model.tflite", data["emb"][held], logits=logits)
        if manifest["task"] == "wake":
            calib = calibrate_wake_threshold(probs, data["label"][held])
            manifest["decision"].update(calib)
            threshold = calib["threshold"]
        else:
            threshold, calib = calibrate_command_threshold(probs, data["label"][held])
            manifest["decision"]["threshold"] = threshold
            manifest["metrics"].update(calib)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return {"threshold": threshold, **calib, "features": path.name}
    raise RuntimeError(f"no cached held-out features match {bundle}; rebuild it instead")

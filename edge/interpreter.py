"""Find a TFLite interpreter: ai-edge-litert first, then tflite-runtime, then TensorFlow."""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger(__name__)

CANDIDATES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


def interpreter_class() -> tuple[type, str]:
    """Return (Interpreter class, module name) of the first interpreter that imports."""
    errors = []
    for name in CANDIDATES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return module.Interpreter, name
    raise RuntimeError("no TFLite interpreter found; install ai-edge-litert (" + "; ".join(errors) + ")")


def make_interpreter(model_path: str, num_threads: int = 1) -> Any:
    cls, name = interpreter_class()
    log.debug("TFLite interpreter from %s", name)
    interp = cls(model_path=str(model_path), num_threads=num_threads)
    interp.allocate_tensors()
    return interp

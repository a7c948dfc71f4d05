"""Model bundles: a directory holding `model.tflite` and `manifest.json`.

The manifest says what the model expects and how to decide on its output. Loading checks it
against the interpreter's own tensors and against the runtime's frontend, and refuses any
mismatch with a one-line reason (BundleError).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.frontend import FrontendConfig
from edge.interpreter import make_interpreter

SCHEMA_VERSION = 1
TASKS = ("command", "wake", "embedding", "phrase", "langid")
UNKNOWN = "_unknown_"


class BundleError(Exception):
    """A bundle that cannot be used; the message is one line naming the bundle and the reason."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def from_detail(cls, detail: dict) -> TensorSpec:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return cls(tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name,
                   float(scale), int(zero_point))

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float → int8/uint8 with the tensor's scale and zero point (identity for float tensors)."""
    if spec.dtype.startswith("float"):
        return np.asarray(x, dtype=spec.dtype)
    info = np.iinfo(spec.dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.dtype.startswith("float"):
        return np.asarray(q, dtype=np.float32)
    return ((np.asarray(q, dtype=np.float32) - spec.zero_point) * spec.scale).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax (for models that output logits)."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return (e / np.sum(e, axis=-1, keepdims=True)).astype(np.float32)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    name: str
    language: str
    task: str
    labels: tuple[str, ...]
    texts: dict[str, str]
    input_features: str
    """"frontend" (frames of the frontend) or "embedding" (speech-embedding vectors)."""
    window: int
    """Feature vectors the model sees at once."""
    hop: int
    """Run a wake model every `hop` new feature vectors."""
    input: TensorSpec
    output: TensorSpec
    frontend: FrontendConfig
    output_logits: bool = False
    """The model outputs logits (manifest output.activation "logits"); the runner applies the softmax."""
    decision: dict[str, Any] = field(default_factory=dict)
    state: tuple[dict, ...] = ()
    embedding_path: Path | None = None

    @property
    def model_path(self) -> Path:
        return self.path / "model.tflite"

    def posteriors(self, output: np.ndarray) -> np.ndarray:
        """The model's dequantized output as posteriors (softmax applied when it outputs logits)."""
        return softmax(output) if self.output_logits else output

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "0"))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "task": self.task, "version": self.version}


def _fail(path: Path, reason: str) -> BundleError:
    return BundleError(f"bundle '{path}': {reason}")


def _require(manifest: dict, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in manifest:
        raise _fail(path, f"manifest.json has no '{key}'")
    value = manifest[key]
    if not isinstance(value, kind):
        raise _fail(path, f"manifest.json '{key}' has the wrong type ({type(value).__name__})")
    return value


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise _fail(path, "no such bundle directory")
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise _fail(path, "manifest.json is missing")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise _fail(path, "manifest.json is not a JSON object")
    return manifest


def load_bundle(path: str | Path, runtime_frontend: FrontendConfig | None = None) -> Bundle:
    """Read and validate a bundle; runtime_frontend is the frontend the runtime will run."""
    path = Path(path)
    manifest = read_manifest(path)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise _fail(path, f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    task = _require(manifest, "task", str, path)
    if task not in TASKS:
        raise _fail(path, f"unknown task {task!r}")
    labels = _require(manifest, "labels", list, path)
    if task != "embedding" and (not labels or not all(isinstance(x, str) and x for x in labels)):
        raise _fail(path, "labels must be a non-empty list of names")
    if len(set(labels)) != len(labels):
        raise _fail(path, "labels are not unique")
    fe = _require(manifest, "frontend", dict, path)
    try:
        frontend = FrontendConfig.from_dict(fe.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"frontend config is invalid: {exc}") from None
    if fe.get("hash") != frontend.hash:
        raise _fail(path, f"frontend hash {fe.get('hash')!r} does not match its own config ({frontend.hash})")
    if runtime_frontend is not None and frontend.hash != runtime_frontend.hash:
        raise _fail(path, f"frontend hash {frontend.hash} does not match the runtime's frontend "
                          f"({runtime_frontend.hash}); rebuild the model for this frontend")
    model_path = path / "model.tflite"
    if not model_path.is_file():
        raise _fail(path, "model.tflite is missing")
    if "sha256" in manifest and file_sha256(model_path) != manifest["sha256"]:
        raise _fail(path, "model.tflite does not match the sha256 in its manifest (corrupt or replaced)")
    spec_in = _require(manifest, "input", dict, path)
    spec_out = _require(manifest, "output", dict, path)
    try:
        want_in = TensorSpec(tuple(spec_in["shape"]), spec_in["dtype"], float(spec_in.get("scale", 0.0)),
                             int(spec_in.get("zero_point", 0)))
        want_out = TensorSpec(tuple(spec_out["shape"]), spec_out["dtype"], float(spec_out.get("scale", 0.0)),
                              int(spec_out.get("zero_point", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"input/output spec is invalid: {exc}") from None
    have_in, have_out = _model_specs(path, model_path, manifest)
    for what, want, have in (("input", want_in, have_in), ("output", want_out, have_out)):
        if want.shape != have.shape or want.dtype != have.dtype:
            raise _fail(path, f"{what} is {have.dtype}{list(have.shape)} in model.tflite but "
                              f"{want.dtype}{list(want.shape)} in the manifest")
        if not have.dtype.startswith("float") and (
            not np.isclose(want.scale, have.scale, rtol=1e-5) or want.zero_point != have.zero_point
        ):
            raise _fail(path, f"{what} quantization in model.tflite ({have.scale:g}, {have.zero_point}) "
                              f"differs from the manifest ({want.scale:g}, {want.zero_point})")
    activation = spec_out.get("activation", "softmax")
    if activation not in ("softmax", "logits"):
        raise _fail(path, f"output activation {activation!r} is not 'softmax' or 'logits'")
    if task not in ("embedding",) and have_out.shape[-1] != len(labels):
        raise _fail(path, f"model has {have_out.shape[-1]} outputs but {len(labels)} labels")
    embedding_path = None
    if manifest.get("input_features") == "embedding":
        emb = _require(manifest, "embedding", dict, path)
        embedding_path = (path / emb.get("path", "")).resolve()
        if not embedding_path.is_file():
            raise _fail(path, f"embedding model {emb.get('path')!r} is missing")
        if emb.get("sha256") and file_sha256(embedding_path) != emb["sha256"]:
            raise _fail(path, "embedding model does not match the sha256 in the manifest")
    texts = manifest.get("texts", {})
    return Bundle(
        path=path,
        manifest=manifest,
        name=str(manifest.get("name", path.name)),
        language=str(manifest.get("language", "")),
        task=task,
        labels=tuple(labels),
        texts={str(k): str(v) for k, v in texts.items()} if isinstance(texts, dict) else {},
        input_features=str(manifest.get("input_features", "frontend")),
        window=int(manifest.get("window", want_in.shape[1] if len(want_in.shape) > 1 else 1)),
        hop=int(manifest.get("hop", 1)),
        input=have_in,
        output=have_out,
        frontend=frontend,
        output_logits=activation == "logits",
        decision=dict(manifest.get("decision", {})),
        state=tuple(manifest.get("state", ())),
        embedding_path=embedding_path,
    )


def _model_specs(path: Path, model_path: Path, manifest: dict) -> tuple[TensorSpec, TensorSpec]:
    try:
        interp = make_interpreter(str(model_path))
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"model.tflite is not a valid TFLite model ({first})") from None
    ins = {d["name"]: d for d in interp.get_input_details()}
    outs = {d["name"]: d for d in interp.get_output_details()}
    in_name = manifest.get("input", {}).get("name")
    out_name = manifest.get("output", {}).get("name")
    d_in = ins.get(in_name) if in_name else interp.get_input_details()[0]
    d_out = outs.get(out_name) if out_name else interp.get_output_details()[0]
    if d_in is None or d_out is None:
        raise _fail(path, f"model.tflite has no tensor named {in_name if d_in is None else out_name!r}")
    return TensorSpec.from_detail(d_in), TensorSpec.from_detail(d_out)


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Bundle directories (those with a manifest.json) directly under models_dir."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/manifest.json"))

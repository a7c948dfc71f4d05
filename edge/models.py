"""Model runners: the speech embedding and our int8 heads (window and streaming-state models).

Each runner owns its ring buffer and its interpreter, has `reset()`, and takes feature
vectors one step at a time. The stream is treated as if preceded by silence, so the first
utterance of a file is handled exactly like any later one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bundle import Bundle, BundleError, TensorSpec, dequantize, quantize
from edge.frontend import Frontend, FrontendConfig
from edge.interpreter import make_interpreter

EMBEDDING_WINDOW = 76
"""Log-mel frames per embedding (0.775 s)."""
EMBEDDING_HOP = 8
"""One embedding every 8 frames (80 ms)."""
EMBEDDING_DIM = 96
MEL_SCALE, MEL_OFFSET = 0.1, 2.0
"""The embedding was trained on log-mels scaled x * 0.1 + 2."""


def silence_logmel(cfg: FrontendConfig) -> np.ndarray:
    """The log-mel frame of digital silence: the dither floor through the mel bank."""
    fe = Frontend(cfg)
    return fe.compute(np.zeros(cfg.fft_size, dtype=np.float32))[0]


class Embedder:
    """Log-mel frames in, a 96-dim speech embedding out every EMBEDDING_HOP frames."""

    def __init__(self, model_path: str | Path, frontend: FrontendConfig, num_threads: int = 1) -> None:
        if frontend.kind != "logmel":
            raise BundleError(f"embedding '{model_path}': needs a logmel frontend, not {frontend.kind}")
        self.model_path = Path(model_path)
        try:
            self._interp = make_interpreter(str(model_path), num_threads)
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"embedding '{model_path}': not a valid TFLite model ({exc})") from None
        detail_in = self._interp.get_input_details()[0]
        self._in_index = detail_in["index"]
        self._in_spec = TensorSpec.from_detail(detail_in)
        detail_out = self._interp.get_output_details()[0]
        self._out_index = detail_out["index"]
        self._out_spec = TensorSpec.from_detail(detail_out)
        if self._in_spec.shape[1:3] != (EMBEDDING_WINDOW, frontend.mel_bands):
            raise BundleError(f"embedding '{model_path}': input {list(self._in_spec.shape)} does not fit "
                              f"{EMBEDDING_WINDOW} frames of {frontend.mel_bands} mel bands")
        self._silence = silence_logmel(frontend)
        self._ring = np.empty((EMBEDDING_WINDOW, frontend.mel_bands), dtype=np.float32)
        self._input = np.empty((1, EMBEDDING_WINDOW, frontend.mel_bands, 1), dtype=np.float32)
        self.silence_embedding = self._embed(np.tile(self._silence, (EMBEDDING_WINDOW, 1)))
        self.reset()

    def reset(self) -> None:
        self._ring[:] = self._silence
        self._pos = 0
        self._since = 0

    def push(self, mel_frame: np.ndarray) -> np.ndarray | None:
        """Add one log-mel frame; return an embedding when one is due, else None."""
        self._ring[self._pos] = mel_frame
        self._pos = (self._pos + 1) % EMBEDDING_WINDOW
        self._since += 1
        if self._since < EMBEDDING_HOP:
            return None
        self._since = 0
        # The ring, oldest frame first, straight into the model's input (no copy in between).
        scaled = self._input[0, :, :, 0]
        oldest = EMBEDDING_WINDOW - self._pos
        np.multiply(self._ring[self._pos :], MEL_SCALE, out=scaled[:oldest])
        np.multiply(self._ring[: self._pos], MEL_SCALE, out=scaled[oldest:])
        return self._invoke()

    def compute(self, logmel: np.ndarray, first: int = 0) -> np.ndarray:
        """Embeddings of a whole clip, as `push` would give them from a fresh state
        (from the `first`-th embedding on)."""
        padded = np.concatenate([np.tile(self._silence, (EMBEDDING_WINDOW, 1)), logmel])
        ends = np.arange(EMBEDDING_WINDOW + EMBEDDING_HOP, len(padded) + 1, EMBEDDING_HOP)[first:]
        out = np.empty((len(ends), EMBEDDING_DIM), dtype=np.float32)
        for i, end in enumerate(ends):
            out[i] = self._embed(padded[end - EMBEDDING_WINDOW : end])
        return out

    def _embed(self, window: np.ndarray) -> np.ndarray:
        np.multiply(window, MEL_SCALE, out=self._input[0, :, :, 0])
        return self._invoke()

    def _invoke(self) -> np.ndarray:
        self._input += MEL_OFFSET
        self._interp.set_tensor(self._in_index, quantize(self._input, self._in_spec))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out_index).reshape(-1)
        return dequantize(out, self._out_spec)


class WindowHead:
    """An int8 classifier over the last `window` feature vectors, from a bundle."""

    def __init__(self, bundle: Bundle, num_threads: int = 1, fill: np.ndarray | None = None) -> None:
        self.bundle = bundle
        self._interp = make_interpreter(str(bundle.model_path), num_threads)
        self._in_index = self._interp.get_input_details()[0]["index"]
        self._out_index = self._interp.get_output_details()[0]["index"]
        self.window = bundle.input.shape[1]
        self.dim = bundle.input.shape[-1]
        self._fill = np.zeros(self.dim, dtype=np.float32) if fill is None else fill.astype(np.float32)
        self._ring = np.empty((self.window, self.dim), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._ring[:] = self._fill
        self._pos = 0
        self.steps = 0

    def push(self, vector: np.ndarray) -> None:
        self._ring[self._pos] = vector
        self._pos = (self._pos + 1) % self.window
        self.steps += 1

    def current_window(self) -> np.ndarray:
        """The current window, oldest vector first (what `scores` classifies)."""
        return np.concatenate([self._ring[self._pos :], self._ring[: self._pos]])

    def scores(self) -> np.ndarray:
        """Posteriors over the bundle's labels for the current window."""
        return self.classify(self.current_window())

    def classify(self, window: np.ndarray) -> np.ndarray:
        x = quantize(window.reshape(self.bundle.input.shape), self.bundle.input)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        out = dequantize(self._interp.get_tensor(self._out_index), self.bundle.output)
        return self.bundle.posteriors(out.reshape(-1))


class StatefulHead:
    """A streaming recurrent model whose state is an explicit input and output.

    The manifest lists `state` as [{"input": name, "output": name}, ...]; the loop carries each
    state from one step to the next, feeding tensors by name.
    """

    def __init__(self, bundle: Bundle, num_threads: int = 1) -> None:
        self.bundle = bundle
        self._interp = make_interpreter(str(bundle.model_path), num_threads)
        ins = {d["name"]: d for d in self._interp.get_input_details()}
        outs = {d["name"]: d for d in self._interp.get_output_details()}
        try:
            self._x = ins[bundle.manifest["input"]["name"]]
            self._y = outs[bundle.manifest["output"]["name"]]
            self._pairs = [(ins[s["input"]], outs[s["output"]]) for s in bundle.state]
        except KeyError as exc:
            raise BundleError(f"bundle '{bundle.path}': no tensor named {exc}") from None
        self._x_spec = TensorSpec.from_detail(self._x)
        self._y_spec = TensorSpec.from_detail(self._y)
        self._states = [np.zeros(d_in["shape"], dtype=d_in["dtype"]) for d_in, _ in self._pairs]
        self.last = np.zeros(len(bundle.labels), dtype=np.float32)
        self.reset()

    def push(self, vector: np.ndarray) -> None:
        """Same interface as WindowHead: consume one vector, keep the newest posteriors."""
        self.last = self.step(vector)
        self.steps += 1

    def scores(self) -> np.ndarray:
        return self.last

    def reset(self) -> None:
        self.steps = 0
        for (d_in, _), st in zip(self._pairs, self._states, strict=True):
            # A zero float state is the quantized zero point.
            st[...] = quantize(np.zeros(d_in["shape"], dtype=np.float32), TensorSpec.from_detail(d_in))

    def step(self, vector: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._x["index"], quantize(vector.reshape(self._x_spec.shape), self._x_spec))
        for (d_in, _), st in zip(self._pairs, self._states, strict=True):
            self._interp.set_tensor(d_in["index"], st)
        self._interp.invoke()
        for (d_in, d_out), st in zip(self._pairs, self._states, strict=True):
            # Output and input state tensors may carry different quantization parameters.
            value = dequantize(self._interp.get_tensor(d_out["index"]), TensorSpec.from_detail(d_out))
            st[...] = quantize(value.reshape(st.shape), TensorSpec.from_detail(d_in))
        out = dequantize(self._interp.get_tensor(self._y["index"]), self._y_spec)
        return self.bundle.posteriors(out.reshape(-1))

"""Full-integer int8 TFLite conversion (int8 input and output, batch 1) and the parity gate."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from edge.bundle import TensorSpec, dequantize, quantize, softmax
from edge.interpreter import make_interpreter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger(__name__)


def to_int8_tflite(model, representative: np.ndarray, out_path: Path, samples: int = 300,
                   logits: bool = False, per_channel: bool = True) -> None:
    """With `logits`, the model's softmax stays out of the int8 graph: an int8 posterior tops
    out at 255/256, so a wake model's confident hits and its confident false alarms all read
    0.996 and no threshold can part them; int8 logits keep that margin (the runtime applies
    the softmax in float). Without `per_channel`, weights get one scale per tensor: an
    unrolled GRU repeats its biases at every step, each with a scale per channel, and those
    scales alone were a third of a 133 KB head."""
    import keras
    import tensorflow as tf

    if logits:
        model = keras.Model(model.inputs, model.get_layer("logits").output)
    # Batch-1 graph around the trained model: the device runs one window at a time.
    inp = keras.Input(shape=representative.shape[1:], batch_size=1, name="features")
    fixed = keras.Model(inp, model(inp, training=False))

    rng = np.random.default_rng(0)
    pick = rng.choice(len(representative), size=min(samples, len(representative)), replace=False)

    def rep():
        for i in pick:
            yield [representative[i : i + 1].astype(np.float32)]

    with tempfile.TemporaryDirectory():
        conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        conv._experimental_disable_per_channel = not per_channel
        out_path.write_bytes(strip_tensor_names(conv.convert()))


def strip_tensor_names(model: bytes) -> bytes:
    """The flatbuffer without the names of internal tensors (the runtime looks up only the
    input and output by name): a fifth of an unrolled GRU head's file, and what brings two
    en-command cgru heads in one model from 181 to 142 KB. Weights and graph are untouched."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    for graph in m.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for i, tensor in enumerate(graph.tensors):
            if i not in keep:
                tensor.name = b""
    builder = flatbuffers.Builder(len(model))
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_predict(path: Path, x: np.ndarray, logits: bool = False) -> np.ndarray:
    """Posteriors of a batch-1 TFLite model for every row of x (`logits`: the model outputs
    logits, to which this applies the softmax)."""
    interp = make_interpreter(str(path))
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    s_in, s_out = TensorSpec.from_detail(d_in), TensorSpec.from_detail(d_out)
    out = np.empty((len(x), s_out.shape[-1]), dtype=np.float32)
    for i in range(len(x)):
        interp.set_tensor(d_in["index"], quantize(x[i : i + 1].astype(np.float32), s_in))
        interp.invoke()
        out[i] = dequantize(interp.get_tensor(d_out["index"]), s_out).reshape(-1)
    return softmax(out) if logits else out


def io_specs(path: Path) -> tuple[TensorSpec, TensorSpec, str, str]:
    interp = make_interpreter(str(path))
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    return TensorSpec.from_detail(d_in), TensorSpec.from_detail(d_out), d_in["name"], d_out["name"]

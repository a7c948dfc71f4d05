"""A streaming recurrent model whose state is an explicit input/output, carried by the loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.bundle import SCHEMA_VERSION, BundleError, TensorSpec, load_bundle
from edge.frontend import FrontendConfig
from edge.models import StatefulHead


def test_the_runtime_carries_gru_state_frame_to_frame(tmp_path):
    tf = pytest.importorskip("tensorflow")
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x_in = keras.Input((8,), batch_size=1, name="x")
    h_in = keras.Input((16,), batch_size=1, name="h")
    h_out = layers.GRUCell(16)(x_in, [h_in])[0]
    y = layers.Dense(3, activation="softmax")(h_out)
    model = keras.Model([x_in, h_in], [y, h_out])

    rng = np.random.default_rng(0)
    seq = rng.standard_normal((40, 8)).astype(np.float32)
    # Calibrate on real states: run the float model over sequences and record its states.
    h = np.zeros((1, 16), np.float32)
    reps = []
    for t in range(len(seq)):
        reps.append([seq[t : t + 1], h])
        y_f, h = model([seq[t : t + 1], h])
        h = np.asarray(h)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter(reps)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    bundle = tmp_path / "gru"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(conv.convert())

    from edge.interpreter import make_interpreter

    interp = make_interpreter(str(bundle / "model.tflite"))
    ins = {tuple(d["shape"]): d for d in interp.get_input_details()}
    outs = {tuple(d["shape"]): d for d in interp.get_output_details()}
    fe = FrontendConfig()
    manifest = {
        "schema_version": SCHEMA_VERSION, "name": "gru", "language": "en", "task": "command",
        "labels": ["_unknown_", "a", "b"], "input_features": "frontend",
        "input": TensorSpec.from_detail(ins[(1, 8)]).to_dict() | {"name": ins[(1, 8)]["name"]},
        "output": TensorSpec.from_detail(outs[(1, 3)]).to_dict() | {"name": outs[(1, 3)]["name"]},
        "state": [{"input": ins[(1, 16)]["name"], "output": outs[(1, 16)]["name"]}],
        "frontend": {"config": fe.to_dict(), "hash": fe.hash},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    head = StatefulHead(load_bundle(bundle, fe))

    h = np.zeros((1, 16), np.float32)
    worst = 0.0
    for t in range(len(seq)):
        y_f, h = model([seq[t : t + 1], h])
        h = np.asarray(h)
        head.push(seq[t])
        worst = max(worst, float(np.abs(head.scores() - np.asarray(y_f)[0]).max()))
    assert head.steps == len(seq)
    assert worst < 0.08  # int8 posteriors follow the float model over the whole sequence
    head.reset()  # a fresh utterance starts from a zero state again
    head.push(seq[0])
    y0, _ = model([seq[:1], np.zeros((1, 16), np.float32)])
    assert np.abs(head.scores() - np.asarray(y0)[0]).max() < 0.08


@pytest.mark.parametrize("arch", ["cnn", "cgru"])
def test_default_heads_learn_a_sequence_task_and_keep_it_in_int8(arch, tmp_path):
    """Which of two bumps comes first in a 16-step window: order that a bag of frames cannot tell."""
    pytest.importorskip("tensorflow")
    from quantize.convert import tflite_predict, to_int8_tflite
    from quantize.train import TrainConfig, predict, train

    rng = np.random.default_rng(1)
    n = 1200
    x = rng.standard_normal((n, 16, 96)).astype(np.float32) * 0.5
    y = rng.integers(0, 2, n)
    for i in range(n):
        a, b = sorted(rng.choice(16, 2, replace=False))
        first, second = (a, b) if y[i] else (b, a)
        x[i, first, :48] += 2.0
        x[i, second, 48:] += 2.0
    model = train(x[:1000], y[:1000], 2, TrainConfig(arch=arch, epochs=25, hidden=32), progress=False)
    float_acc = float(np.mean(predict(model, x[1000:]).argmax(1) == y[1000:]))
    to_int8_tflite(model, x[:1000], tmp_path / "m.tflite")
    int8_acc = float(np.mean(tflite_predict(tmp_path / "m.tflite", x[1000:]).argmax(1) == y[1000:]))
    assert float_acc > 0.9
    assert int8_acc >= float_acc - 0.03


def test_an_ensemble_of_heads_is_one_int8_model_that_averages_their_logits(tmp_path):
    """Phrasebook bundles ship three heads in one file; per-tensor weights shrink an unrolled GRU."""
    pytest.importorskip("tensorflow")
    import keras

    from quantize.convert import tflite_predict, to_int8_tflite
    from quantize.train import TrainConfig, ensemble, predict, train

    rng = np.random.default_rng(3)
    x = rng.standard_normal((900, 16, 96)).astype(np.float32)
    y = rng.integers(0, 3, 900)
    for k in (1, 2):
        x[y == k, 4 * k : 4 * k + 4, :24] += 1.5
    heads = [train(x[:700], y[:700], 3, TrainConfig(arch="cgru", epochs=12, hidden=16, seed=s), progress=False)
             for s in (0, 1)]
    model = ensemble(heads)
    logits = [keras.Model(h.inputs, h.get_layer("logits").output).predict(x[700:], verbose=0) for h in heads]
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(np.mean(logits, axis=0)))
    assert np.allclose(predict(model, x[700:]), expected, atol=1e-5)

    sizes = {}
    for per_channel in (True, False):
        path = tmp_path / f"ens-{per_channel}.tflite"
        to_int8_tflite(model, x[:700], path, per_channel=per_channel)
        sizes[per_channel] = path.stat().st_size
        agree = np.mean(tflite_predict(path, x[700:]).argmax(1) == expected.argmax(1))
        assert agree > 0.95
    assert sizes[False] < 0.9 * sizes[True]


def test_a_logit_output_head_resolves_posteriors_an_int8_softmax_cannot(tmp_path):
    """Wake heads ship int8 logits: an int8 posterior stops at 255/256, so a threshold above
    0.996 could never fire; through logits the runtime's float softmax goes past it."""
    pytest.importorskip("tensorflow")
    from quantize.convert import io_specs, tflite_predict, to_int8_tflite
    from quantize.train import TrainConfig, predict, train

    rng = np.random.default_rng(2)
    x = rng.standard_normal((800, 16, 96)).astype(np.float32)
    y = rng.integers(0, 2, 800)
    x[y == 1, :, :32] += 4.0  # an easy task: the model grows very confident
    model = train(x[:600], y[:600], 2, TrainConfig(arch="dense", epochs=20, hidden=16), progress=False)
    path = tmp_path / "m.tflite"
    to_int8_tflite(model, x[:600], path, logits=True)
    probs = tflite_predict(path, x[600:], logits=True)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(probs.argmax(1) == predict(model, x[600:]).argmax(1)) > 0.97
    assert probs[y[600:] == 1, 1].max() > 0.999  # an int8 softmax tops out at 0.996

    fe = FrontendConfig()
    spec_in, spec_out, name_in, name_out = io_specs(path)
    bundle = tmp_path / "wake"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(path.read_bytes())
    manifest = {
        "schema_version": SCHEMA_VERSION, "name": "wake", "language": "en", "task": "wake",
        "labels": ["_unknown_", "wake"], "input_features": "frontend",
        "input": spec_in.to_dict() | {"name": name_in},
        "output": spec_out.to_dict() | {"name": name_out, "activation": "logits"},
        "frontend": {"config": fe.to_dict(), "hash": fe.hash},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    from edge.models import WindowHead

    head = WindowHead(load_bundle(bundle, fe))
    i = int(np.argmax(probs[:, 1]))
    assert np.allclose(head.classify(x[600 + i]), probs[i], atol=1e-5)

    manifest["output"]["activation"] = "sigmoid"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="activation 'sigmoid'"):
        load_bundle(bundle, fe)

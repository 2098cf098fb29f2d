"""A float `.tflite` as the model: tfq8 calibrates and quantizes it as it would the Keras model."""
from __future__ import annotations

import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

import factories
import keras
import tfq8
from clirun import run_cli
from tfq8 import _tflite, models
from tfq8.harness.interpreter import ModelRunner


def _float_tflite(model) -> bytes:
    return models.load_model(model).to_float_tflite()


def _without_conversion_metadata(blob: bytes) -> bytes:
    """The model with its CONVERSION_METADATA (which records the source kind) emptied."""
    parsed = _tflite.read_model(blob)
    for entry in parsed.metadata or []:
        if entry.name == b"CONVERSION_METADATA":
            parsed.buffers[entry.buffer].data = None
    return _tflite.write_model(parsed)


def _outputs(blob: bytes, x: np.ndarray) -> bytes:
    return ModelRunner(blob).run([x])[0].tobytes()


def test_a_float_tflite_quantizes_as_its_keras_model(tmp_path):
    model, x = factories.cnn(), factories.images(64)
    path = tmp_path / "model.tflite"
    path.write_bytes(_float_tflite(model))
    for method in ("minmax", "auto"):
        ours = tfq8.convert(str(path), x, method=method)
        assert ours == tfq8.convert(path.read_bytes(), x, method=method)  # bytes or a path
        assert ours == tfq8.convert(str(path), x, method=method)  # deterministic
        keras_blob = tfq8.convert(model, x, method=method)
        # Same ops, tensors, weights and ranges; only the recorded source kind differs.
        assert _without_conversion_metadata(ours) == _without_conversion_metadata(keras_blob)
        assert tfq8.inspect(ours).full_integer
    reads = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path):
            reads.append(file)
        return real_open(file, *args, **kwargs)

    with mock.patch("builtins.open", counting_open):
        report = tfq8.check(ours, reference=str(path), data=x)
    assert report.outputs[0].sqnr_db > 30, str(report)
    assert len(reads) == 1, reads  # the reference file is read once
    # Statistics taken on the .tflite are of that file (its fingerprint).
    calib = tfq8.calibrate(str(path), x)
    assert tfq8.convert(str(path), calibration=calib, method="minmax") == tfq8.convert(
        str(path), x, method="minmax")
    with pytest.raises(ValueError, match="statistics of another model"):
        tfq8.convert(_float_tflite(factories.cnn(seed=1)), calibration=calib)


def test_fixed_batch_and_loop_tflite_models():
    fixed = factories.fixed_batch_cnn()  # batch size 4 in the .tflite too
    x = factories.images(32, shape=(8, 8, 3))
    blob = tfq8.convert(_float_tflite(fixed), x, method="minmax")
    assert tfq8.inspect(blob).full_integer
    assert _outputs(blob, x) == _outputs(tfq8.convert(fixed, x, method="minmax"), x)
    # A Keras 3 LSTM that is not unrolled: a WHILE loop, carried in int8.
    keras.utils.set_random_seed(0)
    lstm = keras.Sequential([keras.Input((6, 4), batch_size=1), keras.layers.LSTM(8),
                             keras.layers.Dense(3)])
    seq = np.random.default_rng(0).normal(size=(32, 6, 4)).astype(np.float32)
    blob = tfq8.convert(_float_tflite(lstm), seq)
    assert tfq8.inspect(blob).full_integer
    assert _outputs(blob, seq) == _outputs(tfq8.convert(lstm, seq), seq)


def test_tflite_models_tfq8_cannot_quantize_are_refused(tmp_path):
    model, x = factories.cnn(), factories.images(16)
    with pytest.raises(ValueError, match=r"quantized already \(it holds INT8 tensors\)"):
        tfq8.convert(tfq8.convert(model, x), x)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    with pytest.raises(ValueError, match="weights are stored in float16"):
        tfq8.convert(converter.convert(), x)
    tf_keras = pytest.importorskip("tf_keras")
    assert tf_keras  # a tf_keras LSTM becomes TFLite's fused LSTM
    with pytest.raises(tfq8.UnsupportedOpError, match=r"UNIDIRECTIONAL_SEQUENCE_LSTM.*no "
                                                      r"intermediate tensors.*Keras model"):
        tfq8.convert(_float_tflite(factories.tf_keras_lstm()), np.zeros((4, 6, 4), np.float32))
    with pytest.raises(ValueError, match="model"):
        tfq8.convert(b"not a flatbuffer at all", x)
    (tmp_path / "model.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"or a float \.tflite file"):
        tfq8.convert(str(tmp_path / "model.txt"), x)
    with pytest.raises(ValueError, match="has no TFLite converter"):
        tfq8.pipeline.converter_int8(_float_tflite(model), x)


def test_a_float_tflite_with_a_uint8_input_is_not_taken_for_a_quantized_one():
    # Its uint8 input has no scale: it was refused as "quantized already (it holds
    # UINT8 tensors)", while the Keras model it came from converts.
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), dtype="uint8")
    h = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255.0)(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    x = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3)).astype(np.uint8)
    blob = tfq8.convert(_float_tflite(model), x, method="minmax", allow_float=True)
    assert _outputs(blob, x) == _outputs(tfq8.convert(model, x, method="minmax",
                                                      allow_float=True), x)
    # A dynamic-range .tflite (int8 weights with scales, float activations) is quantized.
    big = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    converter = tf.lite.TFLiteConverter.from_keras_model(big)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with pytest.raises(ValueError, match=r"quantized already \(it holds INT8 tensors\)"):
        tfq8.convert(converter.convert(), np.zeros((4, 64), np.float32))


def test_cli_converts_a_float_tflite(tmp_path, capfd):
    model, x = factories.cnn(), factories.images(32)
    (tmp_path / "model.tflite").write_bytes(_float_tflite(model))
    np.save(tmp_path / "calib.npy", x)
    code, _, err = run_cli(capfd, "convert", tmp_path / "model.tflite", "--data",
                           tmp_path / "calib.npy", "--method", "minmax")
    assert code == 0, err
    written = (tmp_path / "model_int8.tflite").read_bytes()
    assert written == tfq8.convert(str(tmp_path / "model.tflite"), x, method="minmax")


def test_a_list_in_the_signatures_order_reads_as_the_keras_list():
    # Measured: the .tflite of keras.Model([alpha, beta], ...) takes (beta, alpha) in its
    # graph; a list [alpha, beta] (the Keras and signature order) was refused ("expected
    # input 'beta' ... Received shape (32, 8)") by convert and by check(reference=.tflite).
    keras.utils.set_random_seed(0)
    alpha, beta = keras.Input((8,), name="alpha"), keras.Input((4, 4, 1), name="beta")
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(alpha), keras.layers.Flatten()(beta)])
    model = keras.Model([alpha, beta], [keras.layers.Dense(3)(h), keras.layers.Dense(1)(h)])
    blob = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(0)
    as_list = [rng.normal(size=(16, 8)).astype(np.float32),
               rng.normal(size=(16, 4, 4, 1)).astype(np.float32)]
    assert [s.name for s in models.load_model(blob).specs] == ["beta", "alpha"]  # graph order
    ours = tfq8.convert(blob, as_list, method="minmax")
    assert ours == tfq8.convert(blob, dict(zip(["alpha", "beta"], as_list)), method="minmax")
    keras_blob = tfq8.convert(model, as_list, method="minmax")
    assert _without_conversion_metadata(ours) == _without_conversion_metadata(keras_blob)
    report = tfq8.check(ours, reference=blob, data=as_list)
    assert min(o.sqnr_db for o in report.outputs) > 25, str(report)


def test_tflite_files_tfq8_cannot_calibrate_are_refused_with_the_reason(tmp_path):
    # Measured: a .tflite of two signatures was calibrated on its first graph only and then
    # refused as "FULLY_CONNECTED, TANH could not be quantized ... pass allow_float=True";
    # a .tflite that reads uninitialized variables got the SavedModel advice; a folder
    # named x.tflite was "not a SavedModel".
    w = tf.constant(np.eye(6, 3, dtype=np.float32))

    class TwoFunctions(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32)])
        def a(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, w))}

        @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32)])
        def b(self, x):
            return {"z": tf.tanh(tf.matmul(x, w))}

    module = TwoFunctions()
    two = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.a.get_concrete_function(), module.b.get_concrete_function()], module).convert()
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"2 signatures \(a, b\).*one function"):
        tfq8.convert(two, x)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    fn = tf.function(lambda t: model(t)).get_concrete_function(tf.TensorSpec((None, 6)))
    with_variables = tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()
    with pytest.raises(ValueError, match=r"reads variables it never initializes.*from_keras_model"):
        tfq8.convert(with_variables, x)
    (tmp_path / "x.tflite").mkdir()
    with pytest.raises(ValueError, match=r"ends in \.tflite but is a folder"):
        tfq8.convert(str(tmp_path / "x.tflite"), x)


@pytest.mark.parametrize("kind", ["STRING", "COMPLEX64"])
def test_a_float_tflite_whose_input_takes_no_numbers_is_refused_naming_the_input(kind):
    # Such an input was read as float32, and TFLite's calibrator failed on the data.
    parsed = _tflite.read_model(_float_tflite(factories.mlp()))
    sg = parsed.subgraphs[0]
    sg.tensors[sg.inputs[0]].type = getattr(_tflite.schema.TensorType, kind)
    blob = _tflite.write_model(parsed)
    x = np.zeros((4, 20), np.float32)
    with pytest.raises(ValueError, match=rf"^model input 'features' has dtype {kind.lower()}: "
                                         r".*Received: a \.tflite whose input 'features' is "
                                         rf"{kind.lower()}$"):
        tfq8.convert(blob, x)
    with pytest.raises(ValueError, match=rf"^model input 'features' has dtype {kind.lower()}"):
        tfq8.representative_dataset(x, model=blob)

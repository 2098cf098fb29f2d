"""End to end: calibrate, choose ranges, override the converter, full-integer int8."""

import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import factories
import tfq8
from tfq8 import _tflite
from tfq8.ranges import auto
from tfq8.pipeline import converter_int8
from tfq8.harness.interpreter import ModelRunner


def activation_qparams(blob):
    """Tensor name -> (scales, zero points) of every non-constant int8 tensor."""
    info = tfq8.inspect(blob)
    out = {}
    for op in info.ops:
        for t in op.inputs + op.outputs:
            if not t.constant and t.dtype == "INT8":
                out[t.name] = (t.scale, t.zero_point)
    return out


def sqnr_db(ref, out):
    ref = ref.astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / max(np.sum((out - ref) ** 2), 1e-30))


@pytest.fixture(scope="module")
def cnn_case():
    model = factories.cnn()
    x = factories.images(64)
    return model, x, tfq8.calibrate(model, x)


@pytest.mark.parametrize("io", ["int8", "uint8", "float32"])
def test_minmax_is_the_converters_own_file_byte_for_byte(cnn_case, io):
    model, x, calib = cnn_case
    theirs = converter_int8(model, x, input_type=io, output_type=io)
    ours = tfq8.convert(calibration=calib, method="minmax", input_type=io, output_type=io)
    assert activation_qparams(theirs) and ours == theirs


def test_minmax_is_the_converters_file_with_shared_buffers_too():
    import keras

    keras.utils.set_random_seed(0)            # TFLite's integer-quantization tutorial model:
    model = keras.Sequential([                # two equal int32 shape constants share a buffer
        keras.Input((12, 12)), keras.layers.Reshape((12, 12, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(10)])
    x = factories.images(32, shape=(12, 12))
    assert tfq8.convert(model, x, method="minmax") == converter_int8(model, x)


def test_conversion_metadata_describes_the_int8_model(cnn_case):
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as meta_fb
    from tensorflow.lite.python.util import get_model_hash

    blob = tfq8.convert(calibration=cnn_case[2], method="percentile")
    parsed = _tflite.read_model(blob)
    assert [m.name for m in parsed.metadata] == [b"min_runtime_version", b"CONVERSION_METADATA"]
    data = np.asarray(parsed.buffers[parsed.metadata[1].buffer].data, np.uint8).tobytes()
    stored = meta_fb.ConversionMetadata.GetRootAs(data, 0).Environment().ModelHash()
    parsed.metadata = None
    assert stored == get_model_hash(parsed)    # not the calibrated float model's hash


@pytest.mark.parametrize("method", ["percentile", "kl", "mse"])
def test_other_methods_change_scales_and_stay_full_integer(cnn_case, method):
    model, x, calib = cnn_case
    blob = tfq8.convert(calibration=calib, method=method)
    info = tfq8.inspect(blob)
    assert info.full_integer
    assert [t.dtype for t in info.inputs] == ["INT8"] and [t.dtype for t in info.outputs] == ["INT8"]
    assert activation_qparams(blob) != activation_qparams(
        tfq8.convert(calibration=calib, method="minmax"))


def test_int8_stays_close_to_float(cnn_case):
    model, x, calib = cnn_case
    blob = tfq8.convert(calibration=calib)
    x_test = factories.images(128, seed=1)
    ref = model.predict(x_test, verbose=0)
    out = ModelRunner(blob).run([x_test])[0]
    assert sqnr_db(ref, out) > 20.0
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9


def test_conversion_is_byte_identical_across_runs(cnn_case):
    model, x, _ = cnn_case
    assert tfq8.convert(model, x) == tfq8.convert(model, x)


def test_conversions_in_two_threads_run_one_at_a_time():
    """TensorFlow's converter is not thread-safe: two Keras exports that overlap can leave
    `warnings.filters` ignoring every warning and TensorFlow logging only FATAL for good
    (its AutoTrackable saves and puts back both around each attribute it reads)."""
    import threading

    inside, first_in, release = [], threading.Event(), threading.Event()

    class Converter:  # stands in for a TFLiteConverter; the first one waits inside
        def __init__(self, name):
            self.name = name

        def convert(self):
            inside.append(self.name)
            if self.name == "first":
                first_in.set()
                release.wait(10)
            seen = ",".join(inside).encode()  # the conversions running meanwhile
            inside.remove(self.name)
            return seen

    out = {}

    def convert(name):
        out[name] = _tflite.convert_float(Converter(name))

    first = threading.Thread(target=convert, args=("first",))
    first.start()
    assert first_in.wait(10)
    second = threading.Thread(target=convert, args=("second",))
    second.start()
    second.join(0.5)  # time to enter the converter, were it free
    release.set()
    first.join(10)
    second.join(10)
    assert out == {"first": b"first", "second": b"second"}


def test_calibration_is_reusable_and_survives_save_load(cnn_case, tmp_path):
    _, _, calib = cnn_case
    path = tmp_path / "stats.npz"
    calib.save(path)
    loaded = tfq8.Calibration.load(path)
    for method in ("minmax", "kl", "auto"):
        assert tfq8.convert(calibration=loaded, method=method) == tfq8.convert(
            calibration=calib, method=method)


def test_range_override_by_tensor_name(cnn_case, caplog):
    _, _, calib = cnn_case
    name = calib.tensors[-1].name  # the logits
    blob = tfq8.convert(calibration=calib, method="minmax", ranges={name: (-1.0, 1.0)})
    scale, zero_point = activation_qparams(blob)[name]
    assert scale[0] == pytest.approx(2.0 / 255, rel=1e-5)
    assert zero_point[0] in (-1, 0)
    assert not caplog.records
    blob = tfq8.convert(calibration=calib, method="minmax", ranges={name: (0.5, 2.0)})
    assert activation_qparams(blob)[name] == ((pytest.approx(2.0 / 255, rel=1e-5),), (-128,))
    assert [r.getMessage() for r in caplog.records] == [
        f"ranges[{name!r}] = (0.5, 2) became (0, 2): TFLite's int8 grid always holds 0 exactly, "
        "so a range is widened to include it."]
    with pytest.raises(ValueError, match=r"ranges\['nope'\]: no such tensor"):
        tfq8.convert(calibration=calib, ranges={"nope": (0.0, 1.0)})
    typo = name.replace("_1:0", ":0") if name.endswith("_1:0") else name + "x"
    with pytest.raises(ValueError, match=rf"no such tensor.*Did you mean {re.escape(repr(name))}.*"
                                         rf"the model's outputs are \[{re.escape(repr(name))}\]"):
        tfq8.convert(calibration=calib, ranges={typo: (0.0, 1.0)})
    calibrated = {t.name for t in calib.tensors}
    weight = next(n for n, kind in _tflite.tensor_types(calib.model).items()
                  if kind == "FLOAT32" and n not in calibrated)
    with pytest.raises(ValueError, match="not a calibrated activation"):
        tfq8.convert(calibration=calib, ranges={weight: (0.0, 1.0)})
    with pytest.raises(ValueError, match="min <= max"):
        tfq8.convert(calibration=calib, ranges={name: (1.0, -1.0)})


def test_calibration_of_another_model_is_refused(cnn_case):
    model, _, calib = cnn_case
    assert tfq8.convert(model, calibration=calib, method="minmax") == tfq8.convert(
        calibration=calib, method="minmax")
    with pytest.raises(ValueError, match="calibration holds statistics of another model"):
        tfq8.convert(factories.cnn(seed=11), calibration=calib, method="minmax")


def test_a_range_tflite_fixes_is_reported_not_applied(caplog):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    calib = tfq8.calibrate(model, np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    softmax, relu = calib.tensors[-1], calib.tensors[1]
    assert softmax.producer == "SOFTMAX" and relu.producer == "FULLY_CONNECTED"
    caplog.clear()
    tfq8.convert(calibration=calib, method="minmax", ranges={relu.name: (0.0, 8.0)})
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    tfq8.convert(calibration=calib, method="minmax", ranges={softmax.name: (-8.0, 8.0)})
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "was not applied" in warned[0] and "output of SOFTMAX" in warned[0]
    # A range too narrow for the quantizer: widened and said so; auto still scores it.
    caplog.clear()
    tfq8.convert(calibration=calib, method="auto", ranges={relu.name: (0.0, 1e-7)})
    assert "was not applied" in caplog.text


def test_method_options_are_checked(cnn_case):
    _, _, calib = cnn_case
    a = tfq8.convert(calibration=calib, method="percentile", method_options={"percentile": 99.0})
    b = tfq8.convert(calibration=calib, method="percentile", method_options={"percentile": 99.99})
    assert activation_qparams(a) != activation_qparams(b)
    with pytest.raises(ValueError, match=r"'mse' takes no option 'percentile'; its options: none"):
        tfq8.convert(calibration=calib, method="mse", method_options={"percentile": 99.0})
    with pytest.raises(ValueError, match=r"takes no option 'pct'; its options: percentile"):
        calib.ranges("percentile", pct=99.0)
    with pytest.raises(ValueError, match=r"method_options set one method's options, and "
                                         r"method='auto' takes only candidates"):
        tfq8.convert(calibration=calib, method_options={"percentile": 99.0})


def test_auto_compares_the_candidates_it_is_given(cnn_case, monkeypatch):
    from tfq8.ranges import registry

    _, _, calib = cnn_case
    default = tfq8.convert(calibration=calib)
    scores = dict(calib.last_auto.scores)
    # The built-in list, in another order and as the command line's string: the same model.
    assert tfq8.convert(calibration=calib, method_options={
        "candidates": "kl, mse,percentile"}) == default
    assert calib.last_auto.scores == scores
    # minmax alone: the converter's ranges, nothing to refine.
    only = tfq8.convert(calibration=calib, method_options={"candidates": []})
    assert only == tfq8.convert(calibration=calib, method="minmax")
    assert calib.last_auto.scores == {"minmax": scores["minmax"]}
    # A method of the user's, and one with options: scored under their labels. One that
    # throws away most of every range never beats the baseline.
    monkeypatch.setitem(registry._METHODS, "tenth", lambda h: (h.min / 10, h.max / 10))
    tfq8.convert(calibration=calib, method_options={
        "candidates": ["tenth", ("percentile", {"percentile": 99.0})]})
    report = calib.last_auto
    assert list(report.scores) == ["minmax", "tenth", "percentile(percentile=99.0)"]
    assert report.scores["tenth"] < report.scores["minmax"] - 3.0
    assert report.scores["percentile(percentile=99.0)"] != scores["percentile"]
    assert "tenth" not in report.choice.values()
    # Without kept samples it falls back to the first candidate after minmax.
    bare = tfq8.calibrate(cnn_case[0], cnn_case[1], keep_samples=0)
    assert tfq8.convert(calibration=bare, method_options={"candidates": ["mse"]}) == \
        tfq8.convert(calibration=bare, method="mse")


@pytest.mark.parametrize("candidates, error, match", [
    (["mse", "nope"], ValueError, r"method_options\['candidates'\]: Unknown range method\. "
                                  r"Expected one of .*Received: method='nope'"),
    (["mse", "mse"], ValueError, r"method_options\['candidates'\] lists 'mse' twice"),
    (["auto"], ValueError, r"auto cannot be one of them"),
    ([("percentile", {"percentile": 20})], ValueError,
     r"method_options\['candidates'\]: Options of range method 'percentile': percentile must be "
     r"in \(50, 100\]"),
    ([("mse", {"percentile": 99.0})], ValueError, r"'mse' takes no option 'percentile'"),
    ([3], TypeError, r"Each item of method_options\['candidates'\] must be a method name or a "
                     r"\(name, options dict\) pair\. Received: 3"),
    ([("percentile", 99.0)], TypeError, r"Received: \('percentile', 99\.0\)"),
    ({"mse": {}}, TypeError, r"method_options\['candidates'\] must be a list of range method "
                             r"names"),
])
def test_bad_auto_candidates_fail_before_calibrating(monkeypatch, candidates, error, match):
    def calibrate(*args, **kwargs):
        raise AssertionError("calibrated before checking the options")

    monkeypatch.setattr(tfq8.pipeline, "calibrate", calibrate)
    with pytest.raises(error, match=match):
        tfq8.convert(factories.mlp(), np.zeros((8, 20), np.float32),
                     method_options={"candidates": candidates})


@pytest.mark.parametrize("options, match", [
    (dict(method="percentile", method_options={"percentile": "abc"}),
     r"Options of range method 'percentile': percentile must be a number. Received: "
     r"percentile='abc'"),
    (dict(method="percentile", method_options={"percentile": "99.9"}),
     r"percentile must be a number. Received: percentile='99.9'"),
    (dict(method="percentile", method_options={"percentile": 20}),
     r"percentile must be in \(50, 100\]\. Received: percentile=20\.$"),
    (dict(output_path="."), r"output_path is a directory"),
    (dict(output_path="new_dir/"), r"output_path ends in a path separator"),
    (dict(output_path=__file__ + "/model.tflite"), r"output_path lies under .*which is a file"),
])
def test_bad_options_fail_before_calibrating(monkeypatch, options, match):
    def calibrate(*args, **kwargs):
        raise AssertionError("calibrated before checking the options")

    monkeypatch.setattr(tfq8.pipeline, "calibrate", calibrate)
    with pytest.raises(ValueError, match=match):
        tfq8.convert(factories.mlp(), np.zeros((8, 20), np.float32), **options)


@pytest.mark.parametrize("options, error, match", [
    (dict(method=3), TypeError, r"Unknown range method.*Received: method=3"),
    (dict(num_samples="100"), TypeError, r"num_samples must be a positive integer or None. "
                                         r"Received: num_samples='100'"),
    (dict(per_channel="yes"), TypeError, r"per_channel must be True or False"),
    (dict(num_samples=0), ValueError, r"num_samples must be a positive integer"),
    (dict(per_channel=2), ValueError, r"per_channel must be True or False"),
    (dict(method="nope"), ValueError, r"Unknown range method"),
    (dict(input_type=3), TypeError, r"input_type must be one of int8, uint8, float32. "
                                    r"Received: input_type=3"),
    (dict(output_type=None), TypeError, r"output_type must be one of .*Received: output_type=None"),
    (dict(input_type="int4"), ValueError, r"input_type must be one of"),
    (dict(ranges={"x": "ab"}), TypeError, r"ranges\['x'\] must be a \(min, max\) pair of numbers"),
    (dict(ranges={"x": (0, "1")}), TypeError, r"ranges\['x'\] must be a \(min, max\) pair"),
    (dict(ranges={"x": (0, 1, 2)}), ValueError, r"ranges\['x'\] must be a \(min, max\) pair"),
    (dict(method="percentile", method_options={"percentile": "99.9"}), TypeError,
     r"percentile must be a number. Received: percentile='99.9'"),
])
def test_a_wrong_type_is_a_type_error_and_still_a_value_error(monkeypatch, options, error, match):
    def calibrate(*args, **kwargs):
        raise AssertionError("calibrated before checking the options")

    monkeypatch.setattr(tfq8.pipeline, "calibrate", calibrate)
    with pytest.raises(error, match=match) as caught:
        tfq8.convert(factories.mlp(), np.zeros((8, 20), np.float32), **options)
    assert isinstance(caught.value, ValueError)  # what callers caught before
    assert isinstance(caught.value, TypeError) == (error is TypeError)


def test_per_tensor_weights_option(cnn_case):
    _, _, calib = cnn_case

    def conv_weight_scales(blob):
        op = next(o for o in tfq8.inspect(blob).ops if o.name == "CONV_2D")
        return len(op.inputs[1].scale)

    assert conv_weight_scales(tfq8.convert(calibration=calib, method="minmax")) == 8
    assert conv_weight_scales(tfq8.convert(calibration=calib, method="minmax", per_channel=False)) == 1


@pytest.mark.parametrize("io", ["uint8", "float32"])
def test_io_types(cnn_case, io):
    _, _, calib = cnn_case
    info = tfq8.inspect(tfq8.convert(calibration=calib, input_type=io, output_type=io))
    assert info.full_integer
    assert info.inputs[0].dtype == io.upper() and info.outputs[0].dtype == io.upper()


def test_two_inputs_two_outputs_from_a_dict():
    model = factories.two_in_two_out()
    data = factories.two_in_data(32)
    blob = tfq8.convert(model, data)
    info = tfq8.inspect(blob)
    assert info.full_integer and len(info.inputs) == 2 and len(info.outputs) == 2
    runner = ModelRunner(blob)
    names = [s.name for s in runner.input_specs()]
    assert sorted(names) == ["a", "b"]
    outs = runner.run([data[n] for n in names])
    ref = model.predict(data, verbose=0)
    # Match outputs by shape: 'cls' has 3 columns, 'reg' one.
    by_width = {o.shape[1]: o for o in outs}
    assert sqnr_db(ref["cls"], by_width[3]) > 15
    assert sqnr_db(ref["reg"], by_width[1]) > 15


def test_tf_keras_model():
    model = factories.tf_keras_cnn()
    blob = tfq8.convert(model, factories.images(32))
    assert tfq8.inspect(blob).full_integer


def test_unquantizable_op_is_named_unless_float_is_allowed():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Lambda(lambda t: keras.ops.cumsum(t, axis=1))(keras.layers.Dense(8)(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(h))
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    with pytest.raises(tfq8.UnsupportedOpError, match="CUMSUM"):
        tfq8.convert(model, x)
    blob = tfq8.convert(model, x, allow_float=True)
    assert [op.name for op in tfq8.inspect(blob).float_ops if op.name == "CUMSUM"] == ["CUMSUM"]


def test_input_type_on_an_integer_input_is_warned_about(caplog):
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(tokens))
    model = keras.Model(tokens, keras.layers.Dense(2)(h))
    x = np.random.default_rng(0).integers(0, 50, (32, 6)).astype(np.int32)
    blob = tfq8.convert(model, x, input_type="uint8", method="minmax")
    assert tfq8.inspect(blob).inputs[0].dtype == "INT32"
    assert "input_type='uint8' applies to float inputs" in caplog.text


def test_a_while_loop_of_ones_own_carries_its_variable_in_int8():
    import keras
    import tensorflow as tf

    class Loop(keras.layers.Layer):
        def call(self, t):
            return tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, tf.nn.relu(v * 0.9)),
                                 [tf.constant(0), t])[1]

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,), batch_size=1)
    model = keras.Model(inp, keras.layers.Dense(3)(Loop()(keras.layers.Dense(8)(inp))))
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    blob = tfq8.convert(model, x, method="minmax")  # TFLite's quantizer leaves the loop float
    assert tfq8.inspect(blob).full_integer and "WHILE" in [op.name for op in tfq8.inspect(blob).ops]
    assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db > 25  # 32.6 dB


def test_a_uint8_model_input_gets_a_hint():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), dtype="uint8")
    h = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    with pytest.raises(tfq8.UnsupportedOpError, match=r"CAST .*uint8 images before a Rescaling "
                                                      r"layer.*Give the model a float32 input"):
        tfq8.convert(model, x)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_a_float_model_input_that_is_not_float32_gets_a_hint(dtype):
    import keras

    inp = keras.Input((4,), dtype=dtype)
    model = keras.Model(inp, keras.layers.Dense(3)(inp))  # Keras casts the input to float32
    x = np.random.default_rng(0).random((16, 4)).astype(dtype)
    with pytest.raises(tfq8.UnsupportedOpError, match=r"CAST .*a float64 or float16 input that "
                                                      r"Keras casts.*keras.Input\(\.\.\., "
                                                      r"dtype='float32'\)"):
        tfq8.convert(model, x)



def test_a_quantizer_failure_says_what_the_quantizer_said():
    # TFLite's quantizer raises an empty RuntimeError and explains itself on stderr only,
    # which tfq8 silences: the message is read back from there. A masked SimpleRNN with its
    # calibrated ranges is refused (tfq8.convert ties them first: tests/test_shared_grid.py).
    keras.utils.set_random_seed(0)
    tokens = keras.Input((12,), dtype="int32")
    emb = keras.layers.Embedding(30, 8, mask_zero=True)(tokens)
    model = keras.Model(tokens, keras.layers.Dense(3)(keras.layers.SimpleRNN(8, unroll=True)(emb)))
    rng = np.random.default_rng(0)
    x = rng.integers(1, 30, (64, 12)).astype(np.int32)
    x[np.arange(12)[None] >= rng.integers(4, 13, (64, 1))] = 0  # padded, of several lengths
    with pytest.raises(_tflite.SameScaleError,
                       match=r"quantizer failed on \S*simple_rnn\S*SelectV2\S*: .*same scale "
                             r"constraint.*output of a TANH, LOGISTIC or SOFTMAX") as raised:
        _tflite.quantize(tfq8.calibrate(model, x).model)
    assert isinstance(raised.value, tfq8.UnsupportedOpError) and "SelectV2" in raised.value.op

def test_an_argmax_of_an_output_gets_a_hint_and_an_argmax_alone_is_integer():
    # TFLite quantizes ARG_MAX to int8, except when the scores it reads are a model output too.
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    scores = keras.layers.Dense(3)(inp)
    top = keras.layers.Lambda(lambda t: tf.math.argmax(t, axis=-1, output_type=tf.int32))(scores)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    with pytest.raises(tfq8.UnsupportedOpError,
                       match=r"ARG_MAX .*also a model output.*"
                             r"or only their argmax, which is int8"):
        tfq8.convert(keras.Model(inp, [scores, top]), x, method="minmax")
    assert tfq8.inspect(tfq8.convert(keras.Model(inp, top), x, method="minmax")).full_integer


def test_bad_arguments(cnn_case):
    model, x, calib = cnn_case
    with pytest.raises(ValueError, match="auto, (.*, )?kl, minmax, mse, percentile.*Received: method='best'"):
        tfq8.convert(calibration=calib, method="best")
    with pytest.raises(ValueError, match="input_type.*Received: input_type='int4'"):
        tfq8.convert(calibration=calib, input_type="int4")
    with pytest.raises(ValueError, match="output_type.*Received: output_type=True"):
        tfq8.convert(calibration=calib, output_type=True)
    import tensorflow as tf
    assert tfq8.convert(calibration=calib, input_type=tf.uint8, method="minmax") == tfq8.convert(
        calibration=calib, input_type="uint8", method="minmax") == tfq8.convert(
        calibration=calib, input_type="UINT8", method="minmax")
    with pytest.raises(ValueError, match=r"method_options must be a dict.*Received: method_options='percentile=99'"):
        tfq8.convert(calibration=calib, method="percentile", method_options="percentile=99")
    with pytest.raises(ValueError, match=r"ranges must be a dict.*Received: ranges of type list"):
        tfq8.convert(calibration=calib, ranges=[("x", (0, 1))])
    with pytest.raises(TypeError, match=r"merge\(\) takes another tfq8.Calibration. Received: int"):
        calib.merge(42)
    with pytest.raises(ValueError, match=r"pass data=.*CalibrationCallback. Received: data=None, "
                                         r"calibration=None, and a model without statistics"):
        tfq8.convert(factories.mlp())
    with pytest.raises(ValueError, match=r"either data or calibration, not both.*Received: data "
                                         r"of type ndarray and calibration=Calibration\(\d+ tensors"):
        tfq8.convert(model, x, calibration=calib)
    with pytest.raises(TypeError, match="tfq8.Calibration"):
        tfq8.convert(calibration={"not": "a calibration"})
    with pytest.raises(ValueError, match="keep_samples"):
        tfq8.calibrate(model, x, keep_samples=-1)
    for name, value in (("allow_float", "no"), ("per_channel", "False"), ("per_channel", 2)):
        with pytest.raises(ValueError, match=f"{name} must be True or False. Received: {name}={value!r}"):
            tfq8.convert(calibration=calib, **{name: value})
    with pytest.raises(ValueError, match="num_samples chooses samples of data.*Received: num_samples=3"):
        tfq8.convert(calibration=calib, num_samples=3)
    with pytest.raises(ValueError, match="Received: num_samples=-3"):
        tfq8.convert(calibration=calib, num_samples=-3)
    for name, value in (("batch_size", -1), ("batch_size", "8"), ("batch_size", 2.5),
                        ("max_bins", 0)):
        with pytest.raises(ValueError, match=f"{name} must be .*Received: {name}={value!r}"):
            tfq8.calibrate(model, x, **{name: value})


def test_unsupported_op_message_names_the_op():
    # The converter's text for an op TFLite has no kernel for (tf.linalg.svd), abridged.
    message = (
        "error: 'tf.Svd' op is neither a custom op nor a flex op\n"
        "error: failed while converting: 'main': \n"
        "Some ops in the model are custom ops, See instructions to implement custom ops: "
        "https://www.tensorflow.org/lite/guide/ops_custom \n"
        "Custom ops: Svd\nDetails:\n\ttf.Svd(tensor<?x4x5xf32>) -> (tensor<?x4xf32>)\n")
    error = _tflite._unsupported(message)
    assert isinstance(error, tfq8.UnsupportedOpError)
    assert "do not cover: Svd." in str(error) and "https" not in str(error)
    only_op_line = _tflite._unsupported("error: 'tf.Svd' op is neither a custom op nor a flex op")
    assert "do not cover: Svd." in str(only_op_line)


def test_keras_argmax_is_named_with_its_layer_and_a_way_out():
    # Keras 3's keras.ops.argmax of floats tests the sign bit with tf.BitwiseAnd, which
    # TFLite has no builtin for: the error says which layer, and what converts instead.
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    top = keras.layers.Lambda(lambda t: keras.ops.argmax(t, axis=-1), name="top_class")
    model = keras.Model(inp, top(keras.layers.Dense(3)(inp)))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    with pytest.raises(tfq8.UnsupportedOpError,
                       match=r"do not cover: BitwiseAnd \(in \S*top_class\S*\)\. .*Flex\) ops\. "
                             r".*keras\.ops\.argmax.*tf\.math\.argmax"):
        tfq8.convert(model, x)


def test_dynamic_height_and_width_follow_the_data():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    x = factories.images(24, shape=(9, 7, 3))
    blob = tfq8.convert(model, x, method="minmax")
    assert blob == converter_int8(model, x)
    assert tfq8.inspect(tfq8.convert(model, x)).full_integer
    assert tfq8.check(blob, reference=model, data=x).agreement >= 0.9
    # Batches are sized for the data, not for the 1x1 placeholders in the flatbuffer.
    from tfq8.harness.interpreter import batch_for
    parsed = _tflite.read_model(blob)
    big = factories.images(2, shape=(96, 96, 3))
    assert batch_for(parsed, 8 << 20, 1024, [big]) < batch_for(parsed, 8 << 20, 1024) / 100
    runner = ModelRunner(blob)
    runner.fit_batch_to([big])
    assert runner.batch_size == batch_for(parsed, 8 << 20, 1024, [big])
    # Images smaller than the kernel: TFLite's calibrator would kill the process (SIGFPE).
    with pytest.raises(ValueError, match=r"Sample 0: the model cannot run on inputs of shape "
                                         r"\(2, 2, 3\): Negative dimension size caused by "
                                         r"subtracting 3 from 2 in \S*conv2d"):
        tfq8.convert(model, factories.images(4, shape=(2, 2, 3)))


@pytest.mark.parametrize("keras_name", ["keras", "tf_keras"])
def test_too_small_inputs_are_refused_before_any_kernel_runs(keras_name):
    # No bias: on CPUs where oneDNN returns the input for an empty convolution, running
    # the model eagerly succeeds; Keras' shape inference does not.
    import importlib

    k = importlib.import_module(keras_name)
    inp = k.Input((None, None, 3))
    h = k.layers.Conv2D(4, 3, use_bias=False)(k.layers.Conv2D(3, 3, use_bias=False)(inp))
    model = k.Model(inp, k.layers.GlobalAveragePooling2D()(h))
    with pytest.raises(ValueError, match=r"Sample 0: the model cannot run on inputs of shape "
                                         r"\(4, 4, 3\): .*(output size would be|Negative dim)"):
        tfq8.convert(model, factories.images(4, shape=(4, 4, 3)))
    assert tfq8.inspect(tfq8.convert(model, factories.images(4, shape=(5, 5, 3)))).full_integer


def test_calibration_data_the_model_cannot_run_is_a_value_error(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 3)(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    ids = np.arange(32, dtype=np.int32).reshape(8, 4) % 10
    ids[5, 2] = 31                                  # one id outside the vocabulary of 10
    with pytest.raises(ValueError, match=r"^Sample 5: input '\w+' holds token id 31, outside "
                                         r"the vocabulary of Embedding '\w+' \(input_dim=10: "
                                         r"ids 0\.\.9\)\.$"):
        tfq8.calibrate(model, ids)
    with pytest.raises(ValueError, match=r"^Sample 5: .* token id 31"):
        tfq8.check(tfq8.convert(model, ids % 10), reference=model, data=ids)
    import tf_keras                                 # built without an Input: float ids
    old = tf_keras.Sequential([tf_keras.layers.Embedding(10, 3), tf_keras.layers.Flatten()])
    old.build((None, 4))
    with pytest.raises(ValueError, match=r"^Sample 5: .* token id 31\.0, outside"):
        tfq8.calibrate(old, ids)
    # Without the Keras model (its Embedding), TFLite's calibrator says what it can.
    path = str(tmp_path / "sm")
    model.export(path)
    with pytest.raises(ValueError, match="TFLite's calibrator failed while running the model on "
                                         "the calibration data: .*GATHER.*token ids"):
        tfq8.calibrate(path, ids)


def test_output_path_never_overwrites_the_model_file_or_takes_a_bad_range(cnn_case, tmp_path):
    model, x, _ = cnn_case
    path = tmp_path / "model.keras"
    model.save(path)
    saved = path.read_bytes()
    with pytest.raises(ValueError, match=r"output_path would overwrite model, which this job "
                                         r"uses"):
        tfq8.convert(str(path), x, output_path=path)
    assert path.read_bytes() == saved
    for bad in ("12", (1, "2"), (1, 2, 3), {0: 1}, (True, 2)):
        with pytest.raises(ValueError, match=r"ranges\['t'\] must be a \(min, max\) pair of "
                                             r"numbers"):
            tfq8.convert(model, x, ranges={"t": bad})
    for key in (1.0, True, None):  # 1.0 and True set tensor 1's range (they equal its index)
        with pytest.raises(TypeError, match=r"ranges keys must be tensor names \(str\) or "
                                            r"indices \(int\). Received: "):
            tfq8.convert(model, x, ranges={key: (-1, 1)})


def test_output_path_is_written_atomically(cnn_case, tmp_path):
    _, _, calib = cnn_case
    path = tmp_path / "out" / "model.tflite"
    blob = tfq8.convert(calibration=calib, output_path=path)
    assert path.read_bytes() == blob
    assert [p.name for p in path.parent.iterdir()] == ["model.tflite"]


def test_auto_scores_in_batches_that_fit_its_memory_budget(cnn_case, monkeypatch):
    from tfq8.ranges import auto

    calib = cnn_case[2]
    whole = tfq8.convert(calibration=calib)
    scores = dict(calib.last_auto.scores)
    from tfq8.harness import interpreter

    monkeypatch.setattr(auto, "_SCORE_BATCH_BYTES", 1)       # one sample per invoke
    assert auto._Scorer(calib, {}).batch == 1
    assert tfq8.convert(calibration=calib) == whole and calib.last_auto.scores == scores
    per_sample = interpreter.tensor_bytes_per_sample(_tflite.read_model(calib.model), calib.samples)
    monkeypatch.setattr(auto, "_SCORE_BATCH_BYTES", 24 * per_sample)  # 64: 3 batches of 22
    assert auto._Scorer(calib, {}).batch == 22
    assert tfq8.convert(calibration=calib) == whole and calib.last_auto.scores == scores


def test_auto_reports_what_it_measured(cnn_case):
    _, _, calib = cnn_case
    blob = tfq8.convert(calibration=calib, method="auto")
    assert tfq8.inspect(blob).full_integer
    report = calib.last_auto
    assert set(report.scores) == {"minmax", "percentile", "mse", "kl"}
    assert set(report.choice) == {t.index for t in calib.tensors}
    assert set(report.choice.values()) <= set(report.scores) and report.method in report.scores
    assert report.summary().startswith(f"auto chose {report.method}")
    # The model auto built while scoring is the one quantizing its ranges would give.
    from tfq8.pipeline import quantize_with_ranges
    from tfq8.ranges import auto

    quant = dict(per_channel=True, input_type=np.int8, output_type=np.int8)
    chosen, scored_model = auto.choose_and_quantize(calib, **quant)
    assert scored_model == quantize_with_ranges(calib, chosen, **quant)
    assert _tflite.finish_as_converter(scored_model) == blob


def test_auto_leaves_the_converter_ranges_when_an_outlier_frame_ruins_them():
    model = factories.cnn()
    x = factories.images(64)
    x[7] *= 60.0  # one corrupted calibration frame
    calib = tfq8.calibrate(model, x)
    auto = tfq8.convert(calibration=calib, method="auto")
    assert calib.last_auto.excluded == [7]  # found from its activations, left out of the score
    assert set(calib.last_auto.choice.values()) != {"minmax"}
    x_test = factories.images(128, seed=1)
    ref = model.predict(x_test, verbose=0)
    auto_db = sqnr_db(ref, ModelRunner(auto).run([x_test])[0])
    minmax_db = sqnr_db(ref, ModelRunner(tfq8.convert(calibration=calib, method="minmax")).run([x_test])[0])
    assert auto_db > minmax_db + 3.0


def test_clearly_better_needs_a_gain_beyond_noise():
    from tfq8.ranges.auto import clearly_better

    rng = np.random.default_rng(0)
    signal = rng.uniform(0.5, 1.5, (1, 128))
    base = signal * 10 ** (-3.0) * rng.uniform(0.5, 1.5, (1, 128))       # about 30 dB
    assert clearly_better(signal, base / 2, base, 0.1)                   # +3 dB on every sample
    assert not clearly_better(signal, base / 1.01, base, 0.1)            # below the margin
    worse = base.copy()
    worse[0, 7] *= 60.0                                                  # one sample carries the gain
    assert not clearly_better(signal, base, worse, 0.1)
    worse[0, [7, 21, 64]] *= 60.0                                        # three carry it: enough
    assert clearly_better(signal, base, worse, 0.1)


def test_a_rare_large_output_outweighs_many_small_gains():
    """The energy-summed score sees what a per-sample average hides."""
    from tfq8.ranges.auto import clearly_better, total_sqnr_db

    signal = np.ones((1, 100))
    signal[0, 0] = 400.0                     # one sample with a 20x larger output
    base = signal * 1e-3                      # 30 dB everywhere
    clipped = base / 2                        # +3 dB on 99 samples ...
    clipped[0, 0] = 400.0 * 0.05              # ... but the large one is clipped (13 dB)
    assert total_sqnr_db(signal, clipped) < total_sqnr_db(signal, base)
    assert not clearly_better(signal, clipped, base, 0.1)


def test_corrupted_frames_are_found_from_activations():
    from tfq8.ranges.auto import corrupted_frames

    rng = np.random.default_rng(0)
    peaks = rng.lognormal(0.0, 0.1, (128, 12))
    assert corrupted_frames(peaks) == []
    peaks[[5, 90]] *= 8.0                    # two frames far above the rest everywhere
    peaks[40, :2] *= 8.0                     # one sample extreme in two tensors only
    assert corrupted_frames(peaks) == [5, 90]
    assert corrupted_frames(peaks[:10]) == []            # too few samples to judge
    many = peaks.copy()
    many[:40] *= 8.0                          # a third of the data is not "corrupted frames"
    assert corrupted_frames(many) == []


def test_auto_without_kept_samples_falls_back(cnn_case):
    model, x, _ = cnn_case
    calib = tfq8.calibrate(model, x, keep_samples=0)
    blob = tfq8.convert(calibration=calib, method="auto")
    assert blob == tfq8.convert(calibration=calib, method="percentile")


def test_an_empty_intermediate_tensor_is_refused_before_the_calibrator():
    import keras

    inp = keras.Input((None, None, 3))
    crop = keras.layers.Lambda(lambda t: t[:, 2:-2, 2:-2, :])(inp)  # empty below 5x5, no error
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(crop)))
    with pytest.raises(ValueError, match=r"inputs of shape \(4, 4, 3\): op \S+ gives an empty "
                                         r"tensor of shape \(1, 0, 0, 3\); the inputs are smaller"):
        tfq8.calibrate(model, factories.images(4, shape=(4, 4, 3)))
    assert tfq8.calibrate(model, factories.images(4, shape=(6, 6, 3))).tensors


def test_a_model_that_computes_nothing_is_refused_by_name():
    # Activation("linear") and Dropout convert to no op at all: the graph has 0 operators,
    # which TFLite's flatbuffer reader cannot iterate (a bare TypeError before).
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    model = keras.Model(inp, keras.layers.Dropout(0.5)(keras.layers.Activation("linear")(inp)))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"model computes nothing: its TFLite graph has no ops.*"
                                         r"Received: a model with 1 input\(s\) and 1 output\(s\) "
                                         r"and 0 ops"):
        tfq8.convert(model, x)


def test_a_fixed_batch_size_model_converts_and_checks_every_sample():
    model = factories.fixed_batch_cnn(batch=4)
    x = factories.images(66, shape=(8, 8, 3))     # 16 whole batches and 2 samples over
    own = converter_int8(model, x)
    calib = tfq8.calibrate(model, x)
    assert calib.num_samples == 64 and len(calib.samples[0]) % 4 == 0
    assert tfq8.convert(calibration=calib, method="minmax") == own
    blob = tfq8.convert(calibration=calib)
    assert tfq8.inspect(blob).full_integer
    assert tfq8.inspect(blob).inputs[0].shape[0] == 4
    report = tfq8.check(blob, reference=model, data=x[:7], labels=np.arange(7))
    assert report.num_samples == 7                # the last batch is padded, not dropped
    assert report.outputs[0].sqnr_db > 30
    ref = model.predict(x[:8], batch_size=4, verbose=0)[:7]
    assert report.reference_accuracy == np.mean(np.argmax(ref, 1) == np.arange(7))
    with pytest.raises(ValueError, match=r"at least one batch: the model's batch size is "
                                         r"fixed at 4. Received: 3 sample\(s\)"):
        tfq8.calibrate(model, x[:3])
    with pytest.raises(ValueError, match=r"at least one batch"):
        converter_int8(model, x[:3])               # TFLite itself would calibrate on nothing


def test_fixed_batches_larger_than_the_data_and_beside_a_free_input():
    import keras

    big = factories.fixed_batch_cnn(batch=16)
    x = factories.images(40, shape=(8, 8, 3))
    calib = tfq8.calibrate(big, x, keep_samples=20)
    assert calib.num_samples == 32 and len(calib.samples[0]) == 16  # whole batches only
    blob = tfq8.convert(calibration=calib)
    short = tfq8.check(blob, reference=big, data=x[:5])  # fewer samples than one batch
    assert short.num_samples == 5 and short.outputs[0].sqnr_db > 30
    assert all(np.isfinite(t.sqnr_db) for t in short.tensors)

    keras.utils.set_random_seed(0)
    a = keras.Input((6,), batch_size=4, name="a")
    b = keras.Input((6,), name="b")
    mixed = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([a, b])))
    data = [np.random.default_rng(k).normal(size=(42, 6)).astype(np.float32) for k in (0, 1)]
    blob = tfq8.convert(mixed, data)
    report = tfq8.check(blob, reference=mixed, data=data)
    assert report.num_samples == 42 and report.outputs[0].sqnr_db > 30


def test_constant_calibration_inputs_are_warned_about(caplog):
    model = factories.mlp(features=4, classes=3)
    tfq8.calibrate(model, np.zeros((8, 4), np.float32), keep_samples=0)
    assert "holds the one value 0 in all 8 samples" in caplog.text
    caplog.clear()
    tfq8.calibrate(model, np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32),
                   keep_samples=0)
    assert "holds the one value" not in caplog.text


def test_ops_with_a_fixed_int8_scale_skip_the_range_search():
    import keras
    from tfq8.calibration import FIXED_SCALE_OPS
    from tfq8.pipeline import quantize_with_ranges
    from tfq8.ranges import get_method

    keras.utils.set_random_seed(0)
    inp = keras.Input((12,))
    h = keras.layers.Dense(16, activation="tanh")(inp)
    h = keras.layers.Dense(16, activation="sigmoid")(h)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))
    calib = tfq8.calibrate(model, np.random.default_rng(0).normal(size=(64, 12)).astype(np.float32),
                           keep_samples=0)
    fixed = [t for t in calib.tensors if t.producer in FIXED_SCALE_OPS]
    assert {t.producer for t in fixed} == {"TANH", "LOGISTIC", "SOFTMAX"}
    for method in ("kl", "mse"):
        ranges = calib.ranges(method)
        assert all(ranges[t.index] == (t.histogram.min, t.histogram.max) for t in fixed)
        searched = {t.index: get_method(method)(t.histogram) for t in calib.tensors}
        assert any(searched[t.index] != ranges[t.index] for t in fixed)  # a search would move them
        # ... and TFLite would ignore it: the same bytes either way.
        assert (_tflite.finish_as_converter(quantize_with_ranges(calib, searched))
                == tfq8.convert(calibration=calib, method=method))


def test_auto_keeps_minmax_with_too_few_samples_to_judge(caplog, monkeypatch):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)])
    x = np.random.default_rng(2).standard_t(3, size=(auto.MIN_SAMPLES_TO_CHOOSE - 1, 16))
    with caplog.at_level("INFO", logger="tfq8"):
        few = tfq8.calibrate(model, x.astype(np.float32))
        blob = tfq8.convert(calibration=few)
    assert few.last_auto.method == "minmax" and set(few.last_auto.choice.values()) == {"minmax"}
    assert blob == tfq8.convert(calibration=few, method="minmax")
    assert "too few to tell a gain from luck" in caplog.text
    assert few.last_auto.summary().endswith("; 7 sample(s) scored, too few (< 8) to leave minmax)")
    assert "Calibrating on 7 sample(s)" in caplog.text and "100 to 500" in caplog.text
    monkeypatch.setattr(auto, "MIN_SAMPLES_TO_CHOOSE", 1)  # without the guard: a "gain" on 7
    tfq8.convert(calibration=few)
    assert few.last_auto.method == "mse" and few.last_auto.scores["mse"] > few.last_auto.scores[
        "minmax"] + 1


def test_a_fused_lstm_converts_to_the_same_bytes_first_and_later_in_a_process():
    """TFLite's quantizer leaves two unreferenced buffers beside a fused LSTM whose bytes
    differed between the first quantization in a process and every later one, so the
    same model and data gave another .tflite in a fresh process (the command line) than
    after any earlier conversion. A fresh process, since this one has quantized before."""
    script = textwrap.dedent("""
        import hashlib, sys
        import numpy as np
        import factories, tfq8
        from tfq8 import _tflite
        model = factories.tf_keras_lstm()
        x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32)
        calib = tfq8.calibrate(model, x)
        blobs = [tfq8.convert(calibration=calib, method="minmax") for _ in range(2)]
        assert blobs[0] == blobs[1], "first and second conversion differ"
        raw = _tflite.quantize(_tflite.set_ranges(calib.model, calib.ranges("minmax")))
        assert _tflite.clear_unreferenced_buffers(raw) != raw  # the quantizer left some
        print("ok")
    """)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([here, os.path.dirname(here),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.parametrize("bad", [(-3e38, 3e38), (-3.4e38, 1e37), (-2e38, 2e38)])
def test_a_range_wider_than_float32_is_refused_before_any_work(bad):
    # Its int8 scale overflowed to inf, and the quantized model was called corrupted.
    with pytest.raises(ValueError, match=r"^ranges\['logits'\] must span at most 3\.402823e\+38 "
                                         r"\(float32's largest value\), 0 included\. Received: "):
        tfq8.convert("no-such-model.keras", ranges={"logits": bad})
    tfq8.pipeline.check_convert_options(ranges={"logits": (-1e38, 1e38)})  # wide, but fits

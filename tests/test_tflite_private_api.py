"""Fails loudly when a TensorFlow release moves the private API tfq8 relies on.

Everything tfq8 takes from TensorFlow's private modules goes through
`tfq8/_tflite.py`; these tests pin each piece of it.
"""

import inspect as pyinspect

import numpy as np
import pytest
import tensorflow as tf

import factories
import tfq8
from tfq8 import _tflite


def test_installed_tensorflow_is_supported():
    _tflite.check_tf_version()
    assert ".".join(tf.__version__.split(".")[:2]) in _tflite.SUPPORTED_TF_VERSIONS


def test_unsupported_tensorflow_is_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv(_tflite.ALLOW_UNSUPPORTED_ENV, raising=False)
    with pytest.raises(RuntimeError, match="2.99.0"):
        _tflite.check_tf_version("2.99.0")
    monkeypatch.setenv(_tflite.ALLOW_UNSUPPORTED_ENV, "1")
    _tflite.check_tf_version("2.99.0")  # warns only


def test_mlir_quantize_signature():
    from tensorflow.lite.python import convert

    params = pyinspect.signature(convert.mlir_quantize).parameters
    for name in ("input_data_str", "disable_per_channel", "fully_quantize",
                 "input_data_type", "output_data_type"):
        assert name in params, f"mlir_quantize lost parameter {name!r}"


def test_converter_still_has_calibrate_only_switch():
    converter = tf.lite.TFLiteConverter.from_keras_model(factories.mlp())
    assert hasattr(converter, "_experimental_calibrate_only")
    assert converter._experimental_calibrate_only is False


def test_flatbuffer_helpers_exist():
    from tensorflow.lite.tools import flatbuffer_utils

    assert callable(flatbuffer_utils.read_model_from_bytearray)
    assert callable(flatbuffer_utils.convert_object_to_bytearray)
    assert hasattr(_tflite.schema, "QuantizationParametersT")


def test_conversion_metadata_helpers_exist():
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as meta_fb
    from tensorflow.lite.python import lite, util

    assert util.CONVERSION_METADATA_FIELD_NAME == "CONVERSION_METADATA"
    assert callable(util.get_model_hash) and callable(util.populate_conversion_metadata)
    assert hasattr(meta_fb, "ConversionMetadataT")
    # The converter's last steps, which finish_as_converter repeats.
    assert "_get_model_hash(model_object)" in pyinspect.getsource(
        lite.TFLiteConverterBase._convert_and_export_metrics)
    assert "_deduplicate_readonly_buffers(model)" in pyinspect.getsource(
        lite.TFLiteConverterBase._optimize_tflite_model)


@pytest.fixture(scope="module")
def calibrated():
    model = factories.mlp()
    x = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    handle = tfq8.models.load_model(model)
    return _tflite.calibrate_only(handle.converter(), tfq8.representative_dataset(x, model=model))


def test_calibrate_only_returns_a_float_model_with_ranges(calibrated):
    ranges = _tflite.calibrated_ranges(calibrated)
    parsed = _tflite.read_model(calibrated)
    sg = parsed.subgraphs[0]
    assert int(sg.inputs[0]) in ranges and int(sg.outputs[0]) in ranges
    assert all(_tflite.tensor_type_name(sg.tensors[i].type) == "FLOAT32" for i in ranges)
    assert all(lo <= hi for lo, hi in ranges.values())


def test_the_calibrator_of_a_float_tflite_records_the_same_ranges(calibrated):
    model = factories.mlp()
    x = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    float_model = tfq8.models.load_model(model).to_float_tflite()
    seen = []
    from_tflite = _tflite.calibrate_tflite(float_model, tfq8.representative_dataset(x, model=model),
                                           on_float_model=seen.append)
    assert len(seen) == 1  # (the worker gets the model this way)
    assert _tflite.calibrated_ranges(from_tflite) == _tflite.calibrated_ranges(calibrated)


def test_edited_ranges_drive_the_quantizer(calibrated):
    index = int(_tflite.read_model(calibrated).subgraphs[0].outputs[0])
    edited = _tflite.set_ranges(calibrated, {index: (-2.0, 3.1)})
    assert _tflite.calibrated_ranges(edited)[index] == pytest.approx((-2.0, 3.1), rel=1e-6)
    quantized = _tflite.quantize(edited)
    out = tfq8.inspect(quantized).outputs[0]
    assert out.dtype == "INT8"
    assert out.scale[0] == pytest.approx(5.1 / 255, rel=1e-5)


def test_byte_patching_equals_reserializing(calibrated):
    ranges = {i: (lo * 0.5, hi * 0.7) for i, (lo, hi) in _tflite.calibrated_ranges(calibrated).items()}
    parsed = _tflite.read_model(calibrated)
    for i, (lo, hi) in ranges.items():
        q = parsed.subgraphs[0].tensors[i].quantization
        q.min = np.array([lo], np.float32)
        q.max = np.array([hi], np.float32)
    rebuilt = _tflite.write_model(parsed)
    patched = _tflite.set_ranges(calibrated, ranges)
    assert _tflite.calibrated_ranges(rebuilt) == _tflite.calibrated_ranges(patched)
    assert _tflite.quantize(rebuilt) == _tflite.quantize(patched)


def test_buffer_views_write_into_the_serialized_model(calibrated):
    """bias_correction changes weights through these views instead of re-serializing."""
    parsed = _tflite.read_model(calibrated)
    buffers = [t.buffer for t in parsed.subgraphs[0].tensors
               if parsed.buffers[t.buffer].data is not None and len(parsed.buffers[t.buffer].data)]
    out = bytearray(calibrated)
    views = _tflite.buffer_views(out, buffers + [0])
    assert sorted(views) == sorted(buffers)  # buffer 0 is the empty sentinel
    k = buffers[0]
    views[k][:4] = [1, 2, 3, 4]
    edited = _tflite.read_model(bytes(out))
    np.testing.assert_array_equal(edited.buffers[k].data[:4], [1, 2, 3, 4])
    for j in buffers[1:]:
        np.testing.assert_array_equal(edited.buffers[j].data, parsed.buffers[j].data)


def test_set_ranges_rejects_uncalibrated_tensors(calibrated):
    ranges = _tflite.calibrated_ranges(calibrated)
    weight = next(i for i in range(len(_tflite.read_model(calibrated).subgraphs[0].tensors)) if i not in ranges)
    with pytest.raises(ValueError, match="no calibrated range"):
        _tflite.set_ranges(calibrated, {weight: (0.0, 1.0)})


def test_production_order_reads_the_flatbuffer_like_the_object_api(calibrated):
    sg = _tflite.read_model(calibrated).subgraphs[0]
    expected = [int(i) for i in sg.inputs]
    for op in sg.operators:
        expected += [int(o) for o in op.outputs if int(o) not in expected]
    assert _tflite.production_order(calibrated) == expected


def test_float_model_reaches_the_hook_before_calibration():
    # tfq8's worker gets the converter's float model from its private _quantize step.
    model = factories.mlp()
    x = np.random.default_rng(0).normal(size=(8, 20)).astype(np.float32)
    converter = tfq8.models.load_model(model).converter()
    assert callable(getattr(converter, "_quantize", None)), "TFLiteConverter lost _quantize"
    seen = []
    calibrated = _tflite.calibrate_only(converter, tfq8.representative_dataset(x, model=model),
                                        on_float_model=seen.append)
    assert len(seen) == 1
    float_model, calibrated_model = _tflite.read_model(seen[0]), _tflite.read_model(calibrated)
    ranges = _tflite.calibrated_ranges(calibrated)
    assert ranges and not _tflite.calibrated_ranges(seen[0])
    # Same graph: the calibrator only adds min/max.
    for i in ranges:
        assert (_tflite.tensor_name(float_model.subgraphs[0].tensors[i])
                == _tflite.tensor_name(calibrated_model.subgraphs[0].tensors[i]))


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_compiled_metric_objects_are_kept_where_compile_arguments_reads_them(framework):
    keras_module = pytest.importorskip(framework)

    def my_metric(y_true, y_pred):
        return y_pred[:, 0]

    model = keras_module.Sequential([keras_module.Input((3,)), keras_module.layers.Dense(2)])
    assert _tflite.compile_arguments(model) is None  # not compiled yet
    model.compile("adam", "mse", metrics=[my_metric, "mae"])
    arguments = _tflite.compile_arguments(model)
    assert arguments is not None and arguments["metrics"][0] is my_metric, arguments


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_keras_layers_finds_the_layers_inside_wrappers_and_custom_layers(framework):
    keras_module = pytest.importorskip(framework)

    class Block(keras_module.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rnn = keras_module.layers.GRU(4, name="inner_gru")

        def call(self, x):
            return self.rnn(x)

    inp = keras_module.Input((5, 3))
    h = keras_module.layers.TimeDistributed(keras_module.layers.Dense(3, name="td_dense"))(inp)
    model = keras_module.Model(inp, Block()(h))
    names = {layer.name for layer in _tflite.keras_layers(model)}
    assert {"td_dense", "inner_gru"} <= names and model.name not in names


def test_is_plain_functional_tells_keras_own_call_from_an_override():
    import keras  # noqa: PLC0415

    inp = keras.Input((3,))
    out = keras.layers.Dense(2)(inp)

    class Overriding(keras.Model):
        def call(self, x):
            return super().call(x) * 2.0

    assert _tflite.is_plain_functional(keras.Model(inp, out))
    assert not _tflite.is_plain_functional(Overriding(inp, out))


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_lambda_in_float32_keeps_the_live_function_and_output_shape(framework):
    keras_module = pytest.importorskip(framework)
    scale = np.float32(3.0)  # a global-like value the function closes over
    layer = keras_module.layers.Lambda(lambda t: t * scale, output_shape=(4,), name="triple",
                                       dtype="mixed_float16")
    copy = _tflite.lambda_in_float32(layer)
    assert copy.function is layer.function and copy.name == "triple"
    assert copy.dtype_policy.name == "float32"
    assert copy._output_shape == (4,)  # noqa: SLF001 - the private attribute pinned here
    np.testing.assert_allclose(copy(np.ones((2, 4), np.float32)), 3.0)


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_is_graph_model_tells_sequential_and_functional_from_subclassed(framework):
    k = pytest.importorskip(framework)

    class Sub(k.Model):
        def call(self, x):
            return x

    inp = k.Input((3,))
    assert _tflite.is_graph_model(k.Model(inp, k.layers.Dense(2)(inp)))
    assert _tflite.is_graph_model(k.Sequential([k.Input((3,)), k.layers.Dense(2)]))
    assert not _tflite.is_graph_model(Sub())


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_rename_like_names_a_copys_layers_after_the_model_where_keras_lets_it(framework):
    k = pytest.importorskip(framework)
    model = k.Sequential([k.Input((3,)), k.layers.Dense(2, name="first"),
                          k.layers.Dense(1, name="second")], name="orig")
    copy = k.Sequential([k.Input((3,)), k.layers.Dense(2), k.layers.Dense(1)])
    _tflite.rename_like(copy, model)
    names = [layer.name for layer in (copy, *copy.layers)]
    if framework == "keras":  # a plain attribute in Keras 3
        assert names == ["orig", "first", "second"]
    else:  # read-only in tf_keras: left as they were, without an error
        assert names[1:] != ["first", "second"]

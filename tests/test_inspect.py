"""tfq8.inspect: ops, dtypes, and a checked full-integer verdict."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

import factories as F
import tfq8
from tfq8.models import load_model


@pytest.fixture(scope="module")
def mlp():
    return F.mlp(seed=5)


def test_int8_model_is_full_integer(mlp):
    blob = tfq8.convert(mlp, np.random.default_rng(0).normal(size=(32, 20)).astype(np.float32))
    info = tfq8.inspect(blob)
    assert info.full_integer and info.float_ops == ()
    assert all(op.kind == "integer" for op in info.ops)
    assert info.inputs[0].dtype == "INT8" and info.inputs[0].scale
    assert info.size_bytes == len(blob)
    assert "full-integer" in str(info) and "<-" not in str(info)
    last = info.ops[-1].outputs[0]             # the text names every op's output in full, with
    lo, hi = last.range                        # the range its int8 grid spans
    assert lo == (-128 - last.zero_point[0]) * last.scale[0] and hi > 0 > lo
    assert f"[{lo:.4g}, {hi:.4g}]" in str(info) and all(op.outputs[0].name in str(info)
                                                         for op in info.ops)
    assert re.search(r"\n +- +\(model input\) +INT8 +\[[-\d.e]+, [-\d.e]+\] +"
                     + re.escape(info.inputs[0].name), str(info))
    d = json.loads(json.dumps(info.to_dict()))
    assert d["outputs"][0]["range"] == list(last.range)
    assert d["full_integer"] is True and len(d["ops"]) == len(info.ops)
    assert info.inputs[0].shape == (1, 20) and d["inputs"][0]["shape_signature"] == [-1, 20]


@pytest.mark.parametrize("io_type", ["int8", "uint8", "float32"])
def test_io_lines_give_the_apps_conversion_of_inputs_and_outputs(mlp, io_type):
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).normal(size=(32, 20)).astype(np.float32)
    blob = tfq8.convert(mlp, x, input_type=io_type, output_type=io_type, method="minmax")
    info = tfq8.inspect(blob)
    lines = info.io_lines()
    if io_type == "float32":  # nothing to convert at the app's side
        assert lines == [] and "real =" not in str(info)
        return
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    for line, kind, d in ((lines[0], "input ", inp), (lines[1], "output", out)):
        scale, zero = d["quantization"]
        sign = "-" if zero > 0 else "+"
        assert line == (f"{kind} {d['name']!r} {io_type.upper()}: real = {scale:.6g} * "
                        f"(q {sign} {abs(zero)})"), line
        assert line in str(info)
    # The formula is the one the model uses: quantize x by it, run, read the output by it.
    q = np.clip(np.round(x[:1] / inp["quantization"][0]) + inp["quantization"][1],
                *((-128, 127) if io_type == "int8" else (0, 255))).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], q)
    interpreter.invoke()
    real = out["quantization"][0] * (interpreter.get_tensor(out["index"]).astype(np.float64)
                                     - out["quantization"][1])
    np.testing.assert_allclose(real, mlp(x[:1]).numpy(), atol=0.25)


def test_dynamic_dimensions_show_in_the_shape_signature():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    blob = tfq8.convert(keras.Model(inp, keras.layers.Dense(2)(h)),
                        np.random.default_rng(0).random((8, 16, 16, 3), np.float32))
    assert tfq8.inspect(blob).inputs[0].shape_signature == (-1, -1, -1, 3)


def test_hybrid_model_is_flagged():
    import keras
    keras.utils.set_random_seed(0)
    wide = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(4)])  # >= 1024 weights: the converter quantizes
    converter = tf.lite.TFLiteConverter.from_keras_model(wide)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights only
    blob = converter.convert()
    info = tfq8.inspect(blob)
    assert not info.full_integer
    assert [(op.name, op.kind) for op in info.float_ops] == [
        ("FULLY_CONNECTED", "hybrid"), ("FULLY_CONNECTED", "float")]  # the 2nd is too small
    assert "<- hybrid" in str(info) and "NOT full-integer" in str(info)
    d = tfq8.inspect(blob).to_dict()
    assert d["full_integer"] is False and d["float_ops"]
    assert all(op["flagged"] == (op["index"] in d["float_ops"]) for op in d["ops"])


def test_float_model_and_float_io_boundaries(mlp):
    info = tfq8.inspect(load_model(mlp).to_float_tflite())
    assert not info.full_integer and {op.kind for op in info.float_ops} == {"float"}
    assert info.verdict() == (  # which tfq8 takes as a model
        f"NOT full-integer: a float model ({len(info.ops)} float op(s)); tfq8.convert(model, "
        "data) or `tfq8 convert MODEL --data FILE` quantizes it")
    # Float I/O around an integer graph: QUANTIZE/DEQUANTIZE at the edges are allowed.
    x = np.random.default_rng(1).normal(size=(32, 20)).astype(np.float32)
    blob = tfq8.convert(mlp, x, input_type="float32", output_type="float32")
    info = tfq8.inspect(blob)
    assert info.full_integer
    assert {op.name for op in info.ops if not op.is_integer} <= {"QUANTIZE", "DEQUANTIZE"}


def test_path_and_bad_input(tmp_path, mlp):
    blob = tfq8.convert(mlp, np.ones((8, 20), np.float32))
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    assert tfq8.inspect(str(path)).size_bytes == len(blob)
    with pytest.raises(ValueError, match="truncated"):
        tfq8.inspect(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="not a TFLite model"):
        tfq8.inspect(b"\x00" * 64)
    with pytest.raises(TypeError):
        tfq8.inspect(12)


def test_every_output_of_a_multi_output_op_gets_a_row():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    a, b = keras.ops.split(keras.layers.Dense(8)(inp), 2, axis=-1)
    model = keras.Model(inp, keras.layers.Concatenate()([a * 2.0, b]))
    info = tfq8.inspect(tfq8.convert(model, np.random.default_rng(0).normal(size=(32, 8))
                                     .astype(np.float32), method="minmax"))
    split = next(op for op in info.ops if op.name == "SPLIT")
    assert len(split.outputs) == 2
    rows = [line for line in str(info).splitlines() if any(
        line.endswith(t.name) for t in split.outputs)]
    assert len(rows) == 2 and all("[" in row for row in rows)   # each with its range


def test_a_float_model_without_ops_is_not_full_integer():
    """The converter's float model of a model that computes nothing (its input is its
    output) has no float op, and is still float: its input and output are."""
    import keras

    inp = keras.Input((4,), name="x")
    info = tfq8.inspect(load_model(keras.Model(inp, inp)).to_float_tflite())
    assert info.ops == () and info.float_ops == ()
    assert not info.full_integer
    assert [t.dtype for t in info.float_io] == ["FLOAT32"] and info.float_io[0] is info.inputs[0]
    assert re.search(r"\(model input\) +FLOAT32 .*serving_default_x:0 +<- float", str(info))
    assert str(info).endswith(
        "NOT full-integer: float model input(s)/output(s) that no op converts: "
        "'serving_default_x:0'")
    d = json.loads(json.dumps(info.to_dict()))
    assert d["full_integer"] is False and d["float_io"] == [info.inputs[0].index]


def test_inputs_no_op_reads_stay_float_unless_float_io_was_asked(caplog):
    """An unused input, or one passed through as an output, keeps the float32 TFLite's
    quantizer found: not full-integer with int8 I/O (tfq8.convert says so), as asked with
    float32 I/O (the QUANTIZE and DEQUANTIZE at the other inputs and outputs)."""
    import keras

    keras.utils.set_random_seed(0)
    x, y = keras.Input((4,), name="x"), keras.Input((3,), name="y")
    data = [np.ones((8, 4), np.float32), np.random.default_rng(0).normal(size=(8, 3))
            .astype(np.float32)]
    for outputs in (keras.layers.Dense(2)(y), [x, keras.layers.Dense(2)(y)]):
        model = keras.Model([x, y], outputs)
        with pytest.raises(tfq8.UnsupportedOpError,
                           match=r"Model input\(s\)/output\(s\) 'serving_default_x:0' stay "
                                 r"float32: no op reads.*Pass allow_float=True"):
            tfq8.convert(model, data, method="minmax")
        with caplog.at_level("WARNING", logger="tfq8"):
            blob = tfq8.convert(model, data, method="minmax", allow_float=True)
        assert "Kept in float (allow_float=True)" in caplog.text
        info = tfq8.inspect(blob)
        assert not info.full_integer and info.float_ops == ()
        assert [t.name for t in info.float_io] == ["serving_default_x:0"]
        floats = tfq8.convert(model, data, method="minmax", input_type="float32",
                              output_type="float32")
        assert tfq8.inspect(floats).full_integer

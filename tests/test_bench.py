"""tfq8.benchmark: latency, interleaved speedup, per-op table, sizes (no timed assertions)."""

import json
import math

import numpy as np
import pytest

import factories as F
import tfq8
from tfq8 import _tflite
from tfq8.harness import bench as B
from tfq8.harness.interpreter import make_interpreter


@pytest.fixture(scope="module")
def setup():
    model = F.cnn(seed=4)
    calib = tfq8.calibrate(model, F.images(32, seed=4))
    return model, calib, tfq8.convert(calibration=calib)


def test_report_covers_both_models_and_every_op(setup):
    model, calib, blob = setup
    b = tfq8.benchmark(blob, reference=model, runs=30, warmup=2, op_time_budget_s=0.01)
    info = tfq8.inspect(blob)
    assert [o.index for o in b.ops] == list(range(len(info.ops)))
    assert [o.op for o in b.ops] == [op.name for op in info.ops]
    assert [o.outputs[0][0] for o in b.ops] == [op.outputs[0].shape for op in info.ops]
    assert all(o.inputs[0][1] == "INT8" for o in b.ops)
    assert all(o.time_ms >= 0 and math.isfinite(o.time_ms) for o in b.ops)
    assert sum(o.share for o in b.ops) == pytest.approx(1.0)
    assert {o.output_name for o in b.float_ops} >= {o.output_name for o in b.ops}
    for k in ("int8", "float"):
        s = b.latency_ms[k]
        assert s["runs"] == 30 and 0 < s["p50"] <= s["p90"] <= s["p99"]
        assert b.ops_total_ms[k] > 0
    assert b.speedup == pytest.approx(b.latency_ms["float"]["p50"] / b.latency_ms["int8"]["p50"])
    assert b.size_bytes["int8"] == len(blob) < b.size_bytes["float"]
    text = str(b)
    assert "speedup" in text and "CONV_2D" in text and "per-op sum" in text
    json.loads(json.dumps(b.to_dict(), allow_nan=False))


def test_single_op_models_reproduce_the_whole_model_bit_for_bit(setup):
    _, _, blob = setup
    parsed = _tflite.read_model(blob)
    whole = make_interpreter(blob, preserve_all_tensors=True)
    d = whole.get_input_details()[0]
    x = np.random.default_rng(0).integers(-128, 128, d["shape"]).astype(np.int8)
    whole.set_tensor(d["index"], x)
    whole.invoke()
    for k, op in enumerate(parsed.subgraphs[0].operators):
        single, feeds = B.single_op_model(parsed, k)
        it = make_interpreter(single)
        for local, orig in feeds:
            it.set_tensor(local, whole.get_tensor(orig))
        it.invoke()
        out = it.get_output_details()[0]
        np.testing.assert_array_equal(it.get_tensor(out["index"]),
                                      whole.get_tensor(int(op.outputs[0])))
        want = {d["index"]: d for d in whole.get_tensor_details()}[int(op.outputs[0])]
        assert out["quantization"] == pytest.approx(want["quantization"])  # same scale/zero point


@pytest.mark.parametrize("backend", ["builtin", "reference"])
def test_backends_and_time_budget(setup, backend):
    _, calib, blob = setup
    b = tfq8.benchmark(blob, reference=calib, backend=backend, time_budget_s=0.05, warmup=1,
                       per_op=False)
    assert b.backend == backend and b.ops == () and b.speedup > 0
    assert b.latency_ms["int8"]["runs"] >= 5


def test_without_reference(setup):
    _, _, blob = setup
    b = tfq8.benchmark(blob, runs=5, warmup=1, op_time_budget_s=0.005)
    assert b.speedup is None and set(b.latency_ms) == {"int8"} and b.float_ops == ()
    assert len(b.ops) == len(tfq8.inspect(blob).ops)


def test_bad_arguments(setup, tmp_path):
    _, _, blob = setup
    (tmp_path / "bad.keras").write_bytes(b"garbage")  # as check() says it: "reference: ..."
    with pytest.raises(ValueError, match=r"^reference: model file exists but is not a valid "
                                         r"\.keras archive"):
        tfq8.benchmark(blob, reference=tmp_path / "bad.keras", runs=1)
    with pytest.raises(ValueError, match=r"^reference: model path does not exist\. "
                                         r"Received: reference='.*missing\.keras'$"):
        tfq8.benchmark(blob, reference=tmp_path / "missing.keras", runs=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        tfq8.benchmark(blob, backend="gpu")
    with pytest.raises(ValueError, match="runs must be a positive integer"):
        tfq8.benchmark(blob, runs=0)
    with pytest.raises(ValueError, match="num_threads"):
        tfq8.benchmark(blob, num_threads=0, runs=1)
    with pytest.raises(ValueError, match="truncated"):
        tfq8.benchmark(blob[:100])
    with pytest.raises(TypeError, match="reference must be"):
        tfq8.benchmark(blob, reference=1.5)
    for name, value in (("seed", "a"), ("seed", -1), ("op_time_budget_s", -1),
                        ("time_budget_s", float("inf")), ("progress", 5)):
        with pytest.raises(ValueError, match=f"{name} must be .*Received: {name}={value!r}"):
            tfq8.benchmark(blob, runs=1, **{name: value})
    # Of the wrong type: an ArgumentTypeError, a TypeError (these were plain ValueErrors).
    for name, value in (("progress", 5), ("backend", 3)):
        with pytest.raises(TypeError, match=f"{name} must be .*Received: {name}={value!r}"):
            tfq8.benchmark(blob, runs=1, **{name: value})
    with pytest.raises(ValueError, match=r"per_op must be True or False. Received: per_op='no'"):
        tfq8.benchmark(blob, runs=1, per_op="no")


def test_op_table_gives_no_ratio_for_ops_under_the_invoke_overhead():
    from tfq8.harness.bench import BenchReport, OpTiming

    def op(index, name, ms):
        return OpTiming(index, name, (), (((1, 4), "INT8"),), f"t{index}", ms, 0.5)

    report = BenchReport(latency_ms={}, speedup=None, ops=(op(0, "SHAPE", 0.00002), op(1, "CONV_2D", 0.02)),
                         float_ops=(op(0, "SHAPE", 0.0009), op(1, "CONV_2D", 0.05)),
                         ops_total_ms={}, invoke_overhead_ms=0.002, size_bytes={},
                         backend="builtin", num_threads=1)
    rows = report.op_table().splitlines()
    assert rows[1].split()[-1] == "-"          # 0.00002 vs 0.0009 ms: noise, not 45x
    assert rows[2].split()[-1] == "2.50x"
    assert "too short to compare" in rows[-1]


@pytest.fixture(scope="module")
def dynamic():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    return model, tfq8.convert(model, F.images(16, shape=(9, 7, 3)))


def test_dynamic_height_and_width_are_timed_at_the_shape_asked_for(dynamic, tmp_path, capfd):
    from clirun import run_cli

    model, blob = dynamic
    with pytest.raises(ValueError, match=r"dynamic dimensions \(shape signature \[-1, -1, -1, 3\]\)"
                                         r".*input_shapes=\[\[1, 224, 224, 3\]\].*--input-shape"):
        tfq8.benchmark(blob, runs=3, warmup=0, per_op=False)
    b = tfq8.benchmark(blob, reference=model, runs=5, warmup=1, op_time_budget_s=0.005,
                       input_shapes=[[1, 12, 10, 3]])
    assert b.speedup > 0
    conv = next(o for o in b.ops if o.op == "CONV_2D")
    assert conv.inputs[0][0] == (1, 12, 10, 3) and conv.outputs[0][0] == (1, 10, 8, 4)
    assert all(math.isfinite(o.time_ms) for o in b.ops)
    for bad in ([[1, 12, 10]], [[1, 12, 10, 4]], [[1, 0, 10, 3]], [[1, 12, 10, 3]] * 2, "1,12,10,3"):
        with pytest.raises(ValueError, match="input_shapes"):
            tfq8.benchmark(blob, runs=3, warmup=0, per_op=False, input_shapes=bad)
    with pytest.raises(ValueError, match="cannot run tflite_model on inputs of shape"):
        tfq8.benchmark(blob, runs=3, warmup=0, per_op=False, input_shapes=[[1, 2, 2, 3]])
    # The command line.
    path = tmp_path / "dyn.tflite"
    path.write_bytes(blob)
    code, out, err = run_cli(capfd, "bench", path, "--runs", "3", "--warmup", "0", "--per-op=false",
                             "--input-shape", "2,12,10,3", "--json")
    assert code == 0, err
    assert json.loads(out)["latency_ms"]["int8"]["runs"] == 3
    code, out, err = run_cli(capfd, "bench", path, "--input-shape", "1,x,10,3")
    assert code != 0 and "--input-shape must be sizes separated by commas" in err


def test_an_op_that_cannot_run_alone_is_left_out_of_the_total_and_the_json(caplog):
    import io
    import json
    from contextlib import redirect_stdout

    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def loop(x):
        return tf.nn.relu(tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 1.5),
                                        [tf.constant(0), x])[1])

    with redirect_stdout(io.StringIO()):
        blob = tf.lite.TFLiteConverter.from_concrete_functions(
            [loop.get_concrete_function()], loop).convert()
    report = tfq8.benchmark(blob, runs=5, warmup=1, backend="builtin", op_time_budget_s=0.005)
    assert [o.op for o in report.ops] == ["WHILE", "RELU"]  # (RELU has no options)
    assert not np.isfinite(report.ops[0].time_ms) and np.isfinite(report.ops[1].time_ms)
    assert "Op 0 (WHILE) runs other subgraphs (a loop's body, a branch)" in caplog.text
    assert "corrupted" not in caplog.text  # (what LiteRT said of the op alone)
    assert np.isfinite(report.ops_total_ms["int8"])
    json.dumps(report.to_dict(), allow_nan=False)


def test_an_input_shape_beyond_int32_is_refused_naming_input_shapes(setup):
    _, _, blob = setup
    with pytest.raises(ValueError, match=r"^input_shapes: input '.*' takes shapes like "
                                         r"\[-1, 16, 16, 3\].*Received: \[3000000000, 16, 16, 3\]$"):
        tfq8.benchmark(blob, runs=1, warmup=0, per_op=False,  # the batch may be any size
                       input_shapes=[[3_000_000_000, 16, 16, 3]])


@pytest.mark.parametrize("other", [lambda: F.mlp(), lambda: F.cnn(seed=4, classes=3)],
                         ids=["other inputs", "other outputs"])
def test_a_reference_of_another_model_is_refused_before_timing(setup, other):
    _, _, blob = setup
    with pytest.raises(ValueError, match=r"^reference must be the float model tflite_model came "
                                         r"from.*\(tflite_model: inputs \[\[None, 16, 16, 3\]\], "
                                         r"outputs \[\[None, 10\]\]\)\. Received: a reference "
                                         r"with inputs \[\[None, (20|16, 16, 3)\]\], outputs "
                                         r"\[\[None, (5|3)\]\]$"):
        tfq8.benchmark(blob, reference=other(), runs=1, warmup=0, per_op=False)
    tfq8.benchmark(blob, reference=F.cnn(seed=9), runs=1, warmup=0, per_op=False)  # same shapes


def test_a_float_model_is_timed_with_a_warning(setup, caplog):
    # As check() says it: the times reported as int8 would be a float model's.
    _, calib, blob = setup
    with caplog.at_level("WARNING", logger="tfq8"):
        tfq8.benchmark(calib.model, runs=1, warmup=0, per_op=False)
    assert "tflite_model has no quantized tensor: it is a float model" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tfq8"):
        tfq8.benchmark(blob, runs=1, warmup=0, per_op=False)
    assert "float model" not in caplog.text


def test_input_shapes_in_another_order_are_taken_where_only_that_order_fits():
    model = F.two_in_two_out()
    blob = tfq8.convert(model, F.two_in_data(16), method="minmax")
    names = [t.name for t in tfq8.inspect(blob).inputs]
    shapes = {"a": [2, 8], "b": [2, 4, 4, 1]}
    graph_order = [shapes[n.split(":")[0][-1]] for n in names]  # serving_default_b:0, ..._a:0
    assert graph_order == [shapes["b"], shapes["a"]]  # not the Keras order
    for given in (graph_order, graph_order[::-1]):  # the .tflite's order, and the other one
        b = tfq8.benchmark(blob, runs=2, warmup=0, per_op=True, op_time_budget_s=0.002,
                           input_shapes=given)
        fc = [o for o in b.ops if o.op == "FULLY_CONNECTED"]
        assert fc and all(o.inputs[0][0][0] == 2 for o in fc)  # batch 2: the shapes were used
    with pytest.raises(ValueError, match=r"input_shapes: input .* takes shapes like"):
        tfq8.benchmark(blob, runs=2, warmup=0, per_op=False, input_shapes=[[2, 8], [2, 8]])


def test_token_ids_are_valid_and_not_all_padding():
    """An Embedding(mask_zero=True) text classifier's int32 token input used to be fed all
    zeros: every token padding, so the masked mean divided by a zero count and the int8 DIV
    kernel stopped the benchmark ("div.cc ... data[i] != zero_point"). Token ids now come
    from 1 to the table's rows - 1, through Keras' negative-id SELECT_V2 to the GATHER."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    tok = np.random.default_rng(0).integers(0, 50, (64, 10)).astype("int32")
    model = keras.Sequential([keras.Input((10,), dtype="int32"),
                              keras.layers.Embedding(50, 8, mask_zero=True),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    blob = tfq8.convert(model, tok)
    assert tfq8.inspect(blob).full_integer
    b = tfq8.benchmark(blob, reference=model, runs=5, warmup=1, op_time_budget_s=0.01)
    assert b.speedup > 0 and any(o.op == "DIV" for o in b.ops)
    assert B._token_inputs(_tflite.read_model(blob)) == {0: 50}
    ids = B._random(B.TensorIO.from_details(make_interpreter(blob).get_input_details()[0]),
                    np.random.default_rng(0), {0: 50})
    assert ids.dtype == np.int32 and 1 <= ids.min() and ids.max() < 50

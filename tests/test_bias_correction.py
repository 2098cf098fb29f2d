"""Bias correction: only int32 biases move, the int8 model tracks float more closely."""

import json
import logging

import numpy as np
import pytest

import factories
import tfq8
from clirun import run_cli
from tfq8 import _tflite, bias_correction
from tfq8.errors import ArgumentTypeError
from tfq8.harness.interpreter import ModelRunner


@pytest.fixture(scope="module")
def cnn_calib():
    model = factories.skewed_channels_cnn(seed=4)
    x = factories.images(64, seed=4)
    return model, x, tfq8.calibrate(model, x)


def _sqnr(ref, out):
    ref = ref.astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / np.sum((out.astype(np.float64) - ref) ** 2))


def _tensors(blob):
    parsed = _tflite.read_model(blob)
    sg = parsed.subgraphs[0]
    return parsed, {_tflite.tensor_name(t): t for t in sg.tensors}


def _channel_mean_errors(blob, float_blob, x):
    """Output tensor name -> |mean(int8 - float)| per channel over positions inside the
    int8 grid, for every op with a bias."""
    q = ModelRunner(blob, preserve_all_tensors=True)
    f = ModelRunner(float_blob, preserve_all_tensors=True, batch_size=q.batch_size)
    parsed, _ = _tensors(blob)
    sg = parsed.subgraphs[0]
    fidx = {_tflite.tensor_name(t): i for i, t in enumerate(f.parsed.subgraphs[0].tensors)}
    outs = [op.outputs[0] for op in sg.operators
            if _tflite.op_name(parsed, op) in bias_correction.BIAS_INPUT]
    qs = {i: [] for i in outs}
    fs = {i: [] for i in outs}
    for _ in q.batches([x]):
        for i in outs:
            qs[i].append(q.tensor(i).copy())
    for _ in f.batches([x]):
        for i in outs:
            fs[i].append(f.tensor(fidx[_tflite.tensor_name(sg.tensors[i])]).copy())
    result = {}
    for i in outs:
        t = sg.tensors[i]
        s, z = t.quantization.scale[0], t.quantization.zeroPoint[0]
        qv = (np.concatenate(qs[i]).astype(np.float64) - z) * s
        fv = np.concatenate(fs[i]).astype(np.float64)
        inside = (fv > (-128 - z) * s + s / 2) & (fv < (127 - z) * s - s / 2)
        err = np.where(inside, qv - fv, 0.0).reshape(-1, fv.shape[-1]).sum(0)
        count = inside.reshape(-1, fv.shape[-1]).sum(0)
        result[_tflite.tensor_name(t)] = (np.abs(err / np.maximum(count, 1)), s)
    return result


def test_moves_only_biases_and_brings_int8_closer_to_float(cnn_calib, caplog):
    model, x, calib = cnn_calib
    plain = tfq8.convert(calibration=calib, method="minmax", per_channel=False)
    with caplog.at_level(logging.INFO, logger="tfq8"):
        fixed = tfq8.convert(calibration=calib, method="minmax", per_channel=False,
                             bias_correction=True)
    assert fixed != plain
    assert "bias correction:" in caplog.text and ", kept" in caplog.text
    # Same graph, same scales: only INT32 bias buffers of biased ops differ.
    pa, ta = _tensors(plain)
    pb, tb = _tensors(fixed)
    assert ta.keys() == tb.keys()
    moved = 0
    for name, a in ta.items():
        b = tb[name]
        qa, qb = a.quantization, b.quantization
        assert (a.type, list(a.shape)) == (b.type, list(b.shape)), name
        if qa is not None and qa.scale is not None:
            np.testing.assert_array_equal(qa.scale, qb.scale)
            np.testing.assert_array_equal(qa.zeroPoint, qb.zeroPoint)
        da, db = pa.buffers[a.buffer].data, pb.buffers[b.buffer].data
        if da is not None and not np.array_equal(da, db):
            assert _tflite.tensor_type_name(a.type) == "INT32", name
            moved += 1
    assert moved == 3  # two convolutions and the dense layer
    # Per-channel output shifts shrink, and the output SQNR against float rises.
    before = _channel_mean_errors(plain, calib.model, x)
    after = _channel_mean_errors(fixed, calib.model, x)
    assert sum(e.sum() / s for e, s in after.values()) < 0.5 * sum(e.sum() / s for e, s in before.values())
    first = next(iter(after))  # no op before it: corrected to within a step of its output
    assert np.all(after[first][0] <= after[first][1])
    ref = model.predict(x, verbose=0)
    run = lambda blob: ModelRunner(blob).run([x])[0]  # noqa: E731
    assert _sqnr(ref, run(fixed)) > _sqnr(ref, run(plain)) + 2.0
    # Deterministic.
    assert tfq8.convert(calibration=calib, method="minmax", per_channel=False,
                        bias_correction=True) == fixed


@pytest.mark.parametrize("io", [("uint8", "float32"), ("float32", "int8")])
def test_other_input_and_output_types(cnn_calib, io):
    model, x, calib = cnn_calib
    kw = dict(method="minmax", input_type=io[0], output_type=io[1])
    plain = tfq8.convert(calibration=calib, **kw)
    fixed = tfq8.convert(calibration=calib, bias_correction=True, **kw)
    assert calib.last_bias_correction.kept and fixed != plain
    info = tfq8.inspect(fixed)
    assert info.full_integer and [t.dtype for t in info.inputs] == [io[0].upper()]
    ref = model.predict(x, verbose=0)
    run = lambda blob: ModelRunner(blob).run([x])[0]  # noqa: E731
    assert _sqnr(ref, run(fixed)) > _sqnr(ref, run(plain))



@pytest.mark.parametrize("output_type", ["float32", "uint8"])
def test_op_feeding_an_output_of_another_type_is_corrected(cnn_calib, output_type):
    """The quantizer renames the dense layer's int8 output ('...:0' -> '...:01') and gives
    its name to the DEQUANTIZE or QUANTIZE it adds for the output type: the layer is
    still corrected, as with int8 output (it was skipped: no float tensor of that name)."""
    _, _, calib = cnn_calib
    int8_out = tfq8.convert(calibration=calib, method="minmax", bias_correction=True)
    assert len(calib.last_bias_correction.ops) == 3
    other = tfq8.convert(calibration=calib, method="minmax", output_type=output_type,
                         bias_correction=True)
    report = calib.last_bias_correction
    assert len(report.ops) == 3 and report.kept  # two convolutions and the dense layer

    def biases(blob):
        parsed, tensors = _tensors(blob)
        return {name.removesuffix(":01").removesuffix(":0"): bytes(parsed.buffers[t.buffer].data)
                for name, t in tensors.items()
                if _tflite.tensor_type_name(t.type) == "INT32" and len(t.shape) == 1
                and parsed.buffers[t.buffer].data is not None}

    assert biases(other) == biases(int8_out)

def test_dense_layers_and_auto():
    """Dense layers (FULLY_CONNECTED) and method="auto". An all-zero bias (an untrained
    layer's) is dropped by the converter, so there is nothing to move: trained ones."""
    model = factories.mlp(seed=2)
    x = np.random.default_rng(2).normal(size=(128, 20)).astype(np.float32)
    untrained = tfq8.calibrate(model, x)  # all-zero biases: the converter drops them
    plain = tfq8.convert(calibration=untrained)
    same, report = bias_correction.correct_biases(plain, untrained.model, untrained.samples)
    assert same == plain and report.ops == [] and not report.kept
    assert report.summary().startswith("bias correction: no bias value of 0 op(s) moved")
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.2, layer.bias.shape).astype(np.float32))
    x = np.random.default_rng(2).normal(size=(128, 20)).astype(np.float32)
    calib = tfq8.calibrate(model, x)
    plain = tfq8.convert(calibration=calib)
    fixed, report = bias_correction.correct_biases(plain, calib.model, calib.samples)
    assert len(report.ops) == 2 and report.samples == len(calib.samples[0])  # both Dense
    assert report.changed > 0
    # Kept exactly when not worse on the samples; else the model comes back unchanged.
    assert report.kept == (report.sqnr_after >= report.sqnr_before)
    assert (fixed != plain) == report.kept
    assert tfq8.convert(calibration=calib, bias_correction=True) == fixed


def test_frames_auto_finds_corrupted_are_left_out(cnn_calib):
    model, x, _ = cnn_calib
    bad = x.copy()
    bad[[5, 40]] = 60.0 * np.sign(bad[[5, 40]])  # two saturated-noise frames
    calib = tfq8.calibrate(model, bad)
    tfq8.convert(calibration=calib, method="minmax", bias_correction=True)
    report = calib.last_bias_correction
    assert report.excluded == [5, 40] and report.samples == len(x) - 2
    assert "2 corrupted-looking sample(s) left out" in report.summary()
    with pytest.raises(ValueError, match="exclude"):
        bias_correction.correct_biases(b"", b"", [x[:2]], exclude=[0, 1])


def test_not_kept_when_no_better(cnn_calib, monkeypatch, caplog):
    """A correction that lowers output SQNR on the samples is dropped."""
    _, _, calib = cnn_calib
    plain = tfq8.convert(calibration=calib, method="minmax")
    real = bias_correction._float_side

    def skewed(*args):
        masks, sums, counts = real(*args)
        shifted = [[s + 0.5 * c for s, c in zip(ss, cc)] for ss, cc in zip(sums, counts)]
        return masks, shifted, counts  # every float mean 0.5 higher

    monkeypatch.setattr(bias_correction, "_float_side", skewed)
    out, report = bias_correction.correct_biases(plain, calib.model, calib.samples)
    assert report.changed > 0 and report.sqnr_after < report.sqnr_before
    assert not report.kept and out == plain
    assert "not kept" in report.summary()


def test_needs_kept_samples_and_a_bool(cnn_calib):
    model, x, _ = cnn_calib
    none_kept = tfq8.calibrate(model, x, keep_samples=0)
    with pytest.raises(ValueError, match=r"bias_correction=True .* keep_samples"):
        tfq8.convert(calibration=none_kept, method="minmax", bias_correction=True)
    with pytest.raises(ArgumentTypeError, match="bias_correction"):
        tfq8.convert(model, x, bias_correction="yes")
    with pytest.raises(ValueError, match="samples"):
        bias_correction.correct_biases(b"", b"", [np.zeros((0, 16, 16, 3), np.float32)])


def test_command_line_and_callback_take_it(cnn_calib, tmp_path, capfd):
    model, x, calib = cnn_calib
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(capfd, "convert", tmp_path / "m.keras", "--data", tmp_path / "x.npy",
                             "--method", "minmax", "--bias-correction", "--output",
                             tmp_path / "m.tflite", "--progress=false", "--json")
    assert code == 0, err
    said = json.loads(out)["bias_correction"]
    assert said["kept"] and said["changed"] > 0 and said["sqnr_after_db"] > said["sqnr_before_db"]
    api = tfq8.convert(str(tmp_path / "m.keras"), x, method="minmax",
                       bias_correction=True)
    assert (tmp_path / "m.tflite").read_bytes() == api
    assert api != tfq8.convert(str(tmp_path / "m.keras"), x, method="minmax")
    tfq8.CalibrationCallback(x, convert_options={"bias_correction": True})
    with pytest.raises(ArgumentTypeError, match="bias_correction"):
        tfq8.CalibrationCallback(x, convert_options={"bias_correction": "no"})


def test_dynamic_height_and_width_sized_on_the_samples(monkeypatch):
    """Dynamic height and width are stored as 1 in the flatbuffer: the mask budget and
    the samples per op are sized on the data, so the same network with a fixed input
    size moves the same biases (the budget was ignored: 64 samples instead of 56, and
    every batch measured for each convolution)."""
    import keras  # noqa: PLC0415

    from tfq8.harness import interpreter  # noqa: PLC0415

    fixed = factories.skewed_channels_cnn(seed=4)
    dynamic = keras.Sequential([keras.Input((None, None, 3))]
                               + [type(la).from_config(la.get_config()) for la in fixed.layers])
    dynamic.set_weights(fixed.get_weights())
    x = factories.images(64, seed=4)
    monkeypatch.setattr(interpreter, "_MAX_BATCH", 8)  # several batches per op
    # Masks of 56 samples: (14*14*8 + 12*12*8 + 10) / 8 bytes each.
    monkeypatch.setattr(bias_correction, "MASK_BUDGET_BYTES", 19110)

    def corrected(model):
        calib = tfq8.calibrate(model, x)
        blob = tfq8.convert(calibration=calib, method="minmax", bias_correction=True)
        parsed = _tflite.read_model(blob)
        sg = parsed.subgraphs[0]
        return calib.last_bias_correction, [
            bytes(parsed.buffers[sg.tensors[op.inputs[2]].buffer].data) for op in sg.operators
            if _tflite.op_name(parsed, op) in bias_correction.BIAS_INPUT]

    (want, want_biases), (got, got_biases) = corrected(fixed), corrected(dynamic)
    assert want.samples == got.samples == 56 and got.kept
    assert got_biases == want_biases

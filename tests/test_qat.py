"""Quantization-aware training (tfmot) models: int8 with the ranges QAT learned.

The models are `factories.tf_keras_qat_cnn`: the tiny tf_keras CNN after four
QAT steps, fully annotated (`quantize_model`) or only Conv2D/BN/ReLU annotated.
"""

import json
import logging

import numpy as np
import pytest

try:
    import tensorflow_model_optimization as tfmot
except Exception as e:  # noqa: BLE001 - an incompatible tfmot may raise more than ImportError
    pytest.skip(f"tensorflow-model-optimization cannot be imported: {type(e).__name__}: {e}",
                allow_module_level=True)

import factories
import tfq8
import tfq8.qat
from tfq8 import _tflite

# |int8 top-1 - QAT float top-1| on 256 test images: QAT simulated the int8 grids,
# so int8 may only differ by rounding (measured: fully annotated, equal accuracy
# and 100% agreement, 31.4 dB; partially annotated, 0.4 points and 99.6%, 35.7 dB).
ACCURACY_BOUND = 0.02


@pytest.fixture(scope="module")
def qat_case():
    return factories.tf_keras_qat_cnn()


@pytest.fixture(scope="module")
def partial_case():
    return factories.tf_keras_qat_cnn(annotate_all=False)


@pytest.fixture(scope="module")
def qat_blob(qat_case):
    return tfq8.convert(qat_case[0])


@pytest.fixture(scope="module")
def partial_blob(partial_case):
    qat, x, _ = partial_case
    return tfq8.convert(qat, x, method="minmax")


def fakequant_range(model, layer, kind=None):
    """(min, max) of a FakeQuant variable pair in a tfmot layer.

    `layer` is the layer's name without Keras' `_1`, `_2` suffix; `kind` the
    variables' prefix ('output', 'post_activation'), None if the layer has one pair.
    """
    found = next(lay for lay in model.layers
                 if lay.name == layer or (lay.name.rsplit("_", 1)[0] == layer
                                          and lay.name.rsplit("_", 1)[1].isdigit()))
    short = {w.name.split("/")[-1].split(":")[0]: w for w in found.weights}

    def one(end):
        hits = [w for n, w in short.items() if (n == f"{kind}_{end}" if kind else n.endswith(end))]
        assert len(hits) == 1, (layer, kind, sorted(short))
        return float(hits[0].numpy())

    return one("min"), one("max")


def fakequant_qparams(lo, hi):
    """int8 scale and zero point TFLite derives from a FakeQuant range (8 bits, TF's nudging)."""
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(np.floor(-lo / scale + 0.5), 0, 255)) - 128
    return scale, zero_point


def op_output(info, op_name):
    return next(op for op in info.ops if op.name == op_name).outputs[0]


def assert_qparams(tensor, lo, hi):
    scale, zero_point = fakequant_qparams(lo, hi)
    assert tensor.dtype == "INT8"
    assert tensor.scale == pytest.approx((scale,), rel=1e-5), tensor.name
    assert tensor.zero_point == (zero_point,), tensor.name


def activation_qparams(blob):
    info = tfq8.inspect(blob)
    return {t.name: (t.scale, t.zero_point) for op in info.ops for t in op.inputs + op.outputs
            if not t.constant and t.dtype == "INT8"}


def test_qat_model_converts_to_full_integer_without_data(qat_case, qat_blob):
    info = tfq8.inspect(qat_blob)
    assert info.full_integer
    assert [op.name for op in info.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert [t.dtype for t in info.inputs + info.outputs] == ["INT8", "INT8"]
    # Data is only for tensors QAT did not annotate; here there are none. It is still checked.
    assert tfq8.convert(qat_case[0], qat_case[1]) == qat_blob
    x = np.asarray(qat_case[1])
    with pytest.raises(ValueError, match=r"Sample 0: expected input"):
        tfq8.convert(qat_case[0], x[:, :-1])
    with pytest.raises(ValueError, match=r"contains NaN or Inf"):
        tfq8.convert(qat_case[0], x * np.nan)
    with pytest.raises(ValueError, match=r"num_samples chooses samples of data, and no data"):
        tfq8.convert(qat_case[0], num_samples=5)


def test_int8_scales_are_the_fakequant_ranges_qat_learned(qat_case, qat_blob):
    qat = qat_case[0]
    info = tfq8.inspect(qat_blob)
    relu = fakequant_range(qat, "quant_re_lu", "output")
    # A ReLU output is never negative: a range below 0 can only come from QAT
    # (its moving-average FakeQuant), never from calibrating on data.
    assert relu[0] < -1.0
    assert_qparams(info.inputs[0], *fakequant_range(qat, "quantize_layer"))
    assert_qparams(op_output(info, "CONV_2D"), *relu)  # Conv2D + BN + ReLU, fused
    assert_qparams(op_output(info, "MEAN"),
                   *fakequant_range(qat, "quant_global_average_pooling2d", "output"))
    assert_qparams(info.outputs[0], *fakequant_range(qat, "quant_dense", "post_activation"))


def test_accuracy_within_bound_of_the_qat_float_model(qat_case, qat_blob):
    qat = qat_case[0]
    x_test = factories.images(256, seed=1)
    y_test = factories.colour_labels(x_test)
    report = tfq8.check(qat_blob, reference=qat, data=x_test, labels=y_test)
    keras_accuracy = float(np.mean(qat.predict(x_test, verbose=0).argmax(1) == y_test))
    # The reference is the QAT float model as Keras runs it, not an int8 graph.
    assert report.reference_accuracy == pytest.approx(keras_accuracy, abs=1 / 256)
    assert np.isfinite(report.outputs[0].sqnr_db)
    assert abs(report.accuracy - report.reference_accuracy) <= ACCURACY_BOUND
    assert report.agreement >= 0.97
    assert report.tensors  # per-tensor errors against the float graph, matched by name


def test_conversion_is_byte_identical_across_runs(partial_case, partial_blob):
    # (test_qat_model_converts_to_full_integer_without_data reruns the fully annotated one)
    qat, x, _ = partial_case
    assert tfq8.convert(qat, x, method="minmax") == partial_blob


def test_input_and_output_types(qat_case, qat_blob):
    blob = tfq8.convert(qat_case[0], input_type="uint8", output_type="float32")
    info = tfq8.inspect(blob)
    assert info.full_integer
    assert [t.dtype for t in info.inputs] == ["UINT8"] and [t.dtype for t in info.outputs] == [
        "FLOAT32"]
    assert [info.ops[0].name, info.ops[-1].name] == ["QUANTIZE", "DEQUANTIZE"]
    uint8_input = info.inputs[0]
    int8_input = tfq8.inspect(qat_blob).inputs[0]
    assert uint8_input.scale == int8_input.scale
    assert uint8_input.zero_point == (int8_input.zero_point[0] + 128,)
    # The int8 graph inside is the same, with QAT's ranges.
    assert activation_qparams(blob).items() >= {
        k: v for k, v in activation_qparams(qat_blob).items()
        if k not in (info.inputs[0].name, info.outputs[0].name)}.items()


def test_partial_qat_calibrates_only_what_qat_did_not_annotate(partial_case, partial_blob):
    qat, x, _ = partial_case
    with pytest.raises(ValueError, match=r"FULLY_CONNECTED.*Pass data=.*Received: data=None"):
        tfq8.convert(qat)
    info = tfq8.inspect(partial_blob)
    assert info.full_integer
    assert [t.dtype for t in info.inputs + info.outputs] == ["INT8", "INT8"]
    assert_qparams(info.inputs[0], *fakequant_range(qat, "quantize_layer"))
    assert_qparams(op_output(info, "CONV_2D"), *fakequant_range(qat, "quant_re_lu", "output"))
    # The Dense output had no QAT range: calibrated from the data (minmax: the logits'
    # extremes on x, widened to include 0).
    logits = qat.predict(x, verbose=0)
    lo, hi = min(0.0, float(logits.min())), max(0.0, float(logits.max()))
    assert info.outputs[0].scale == pytest.approx(((hi - lo) / 255,), rel=0.02)


def test_partial_qat_bias_matches_the_qat_tensor_it_reads(partial_case, partial_blob):
    """The first op after the QAT region reads an int8 QAT tensor: its bias scale must be
    that tensor's scale times the weights' (TFLite's own conversion gets this wrong)."""
    qat = partial_case[0]
    fc = next(op for op in tfq8.inspect(partial_blob).ops if op.name == "FULLY_CONNECTED")
    activation, weights, bias = fc.inputs
    assert bias.scale == pytest.approx(tuple(activation.scale[0] * np.array(weights.scale)),
                                       rel=1e-5)
    x_test = factories.images(256, seed=1)
    report = tfq8.check(partial_blob, reference=qat, data=x_test,
                        labels=factories.colour_labels(x_test), per_tensor=False)
    assert report.outputs[0].sqnr_db > 25.0  # measured 35.7 dB (TFLite's converter: -3.9 dB)
    assert abs(report.accuracy - report.reference_accuracy) <= ACCURACY_BOUND


def test_qat_h5_file_loads_in_tfmot_scope(qat_case, qat_blob, tmp_path):
    qat_case[0].save(tmp_path / "qat.h5")
    assert tfq8.convert(str(tmp_path / "qat.h5")) == qat_blob


def test_cli_converts_a_qat_file_without_data(qat_case, qat_blob, tmp_path, capfd):
    from clirun import run_cli

    qat_case[0].save(tmp_path / "qat.h5")
    out = tmp_path / "qat_int8.tflite"

    def run(*argv):
        return run_cli(capfd, *argv)

    code, stdout, _ = run("convert", tmp_path / "qat.h5", "--output", out, "--json")
    assert code == 0
    assert out.read_bytes() == qat_blob
    assert json.loads(stdout)["full_integer"] is True
    code, _, err = run("convert", tmp_path / "qat.h5", "--calibration-out", tmp_path / "s.npz")
    assert code != 0 and "--calibration-out needs --data" in err
    # With data the CLI calibrates (for --calibration-out) and still converts as the API does.
    np.save(tmp_path / "x.npy", qat_case[1][:16])
    code, stdout, _ = run("convert", tmp_path / "qat.h5", "--data", tmp_path / "x.npy",
                          "--output", out, "--calibration-out", tmp_path / "s.npz", "--json")
    assert code == 0 and out.read_bytes() == qat_blob and (tmp_path / "s.npz").exists()
    assert "auto" not in json.loads(stdout)  # no range search ran: nothing to report
    tf_keras_plain = factories.tf_keras_cnn()
    tf_keras_plain.save(tmp_path / "plain.h5")
    code, _, err = run("convert", tmp_path / "plain.h5")
    assert code != 0 and "convert needs calibration data" in err


def test_statistics_do_not_change_a_fully_annotated_qat_conversion(qat_case, qat_blob,
                                                                   tmp_path):
    """Data, a calibration, or the callback's statistics: every range is QAT's, so the
    model is TFLite's QAT conversion in each case (same bytes), and its exports too."""
    qat, x, _ = qat_case
    calib = tfq8.calibrate(qat, x[:16])
    assert tfq8.convert(qat, calibration=calib) == tfq8.convert(qat, x[:16]) == qat_blob
    other, x2, y2 = factories.tf_keras_qat_cnn(seed=1)  # trained here, not the shared model
    with pytest.raises(ValueError, match="statistics of another model"):
        tfq8.convert(qat, calibration=tfq8.calibrate(other, x2[:16]))  # checked, though unused
    cb = tfq8.CalibrationCallback.for_model(other, x2[:16], every_n_epochs=1, verbose=0,
                                            filepath=str(tmp_path / "e{epoch}.tflite"))
    other.fit(x2[:16], y2[:16], epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert (tmp_path / "e1.tflite").read_bytes() == tfq8.convert(other)


def test_qat_savedmodel_is_recognised_by_its_fakequant_ops(qat_case, qat_blob, tmp_path):
    qat_case[0].save(tmp_path / "saved")
    blob = tfq8.convert(str(tmp_path / "saved"))  # no data needed
    assert tfq8.inspect(blob).full_integer
    ours = sorted(activation_qparams(blob).values())
    assert ours and ours == sorted(activation_qparams(qat_blob).values())


def test_qat_model_saved_as_keras_file_loads_or_says_why(qat_case, qat_blob, tmp_path):
    path = tmp_path / "qat.keras"
    qat_case[0].save(path)
    try:
        blob = tfq8.convert(str(path))
    except ValueError as e:  # tfmot 0.8.1 + tf_keras 2.21 cannot reload it
        assert "cannot reload QAT models saved as .keras" in str(e) and ".h5" in str(e)
        assert f"load_weights({str(path)!r})" in str(e)
        # The recipe for a file whose model object is gone: rebuild it, read the weights.
        rebuilt = tfmot.quantization.keras.quantize_model(factories.tf_keras_cnn())
        rebuilt.load_weights(path)
        x = factories.images(8, seed=2)
        np.testing.assert_array_equal(rebuilt.predict(x, verbose=0),
                                      qat_case[0].predict(x, verbose=0))
        blob = tfq8.convert(rebuilt)  # the same int8 model (layer names differ: quant_conv2d_1)
        assert sorted(activation_qparams(blob).values()) == sorted(
            activation_qparams(qat_blob).values())
    else:
        assert blob == qat_blob


def test_annotated_but_not_quantized_model_is_refused():
    annotated = tfmot.quantization.keras.quantize_annotate_model(factories.tf_keras_cnn())
    with pytest.raises(ValueError, match=r"expected a quantization-aware-trained model.*"
                                         r"QuantizeAnnotate.*quantize_apply"):
        tfq8.convert(annotated, factories.images(8))


@pytest.mark.parametrize("wrap,expected", [
    (lambda m: tfmot.sparsity.keras.prune_low_magnitude(m), "strip_pruning"),
    (lambda m: tfmot.clustering.keras.cluster_weights(
        m, number_of_clusters=4,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.LINEAR),
     "strip_clustering"),
], ids=["pruning", "clustering"])
def test_pruning_and_clustering_wrappers_are_refused(wrap, expected):
    with pytest.raises(ValueError, match=f"expected a model without .*{expected}.*Received: model"):
        tfq8.convert(wrap(factories.tf_keras_cnn()), factories.images(8))


def test_ranges_cannot_override_what_qat_learned(qat_case):
    with pytest.raises(ValueError, match="ranges= can only set tensors QAT did not annotate"):
        tfq8.convert(qat_case[0], ranges={"serving_default_image:0": (-1.0, 1.0)})


def test_ranges_on_a_partial_qat_model_say_which_tensors_are_qats(partial_case, caplog):
    qat, x, _ = partial_case
    calib = tfq8.calibrate(qat, x)
    kinds = _tflite.tensor_types(calib.model)
    learned = next(name for name, kind in kinds.items() if kind == "INT8")
    with pytest.raises(ValueError, match=r"already quantized \(INT8\).*quantization-aware"):
        tfq8.convert(calibration=calib, ranges={learned: (-1.0, 1.0)})
    copy = calib.tensor(next(iter(tfq8.qat.pinned_ranges(calib.model)))).name
    with pytest.raises(ValueError, match="float copy of a quantization-aware-trained tensor"):
        tfq8.convert(calibration=calib, ranges={copy: (0.5, 1.0)})
    assert not caplog.records  # no word about widening a range that is refused


def test_benchmark_warns_that_a_qat_reference_is_not_plain_float(qat_case, qat_blob, caplog):
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        report = tfq8.benchmark(qat_blob, reference=qat_case[0], runs=3, warmup=1, per_op=False)
    assert "quantization-aware-trained" in caplog.text and "float model QAT started from" in caplog.text
    assert report.speedup is not None and "float" in report.latency_ms


class _OutputOnlyConfig(tfmot.quantization.keras.QuantizeConfig):
    """A user's own QuantizeConfig: float weights, an 8-bit FakeQuant on the layer's output."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


def test_qat_file_with_a_custom_quantize_config_names_that_class(tmp_path):
    import tf_keras

    qk = tfmot.quantization.keras
    tf_keras.utils.set_random_seed(0)
    with qk.quantize_scope({"_OutputOnlyConfig": _OutputOnlyConfig}):
        qat = qk.quantize_apply(tf_keras.Sequential([
            tf_keras.Input((4, 4, 3), name="image"),
            qk.quantize_annotate_layer(tf_keras.layers.Flatten()),
            qk.quantize_annotate_layer(tf_keras.layers.Dense(3), _OutputOnlyConfig()),
        ]))
    qat.save(tmp_path / "qat.h5")
    # tf_keras alone stops at tfmot's QuantizeLayer; the class missing is the user's config.
    with pytest.raises(ValueError, match=r"quantization-aware-trained.*custom class "
                                         r"'_OutputOnlyConfig'.*quantize_scope\(") as e:
        tfq8.convert(str(tmp_path / "qat.h5"))
    assert "QuantizeLayer" not in str(e.value)
    with qk.quantize_scope({"_OutputOnlyConfig": _OutputOnlyConfig}):  # the recipe it gives
        import tf_keras.models
        loaded = tf_keras.models.load_model(tmp_path / "qat.h5", compile=False)
    assert tfq8.inspect(tfq8.convert(loaded)).full_integer


def test_options_without_effect_on_a_fully_annotated_model_are_warned_about(
        qat_case, qat_blob, partial_case, caplog):
    qat, x, _ = qat_case
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        assert tfq8.convert(qat, method="kl") == qat_blob
    assert "method='kl' has no effect here" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        assert tfq8.convert(qat, bias_correction=True) == qat_blob
    assert "bias_correction=True is not applied" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        blob = tfq8.convert(qat, x, method="percentile", method_options={"percentile": 99.0})
    assert blob == qat_blob
    assert ("method='percentile' and method_options={'percentile': 99.0} have no effect"
            in caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        tfq8.convert(qat)  # the defaults: nothing to warn about
    assert not caplog.records
    # A partially annotated model calibrates what QAT did not annotate: the method applies.
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        tfq8.convert(partial_case[0], partial_case[1], method="minmax")
    assert "has no effect" not in caplog.text

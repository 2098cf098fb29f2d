"""tfq8.check: accuracy, agreement, per-output and per-tensor error."""

import importlib
import json
import time

import keras
import numpy as np
import pytest

import factories as F
import tfq8
from tfq8.harness.interpreter import InvalidModelError


@pytest.fixture(scope="module")
def setup():
    model = F.cnn(seed=1)
    calib = tfq8.calibrate(model, F.images(64, seed=1))
    blob = tfq8.convert(calibration=calib, method="minmax")
    x = F.images(120, seed=7)
    # Labels: the float model's classes, a quarter of them changed, so that
    # accuracy is neither 0 nor 1.
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    y[::4] = (y[::4] + 1) % 10
    return model, calib, blob, x, y


def _by_hand(blob, x):
    """Top-1 and dequantized outputs, one sample at a time, straight on LiteRT."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=blob, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    it.allocate_tensors()
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for xi in x:
        s, z = d_in["quantization"]
        v = xi[None] if d_in["dtype"] == np.float32 else np.clip(
            np.round(xi[None] / s) + z, -128, 127).astype(np.int8)
        it.set_tensor(d_in["index"], v)
        it.invoke()
        o = it.get_tensor(d_out["index"]).astype(np.float64)
        if d_out["dtype"] != np.float32:
            o = (o - d_out["quantization"][1]) * d_out["quantization"][0]
        outs.append(o[0])
    return np.array(outs)


def test_accuracy_and_agreement_match_a_hand_computed_reference(setup):
    model, calib, blob, x, y = setup
    report = tfq8.check(blob, reference=calib, data=x, labels=y)
    q = _by_hand(blob, x)
    f = _by_hand(calib.model, x)
    assert report.num_samples == 120
    assert report.accuracy == pytest.approx(np.mean(np.argmax(q, 1) == y), abs=1e-12)
    assert report.reference_accuracy == pytest.approx(np.mean(np.argmax(f, 1) == y), abs=1e-12)
    assert report.agreement == pytest.approx(np.mean(np.argmax(q, 1) == np.argmax(f, 1)), abs=1e-12)
    assert 0.5 < report.reference_accuracy < 0.9
    out, = report.outputs
    err = q - f
    assert out.sqnr_db == pytest.approx(10 * np.log10((f ** 2).sum() / (err ** 2).sum()), abs=1e-3)
    assert out.max_abs_error == pytest.approx(np.abs(err).max(), rel=1e-5)
    cos = (q * f).sum() / np.sqrt((q ** 2).sum() * (f ** 2).sum())
    assert out.cosine == pytest.approx(cos, abs=1e-6)


def test_keras_reference_is_converted_and_tensors_match_by_name(setup):
    model, calib, blob, x, y = setup
    report = tfq8.check(blob, reference=model, data=x, labels=y)
    assert report.reference == "keras"
    names = {t.name for t in report.tensors}
    assert {t.name for t in calib.tensors} <= names  # every calibrated tensor is compared
    assert all(t.sqnr_db > 20 and t.cosine > 0.99 for t in report.tensors)
    assert report.agreement > 0.9
    text = str(report)
    assert "agreement" in text and "CONV_2D" in text
    assert all(t.name in text for t in report.tensors)    # in full: ranges= takes them
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["num_samples"] == 120 and len(d["tensors"]) == len(report.tensors)


@pytest.mark.parametrize("victim", [1, 2])
def test_a_damaged_range_is_ranked_worst(setup, victim):
    model, calib, blob, x, y = setup
    name = calib.tensors[victim].name  # conv outputs after ReLU
    lo, hi = calib.converter_ranges()[calib.tensors[victim].index]
    damaged = tfq8.convert(calibration=calib, method="minmax", ranges={name: (lo, hi / 20)})
    report = tfq8.check(damaged, reference=calib, data=x[:60])
    assert report.tensors[0].name == name
    assert report.tensors[0].local_sqnr_db < report.tensors[1].local_sqnr_db - 6
    good = {t.name: t for t in tfq8.check(blob, reference=calib, data=x[:60]).tensors}
    assert good[name].local_sqnr_db > report.tensors[0].local_sqnr_db + 10


def test_several_inputs_and_outputs(caplog):
    model = F.two_in_two_out(seed=3)
    data = F.two_in_data(64, seed=1)
    blob = tfq8.convert(model, data)
    y = np.random.default_rng(0).integers(0, 3, 64)
    report = tfq8.check(blob, reference=model, data=data, labels=y, output="cls")
    assert len(report.outputs) == 2
    assert all(o.sqnr_db > 15 for o in report.outputs)
    assert report.agreement > 0.8
    # Same figures from a list of arrays in the model's input order.
    order = [s.name for s in tfq8.harness.interpreter.ModelRunner(blob).input_specs()]
    again = tfq8.check(blob, reference=model, data=[data[n] for n in order], labels=y, output="cls")
    assert again.accuracy == report.accuracy and again.agreement == report.agreement
    # (x, y) data with one target per output, as model.fit takes them: output's labels.
    import tensorflow as tf

    reg = np.random.default_rng(1).normal(size=(64, 1)).astype(np.float32)
    for targets in ({"cls": y, "reg": reg}, [y, reg]):
        for kind in ((data, targets), tf.data.Dataset.from_tensor_slices(
                (data, targets if isinstance(targets, dict) else tuple(targets))).batch(8)):
            for output in ("cls", 0):
                paired = tfq8.check(blob, reference=model, data=kind, output=output,
                                    per_tensor=False)
                assert paired.accuracy == report.accuracy, (targets, kind, output)
                assert paired.reference_accuracy == report.reference_accuracy
    regression = tfq8.check(blob, reference=model, data=(data, [y, reg]), output="reg",
                            per_tensor=False)
    assert regression.accuracy is None and regression.agreement is None
    with caplog.at_level("WARNING", logger="tfq8"):
        none = tfq8.check(blob, reference=model, data=(data, {"reg": reg}), output="cls",
                          per_tensor=False)
    assert none.accuracy is None and "none for output 'cls'" in caplog.text
    # labels= takes such a dict too.
    by_name = tfq8.check(blob, reference=model, data=data, labels={"cls": y, "reg": reg},
                         output="cls", per_tensor=False)
    assert by_name.accuracy == report.accuracy
    with pytest.raises(ValueError, match=r"without the labels of output 'cls'.*Received: labels with keys "
                                         r"\['reg'\]"):
        tfq8.check(blob, reference=model, data=data, labels={"reg": reg}, output="cls")


@pytest.mark.parametrize("backend_module", ["keras", "tf_keras"])
def test_outputs_follow_the_keras_models_order_and_names(backend_module):
    # TFLite lists these outputs the other way round (by tensor, or by name for tf_keras).
    K = importlib.import_module(backend_module)
    K.utils.set_random_seed(0)
    x = K.Input((8,), name="x")
    h = K.layers.Dense(6, activation="relu")(x)
    model = K.Model(x, [K.layers.Dense(3, name="zcls")(h), K.layers.Dense(1, name="areg")(h)])
    data = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    blob = tfq8.convert(model, data)
    y = model.predict(data, verbose=0)[0].argmax(axis=1)
    signature_name = "output_0" if backend_module == "keras" else "zcls"
    for output in (0, "zcls", signature_name):
        report = tfq8.check(blob, reference=model, data=data, labels=y, output=output)
        assert [o.name for o in report.outputs] == ["zcls", "areg"]
        assert report.reference_accuracy == 1.0 and report.accuracy > 0.8
    if backend_module == "keras":  # output_0, output_1: Keras' order without a reference too
        assert tfq8.check(blob, data=data, labels=y).accuracy > 0.8


def test_labels_come_with_x_y_data_of_every_kind(setup):
    import keras
    import tensorflow as tf

    model, calib, blob, x, y = setup
    expected = tfq8.check(blob, reference=calib, data=x, labels=y)
    ds = tf.data.Dataset.from_tensor_slices((x, y))

    class Pairs(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return x[i * 30:(i + 1) * 30], y[i * 30:(i + 1) * 30]

    kinds = {"tuple": (x, y), "tuple with a list": (x, list(y)),
             "tf.data batched": ds.batch(16), "tf.data unbatched": ds,
             "generator": ((x[i:i + 7], y[i:i + 7]) for i in range(0, len(x), 7)),
             "one-hot": (x, np.eye(10)[y]), "one-hot rows in a list": (x, list(np.eye(10)[y])),
             "PyDataset": Pairs()}
    for kind, data in kinds.items():
        report = tfq8.check(blob, reference=calib, data=data)
        assert report.accuracy == expected.accuracy, kind
        assert report.reference_accuracy == expected.reference_accuracy, kind
    head = tfq8.check(blob, reference=calib, data=ds.batch(16), num_samples=50)
    assert head.accuracy == tfq8.check(blob, data=x[:50], labels=y[:50]).accuracy
    assert tfq8.check(blob, data=x).accuracy is None
    # Targets that are not class labels (regression, scores) give no accuracy, not an error.
    scores = np.random.default_rng(0).random((len(x), 10))
    for targets in (scores, scores[:, :1], np.array(["cat"] * len(x))):
        pairs = tf.data.Dataset.from_tensor_slices((x, targets)).batch(16)
        report = tfq8.check(blob, reference=calib, data=pairs)
        assert report.accuracy is None and report.outputs[0].sqnr_db > 20
        # regression targets: no classes, so no top-1 agreement either; strings say nothing
        assert (report.agreement is None) == (targets.dtype != np.dtype("<U3")), targets.dtype
    with pytest.raises(ValueError, match=r"Sample 0: labels must have one entry per sample; an "
                                         r"\(x, y\) item with 8 sample\(s\) needs as many. "
                                         r"Received y of shape \(7,\)"):
        tfq8.check(blob, data=iter([(x[:8], y[:7])]))
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        tfq8.check(blob, data=(x, y[:-1]))
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        tfq8.check(blob, data=(x, list(y) + [0]))


def test_xnnpack_skips_the_per_tensor_table_in_words_the_cli_fits_too(setup, caplog):
    model, calib, blob, x, y = setup
    with caplog.at_level("WARNING", logger="tfq8"):
        report = tfq8.check(blob, reference=calib, data=x, labels=y, backend="xnnpack")
    assert report.tensors == () and report.outputs[0].sqnr_db > 20
    # `tfq8 check --backend xnnpack` has no per_tensor to speak of.
    assert "per-tensor table" in caplog.text and "per_tensor" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tfq8"):
        tfq8.check(blob, reference=calib, data=x, backend="xnnpack", per_tensor=False)
    assert caplog.text == ""


def test_batched_and_per_sample_agree(setup):
    model, calib, blob, x, y = setup
    a = tfq8.check(blob, reference=calib, data=x, labels=y)
    b = tfq8.check(blob, reference=calib, data=x, labels=y, batch_size=1, per_tensor=False)
    assert (a.accuracy, a.agreement) == (b.accuracy, b.agreement)
    assert a.outputs[0].sqnr_db == pytest.approx(b.outputs[0].sqnr_db, abs=1e-3)  # float kernels


def test_ten_thousand_samples_run_batched():
    model = F.mlp(seed=2)
    x = np.random.default_rng(1).normal(size=(10_000, 20)).astype(np.float32)
    blob = tfq8.convert(model, x[:200])
    seen = []
    t0 = time.perf_counter()
    report = tfq8.check(blob, reference=tfq8.calibrate(model, x[:8]), data=x,
                        labels=np.zeros(10_000, int), progress=lambda d, n: seen.append(d))
    elapsed = time.perf_counter() - t0
    assert report.num_samples == 10_000 and seen[-1] == 10_000
    assert len(seen) < 100  # batches, not samples
    print(f"check of 10,000 samples: {elapsed:.2f}s")  # a figure, not an assertion


def test_bad_inputs_raise_clear_errors(setup, tmp_path):
    model, calib, blob, x, y = setup
    with pytest.raises(ValueError, match=r"expected input 'image' of shape \(None, 16, 16, 3\)"):
        tfq8.check(blob, reference=calib, data=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        tfq8.check(blob, data=x, labels=y[:-3])
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        tfq8.check(blob, data=x, labels=y + 10)
    with pytest.raises(ValueError, match="needs data"):
        tfq8.check(blob, reference=calib)
    with pytest.raises(InvalidModelError, match="truncated"):
        tfq8.check(blob[:500], data=x)
    with pytest.raises(ValueError, match="reference"):
        tfq8.check(blob, reference=str(tmp_path / "nope.keras"), data=x)
    with pytest.raises(TypeError, match="reference must be"):
        tfq8.check(blob, reference=42, data=x)
    with pytest.raises(ValueError, match=r"reference must be .tflite bytes .* no such file. "
                                         r"Received: reference='.*nope.tflite'"):
        tfq8.check(blob, reference=str(tmp_path / "nope.tflite"), data=x)
    with pytest.raises(ValueError, match="output must name one of"):
        tfq8.check(blob, data=x, output="nope")
    # Of the wrong type: an ArgumentTypeError, a TypeError (these were plain ValueErrors).
    with pytest.raises(TypeError, match=r"progress must be a callable .*Received: progress=3"):
        tfq8.check(blob, data=x, progress=3)
    with pytest.raises(TypeError, match=r"backend must be one of .*Received: backend=3"):
        tfq8.check(blob, data=x, backend=3)
    with pytest.raises(ValueError, match=r"backend must be one of .*Received: backend='gpu'"):
        tfq8.check(blob, data=x, backend="gpu")
    other = tfq8.convert(F.mlp(), np.zeros((8, 20), np.float32) + 1)
    with pytest.raises(ValueError):
        tfq8.check(blob, reference=other, data=x)
    with pytest.raises(ValueError, match=r"reference does not take the inputs the int8 model takes"):
        tfq8.check(blob, reference=F.mlp(), data=x[:4])
    with pytest.raises(ValueError, match=r"num_threads must be a positive integer.*=0"):
        tfq8.check(blob, data=x, num_threads=0)
    with pytest.raises(ValueError, match=r"per_tensor must be True or False"):
        tfq8.check(blob, data=x, per_tensor="no")
    with pytest.raises(ValueError, match=r"progress must be a callable .* Received: progress=5"):
        tfq8.check(blob, data=x, progress=5)
    five = tfq8.convert(F.cnn(seed=1, classes=5), F.images(16, seed=1), method="minmax")
    with pytest.raises(ValueError, match=r"reference must have the int8 model's outputs. Received: "
                                         r"a reference whose output .* has shape \(None, 5\) "
                                         r"where the int8 model's .* has \(None, 10\)"):
        tfq8.check(blob, reference=five, data=x)


def test_num_samples_takes_the_labels_of_the_samples_it_takes(setup):
    model, calib, blob, x, y = setup
    report = tfq8.check(blob, data=x, labels=y, num_samples=30, per_tensor=False)
    whole = tfq8.check(blob, data=x[:30], labels=y[:30], per_tensor=False)
    assert report.num_samples == 30 and report.accuracy == whole.accuracy
    for n_labels, num_samples in ((12, 100), (7, 5), (12, 5)):  # checked against all the data
        with pytest.raises(ValueError, match=r"labels must have one entry per sample of data "
                                             rf"\(10\). Received: labels of length {n_labels}"):
            tfq8.check(blob, data=x[:10], labels=y[:n_labels], num_samples=num_samples)


def test_a_float_model_is_checked_with_a_warning(setup, caplog):
    model, calib, blob, x, y = setup
    with caplog.at_level("WARNING", logger="tfq8"):
        tfq8.check(calib.model, data=x[:8])
    assert "it is a float model" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tfq8"):
        tfq8.check(blob, data=x[:8])
    assert "float model" not in caplog.text


def test_damage_before_a_scale_keeping_op_blames_the_producer():
    import keras
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.MaxPooling2D(),  # keeps its input's scale
                              keras.layers.Flatten(), keras.layers.Dense(4)])
    x = np.random.default_rng(3).normal(size=(80, 8, 8, 1)).astype(np.float32)
    calib = tfq8.calibrate(model, x[:40])
    victim = calib.tensors[1].name  # the conv's output
    lo, hi = calib.converter_ranges()[calib.tensors[1].index]
    bad = tfq8.convert(calibration=calib, ranges={victim: (lo, hi / 30)})
    report = tfq8.check(bad, reference=calib, data=x[40:])
    assert report.tensors[0].name == victim
    pool = next(t for t in report.tensors if t.op == "MAX_POOL_2D")
    assert pool.inherited_range and pool.range_sqnr_db < 10 < pool.local_sqnr_db
    assert "*" in str(report)


def test_x_y_tuple_supplies_labels(setup):
    model, calib, blob, x, y = setup
    a = tfq8.check(blob, data=(x, y), num_samples=50, per_tensor=False)
    b = tfq8.check(blob, data=x[:50], labels=y[:50], per_tensor=False)
    assert a.accuracy is not None and a.accuracy == b.accuracy and a.num_samples == 50


def test_a_single_unit_is_cut_at_one_threshold_for_int8_and_float():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.layers[0].set_weights([np.full((4, 1), 0.1, np.float32), np.array([0.3], np.float32)])
    x = np.random.default_rng(0).uniform(0, 1, (64, 4)).astype(np.float32)
    x[0] = 9.0                                   # the one float output above 1
    blob = tfq8.convert(model, x[1:], method="minmax")  # int8 range ends below it: all in [0, 1]
    float_out = model.predict(x, verbose=0)
    assert float_out.max() > 1 and float_out.min() > 0
    y = (float_out[:, 0] > 0).astype(np.float32)  # logits cut at 0: float 0./1. targets
    report = tfq8.check(blob, reference=model, data=(x, y), per_tensor=False)
    assert report.agreement == 1.0               # int8 and float both cut at 0
    assert report.accuracy == report.reference_accuracy == 1.0  # float labels from (x, y)


def test_a_list_in_the_keras_models_order_is_read_as_convert_reads_it():
    import keras

    keras.utils.set_random_seed(0)
    alpha, beta = keras.Input((6,), name="alpha"), keras.Input((4,), name="beta")
    h = keras.layers.Concatenate()([keras.layers.Dense(8)(beta), keras.layers.Dense(8)(alpha)])
    model = keras.Model([alpha, beta], keras.layers.Dense(3)(h))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(40, 4)).astype(np.float32)
    blob = tfq8.convert(model, [a, b], method="minmax")
    y = np.argmax(model.predict([a, b], verbose=0), axis=1)
    by_list = tfq8.check(blob, reference=model, data=([a, b], y), per_tensor=False)
    by_dict = tfq8.check(blob, reference=model, data={"alpha": a, "beta": b}, labels=y,
                         per_tensor=False)
    assert by_list.reference_accuracy == by_dict.reference_accuracy == 1.0
    assert by_list.outputs[0].sqnr_db == by_dict.outputs[0].sqnr_db


def test_a_branch_squeezed_by_a_concatenations_shared_grid_is_named():
    keras.utils.set_random_seed(0)
    i = keras.Input((8,))
    big, small = keras.layers.Dense(8)(i), keras.layers.Rescaling(1e-3)(keras.layers.Dense(4)(i))
    model = keras.Model(i, keras.layers.Dense(3)(keras.layers.Concatenate()([big, small])))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    report = tfq8.check(tfq8.convert(model, x, method="minmax"), reference=model, data=x)
    concat = next(t for t in report.tensors if t.op == "CONCATENATION")
    squeezed = [t for t in report.tensors if t.range_sqnr_db < 10]
    assert [t.shares_grid_with for t in squeezed] == [concat.name]  # the small branch only
    sharing = [t for t in report.tensors if t.shares_grid_with]
    assert len(sharing) == 2 and all(t.op == "FULLY_CONNECTED" for t in sharing)
    text = str(report)
    assert f"note: {squeezed[0].name} takes the grid of the CONCATENATION output {concat.name}" in text
    assert text.count("note:") == 1  # not the big branch, whose own range fits the grid
    assert report.to_dict()["tensors"][0]["shares_grid_with"] == concat.name


def test_all_zero_tensors_and_huge_values_do_not_break_the_figures():
    """logsumexp computes x - x (all zeros in float; a rounding's worth in int8): its SQNR is
    -inf, once crashing the ranking with a math domain error; it now goes last. Values
    over 1e19 overflow float32 sums of squares: the figures stay finite."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Dense(6)(inp)
    lse = keras.layers.Lambda(lambda t: keras.ops.logsumexp(t, axis=-1, keepdims=True))(h)
    huge = keras.layers.Lambda(lambda t: t * 1e20)(keras.layers.Dense(4)(inp))
    model = keras.Model(inp, [keras.layers.Dense(2)(lse), huge])
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    report = tfq8.check(tfq8.convert(model, x, method="minmax"), reference=model, data=x)
    silent = [t for t in report.tensors if t.sqnr_db == -np.inf]
    assert silent and report.tensors[-len(silent):] == tuple(silent)
    assert all(np.isfinite(o.sqnr_db) and o.sqnr_db > 15 for o in report.outputs)
    assert "-inf" in str(report)


def test_labels_that_no_class_index_can_be_are_named_as_received(setup):
    _, _, blob, x, y = setup
    for bad in (np.inf, -np.inf, np.nan):
        labels = y.astype(np.float64)
        labels[5] = bad
        with pytest.raises(ValueError, match=r"^labels must be (finite|integral) class indices\. "
                                             r"Received: (NaN or Inf|non-integral) values$"):
            tfq8.check(blob, data=x, labels=labels)
    with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.9 for output .*Received: "
                                         r"values 0\.\.100000000000000000000$"):
        tfq8.check(blob, data=x, labels=np.where(np.arange(len(y)) == 3, 1e20, 0.0))
    with pytest.raises(TypeError, match=r"^labels must be an array of class indices or one-hot "
                                        r"rows\. Received: complex128 array of shape \(120,\)$"):
        tfq8.check(blob, data=x, labels=y + 0j)


def test_an_output_of_the_wrong_kind_is_refused_before_the_reference_is_read(setup, tmp_path):
    _, _, blob, x, _ = setup
    for bad in (1.0, True, None, [0]):  # a missing reference file would be reported first
        with pytest.raises(TypeError, match=r"^output must be an output index or name\. "
                                            rf"Received: {type(bad).__name__}$"):
            tfq8.check(blob, reference=tmp_path / "missing.keras", data=x, output=bad)


def test_labels_of_the_wrong_length_are_refused_before_the_reference_is_converted(setup,
                                                                                  monkeypatch):
    from tfq8.harness import check as check_mod  # noqa: PLC0415

    model, _, blob, x, y = setup

    def converting(*args, **kwargs):
        raise AssertionError("the reference was converted first")

    monkeypatch.setattr(check_mod, "_reference_model", converting)
    with pytest.raises(ValueError, match=r"^labels must have one entry per sample \(120\)\. "
                                         r"Received: labels of length 117$"):
        tfq8.check(blob, reference=model, data=x, labels=y[:-3])
    with pytest.raises(ValueError, match=r"^labels must have one entry per sample \(10 samples "
                                         r"used\)\. Received: labels of length 12"):
        tfq8.check(blob, reference=model, data=x[:10], labels=list(y[:12]))


def test_a_per_pixel_softmax_is_scored_per_pixel():
    """A segmentation output [N, H, W, C]: top-1 is the argmax over C at each pixel (as
    Keras' accuracy and the callback's val_int8_agreement count it), not the argmax of the
    whole flattened map, which gave a U-Net at 40 dB of SQNR 8.67% agreement."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6, 6, 2)),
                              keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(3, 1, activation="softmax")])
    x = F.images(48, shape=(6, 6, 2), seed=2)
    blob = tfq8.convert(model, x, method="minmax")
    q = _by_hand(blob, x).argmax(-1)                        # [N, 6, 6]
    f = model.predict(x, verbose=0).argmax(-1)
    y = f.copy()
    y[:, ::2, 1] = (y[:, ::2, 1] + 1) % 3                   # some pixels labelled otherwise
    report = tfq8.check(blob, reference=model, data=x, labels=y)
    assert report.agreement == pytest.approx(np.mean(q == f), abs=1e-12)
    assert report.agreement > 0.9
    assert report.accuracy == pytest.approx(np.mean(q == y), abs=1e-12)
    assert report.reference_accuracy == pytest.approx(np.mean(f == y), abs=1e-12)
    one_hot = tfq8.check(blob, reference=model, data=x, labels=np.eye(3)[y])
    assert (one_hot.accuracy, one_hot.agreement) == (report.accuracy, report.agreement)
    in_data = tfq8.check(blob, reference=model, data=(x, y))  # (x, y) data carry them too
    assert (in_data.accuracy, in_data.agreement) == (report.accuracy, report.agreement)
    with pytest.raises(ValueError, match=r"labels must be class indices \[N\] or one-hot "
                                         r"\[N, 3\] \(per position of output .*: \[N, 6, 6\]"):
        tfq8.check(blob, reference=model, data=x, labels=y[:, 0, 0])

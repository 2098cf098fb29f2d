"""tfq8.CalibrationCallback: statistics, int8 metrics and exports during model.fit."""

from __future__ import annotations

import csv
import logging
import os

import keras
import numpy as np
import pytest

import factories
import tfq8
from tfq8 import callbacks as cbmod
from tfq8.errors import ArgumentTypeError
from tfq8 import diagnostics
from tfq8 import int8_metrics
from tfq8.pipeline import CALIBRATION_ATTR
from tfq8.models import load_model
from tfq8.harness.interpreter import make_interpreter
from tfq8.stats.histogram import Histogram


def _mlp_data(n=96, seed=0, features=20, classes=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = x[:, :classes].argmax(axis=1).astype(np.int64)
    return x, y


def _compiled_mlp(seed=0, metrics=("accuracy",), **compile_kwargs):
    model = factories.mlp(seed=seed)
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics), **compile_kwargs)
    return model


class _Inject(keras.callbacks.Callback):
    """Writes a scripted value per epoch into the logs (runs before the tfq8 callback)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, list(values)

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


def test_fit_then_convert_needs_no_data():
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:48], verbose=0)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    # Default: one calibration, after the last epoch, of the final weights.
    assert len(cb.timings) == 1
    assert isinstance(cb.calibration, tfq8.Calibration)
    assert cb.calibration.num_samples == 48
    assert getattr(model, CALIBRATION_ATTR) is cb.calibration
    blob = tfq8.convert(model)
    assert tfq8.inspect(blob).full_integer
    # The attached statistics are those of the final weights: same ranges as
    # converting with the data explicitly.
    fresh = tfq8.calibrate(model, x[:48])
    assert tfq8.convert(model, method="minmax") == tfq8.convert(calibration=fresh, method="minmax")


@pytest.mark.parametrize("kind", ["calibration", "validation"])
def test_bad_data_fails_before_training_not_after(kind):
    x, y = _mlp_data()
    model = _compiled_mlp()
    started = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    if kind == "calibration":
        cb = tfq8.CalibrationCallback(x[:8, :5], verbose=0)
    else:
        cb = tfq8.CalibrationCallback(x[:8], validation_data=(x[:8, :5], y[:8]), verbose=0)
    with pytest.raises(ValueError, match=r"expected input .*Received"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cb, probe])
    assert started == []


@pytest.mark.parametrize("kwargs", [dict(validation_data=True), dict(filepath="m.tflite")])
def test_unquantizable_op_fails_before_training_naming_convert_options(tmp_path, kwargs):
    x, y = _mlp_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8),
                              keras.layers.Lambda(keras.ops.sin), keras.layers.Dense(5)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if "validation_data" in kwargs:
        kwargs = dict(validation_data=(x[:16], y[:16]))
    else:
        kwargs = dict(filepath=str(tmp_path / kwargs["filepath"]))
    started = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    cb = tfq8.CalibrationCallback(x[:32], verbose=0, **kwargs)
    with pytest.raises(tfq8.UnsupportedOpError,
                       match=r"SIN could not be quantized .* Pass convert_options=\{\"allow_float\": "
                             r"True\} to the CalibrationCallback"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cb, probe])
    assert started == [] and not list(tmp_path.iterdir())
    with pytest.raises(tfq8.UnsupportedOpError, match=r"SIN .* Pass allow_float=True to keep"):
        tfq8.convert(model, x[:8], method="minmax")  # tfq8.convert's own advice


def test_an_unbuilt_model_is_checked_after_its_first_epoch(tmp_path):
    x, y = _mlp_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(8), keras.layers.Lambda(keras.ops.sin),
                              keras.layers.Dense(5)])  # no Input: built by the first batch
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    cb = tfq8.CalibrationCallback(x[:32], filepath=str(tmp_path / "m.tflite"), verbose=0)
    assert not model.built
    with pytest.raises(tfq8.UnsupportedOpError, match=r"SIN could not be quantized"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cb, probe])
    assert started == [0] and not list(tmp_path.iterdir())


def test_int8_keys_in_logs_history_and_csv(tmp_path):
    x, y = _mlp_data()
    model = _compiled_mlp()
    csv_path = tmp_path / "log.csv"
    record = _Record()
    cb = tfq8.CalibrationCallback(x[:48], validation_data=(x[48:], y[48:]), every_n_epochs=1,
                                  filepath=str(tmp_path / "best-{epoch:02d}-{val_int8_accuracy:.3f}.tflite"),
                                  save_best_only=True, verbose=0)
    history = model.fit(x[:48], y[:48], epochs=2, batch_size=16, verbose=0,
                        validation_data=(x[48:], y[48:]),
                        callbacks=[cb, record, keras.callbacks.CSVLogger(str(csv_path))])
    for key in ("val_int8_accuracy", "val_int8_agreement", "val_int8_loss"):
        assert len(history.history[key]) == 2, key
        assert all(key in logs for logs in record.logs)
    acc, agree = history.history["val_int8_accuracy"], history.history["val_int8_agreement"]
    assert all(0.0 <= v <= 1.0 for v in acc + agree)
    # int8 stays close to float on this tiny model.
    assert min(agree) >= 0.8
    assert abs(acc[-1] - history.history["val_accuracy"][-1]) <= 0.2
    # int8 loss is a real loss value near the float one.
    assert abs(history.history["val_int8_loss"][-1] - history.history["val_loss"][-1]) < 0.5
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["val_int8_accuracy"]) == pytest.approx(acc[1])
    assert [h["epoch"] for h in cb.int8_history] == [1, 2]
    # save_best_only with the default monitor: one file per strict improvement.
    expected, best = [], -np.inf
    for epoch, value in enumerate(acc, start=1):
        if value > best:
            best = value
            expected.append(str(tmp_path / f"best-{epoch:02d}-{value:.3f}.tflite"))
    assert cb.saved == expected
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == sorted(
        os.path.basename(p) for p in expected)


def test_best_only_exports_on_improvement_and_file_runs(tmp_path):
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:32], every_n_epochs=1,
                                  filepath=str(tmp_path / "m-{epoch:02d}.tflite"),
                                  monitor="val_score", mode="max", save_best_only=True,
                                  method="minmax", verbose=0)
    model.fit(x, y, epochs=3, batch_size=48, verbose=0,
              callbacks=[_Inject("val_score", [0.5, 0.4, 0.6]), cb])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-01.tflite", "m-03.tflite"]
    assert cb.best == 0.6
    assert not list(tmp_path.glob(".tfq8-*"))  # no temporary files left behind
    blob = (tmp_path / "m-03.tflite").read_bytes()
    assert tfq8.inspect(blob).full_integer
    interpreter = make_interpreter(blob)
    interpreter.allocate_tensors()
    d = interpreter.get_input_details()[0]
    assert d["dtype"] == np.int8
    interpreter.set_tensor(d["index"], np.zeros(d["shape"], np.int8))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert out.dtype == np.int8 and out.shape[-1] == 5


def test_initial_value_threshold_keeps_a_better_file_when_training_resumes(tmp_path):
    """A run resumed in a new process has a new model and callback: without a threshold its
    first epoch overwrites the better file of the earlier run, as in Keras' ModelCheckpoint."""
    x, y = _mlp_data()
    path = tmp_path / "best.tflite"

    def run(values, seed, **kwargs):  # another seed: other weights, another file
        cb = tfq8.CalibrationCallback(x[:32], every_n_epochs=1, filepath=str(path),
                                      monitor="val_score", mode="max", save_best_only=True,
                                      method="minmax", verbose=0, **kwargs)
        _compiled_mlp(seed=seed).fit(x, y, epochs=len(values), batch_size=48, verbose=0,
                                     callbacks=[_Inject("val_score", values), cb])
        return cb

    first = run([0.5, 0.9], seed=0)
    assert first.best == 0.9 and first.saved == [str(path), str(path)]
    best_file = path.read_bytes()
    resumed = run([0.7, 0.8], seed=1, initial_value_threshold=0.9)  # a new model, as after a restart
    assert resumed.saved == [] and resumed.best == 0.9
    assert path.read_bytes() == best_file
    improved = run([0.7, 0.95], seed=2, initial_value_threshold=0.9)
    assert improved.saved == [str(path)] and improved.best == 0.95
    assert path.read_bytes() != best_file
    assert run([0.7], seed=3).saved == [str(path)]  # without a threshold: from -inf


def test_stale_weights_are_refused_and_missing_statistics_explained():
    x, y = _mlp_data()
    model = _compiled_mlp()
    with pytest.raises(ValueError, match="CalibrationCallback"):
        tfq8.convert(model)  # no statistics at all
    cb = tfq8.CalibrationCallback(x[:32], verbose=0)
    model.fit(x, y, epochs=1, batch_size=48, verbose=0, callbacks=[cb])
    tfq8.convert(model)  # fresh: fine
    model.fit(x, y, epochs=1, batch_size=48, verbose=0)  # trained further, no callback
    with pytest.raises(ValueError, match="stale"):
        tfq8.convert(model)
    # Explicit data still works.
    assert tfq8.inspect(tfq8.convert(model, x[:32])).full_integer


def test_one_instance_serves_two_fit_calls(tmp_path):
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:32], validation_data=(x[48:], y[48:]),
                                  filepath=str(tmp_path / "m.tflite"), save_best_only=True,
                                  monitor="val_int8_loss", method="minmax", verbose=0)
    model.fit(x, y, epochs=2, batch_size=48, verbose=0, callbacks=[cb])
    first = cb.calibration
    assert [h["epoch"] for h in cb.int8_history] == [2]
    h2 = model.fit(x, y, epochs=1, batch_size=48, verbose=0, callbacks=[cb])
    # State was reset: only the second run's evaluation, a new best, new statistics.
    assert [h["epoch"] for h in cb.int8_history] == [1]
    assert cb.best == pytest.approx(h2.history["val_int8_loss"][0])
    assert cb.saved == [str(tmp_path / "m.tflite")]
    assert cb.calibration is not first
    assert getattr(model, CALIBRATION_ATTR) is cb.calibration
    assert tfq8.inspect(tfq8.convert(model)).full_integer
    assert all(len(v) == 1 for v in cb.diagnostics.values())


def test_tf_keras_variant():
    tf_keras = pytest.importorskip("tf_keras")
    model = factories.tf_keras_cnn(input_shape=(8, 8, 3), classes=4)
    model.compile(tf_keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = factories.images(48, shape=(8, 8, 3))
    y = np.arange(48) % 4
    cb = tfq8.CalibrationCallback.for_model(model, x[:24], validation_data=(x[24:], y[24:]),
                                            every_n_epochs=1, verbose=0)
    assert isinstance(cb, tf_keras.callbacks.Callback)
    assert isinstance(cb, cbmod.TFKerasCalibrationCallback)
    assert not isinstance(tfq8.CalibrationCallback.for_model(factories.mlp(), x), tf_keras.callbacks.Callback)
    with pytest.raises(TypeError, match=r"tf_keras .*CalibrationCallback.for_model\(model"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tfq8.CalibrationCallback(x[:24])])
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert len(history.history["val_int8_accuracy"]) == 2
    assert repr(cb) == ("TFKerasCalibrationCallback(calibrates every 1 epoch(s), method='auto', "
                        "2 int8 evaluation(s))")
    assert len(history.history["val_int8_loss"]) == 2
    assert tfq8.inspect(tfq8.convert(model)).full_integer
    # Keras numbers layer names per session ("re_lu", then "re_lu_1", ...): ask the model.
    relu = next(layer.name for layer in model.layers if isinstance(layer, tf_keras.layers.ReLU))
    assert any(d[-1].layer == relu for d in cb.diagnostics.values())


def test_multi_input_tf_data_eager():
    tf = pytest.importorskip("tensorflow")
    model = factories.two_in_two_out()
    model.compile("adam", loss={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                "reg": "mse"},
                  metrics={"cls": ["accuracy"], "reg": ["mae"]}, run_eagerly=True)
    x = factories.two_in_data(48)
    labels = {"cls": (x["a"][:, 0] > 0).astype(np.int64), "reg": x["a"][:, :1]}
    train = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x, labels)).take(24).batch(8)
    cb = tfq8.CalibrationCallback(train.take(2), validation_data=val, verbose=0)
    history = model.fit(train, epochs=2, verbose=0, callbacks=[cb])
    for key in ("val_int8_accuracy", "val_int8_cls_accuracy", "val_int8_cls_agreement",
                "val_int8_agreement", "val_int8_cls_loss", "val_int8_reg_loss", "val_int8_loss",
                "val_int8_reg_mae"):
        assert len(history.history[key]) == 1, key  # default: after the last epoch only
    assert history.history["val_int8_agreement"][0] >= 0.8
    assert cb.calibration.num_samples == 32
    assert tfq8.inspect(tfq8.convert(model)).full_integer


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s]


def _endless(x, y, batch=16):
    while True:
        for i in range(0, len(x), batch):
            yield x[i:i + batch], y[i:i + batch]


def test_endless_validation_stream_is_bounded_or_refused_before_training(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    monkeypatch.setattr(tfq8.data, "UNSIZED_MAX_BYTES", 64 * 88)  # 64 samples: x 80 B, y 8 B
    x, y = _mlp_data()
    model = _compiled_mlp()
    started = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    cb = tfq8.CalibrationCallback(x[:32], validation_data=_endless(x, y), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data is a generator with no known end and "
                                         r"has yielded 80 samples .* in 5 items .*Expected a finite stream, "
                                         r"or validation_steps=.*Received: validation_steps=None"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb, probe])
    assert started == []
    # validation_steps reads that many batches, as model.fit's does.
    cb = tfq8.CalibrationCallback(x[:32], validation_data=_endless(x, y), validation_steps=3,
                                  verbose=0)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert len(cb._validation_set().rep) == 48 and len(history.history["val_int8_accuracy"]) == 1
    specs = load_model(model).specs
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    assert len(int8_metrics.ValidationSet.build(endless, model, specs, steps=2).rep) == 32
    with pytest.raises(ValueError, match=r"infinite tf.data.Dataset: pass validation_steps"):
        int8_metrics.ValidationSet.build(endless, model, specs)
    with pytest.raises(ValueError, match=r"slice the arrays instead. Received: validation_steps=2 "
                                         r"with validation_data of type tuple"):
        tfq8.CalibrationCallback(x, validation_data=(x, y), validation_steps=2)


def test_bad_calibration_data_is_named_as_the_callbacks_argument():
    tf = pytest.importorskip("tensorflow")
    x, y = _mlp_data()
    model = _compiled_mlp()
    endless = tf.data.Dataset.from_tensor_slices(x).batch(16).repeat()
    cb = tfq8.CalibrationCallback(endless, verbose=0)
    with pytest.raises(ValueError, match=r"^calibration_data is an infinite tf.data.Dataset: pass "
                                         r"num_samples"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    cb = tfq8.CalibrationCallback(x[:, :7], verbose=0)
    with pytest.raises(ValueError, match=r"^calibration_data: Sample 0: expected input"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    cb = tfq8.CalibrationCallback(endless, num_samples=20, verbose=0)  # as the message says
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.calibration.num_samples == 20


def test_validation_set_from_pydataset_and_labels_check():
    x, y = _mlp_data(40)
    model = factories.mlp()
    specs = load_model(model).specs
    val = int8_metrics.ValidationSet.build(_Batches(x, y, 16), model, specs)
    assert len(val.rep) == 40 and np.array_equal(val.y[int8_metrics.output_names(model)[0]], y)
    assert val.weights is None
    with pytest.raises(ValueError, match="Received: labels of shape"):
        int8_metrics.ValidationSet.build((x, y[:10]), model, specs)


def test_hostile_tensor_warns_once_naming_the_layer(caplog):
    x, y = _mlp_data()
    calib = x[:48].copy()
    calib[0, :] = 60.0  # one sample (2% of the values) far outside the bulk
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(calib, every_n_epochs=1, outlier_percentile=95.0, verbose=0)
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        model.fit(x, y, epochs=2, batch_size=48, verbose=0, callbacks=[cb])
    assert cb.hostile, "an outlier-dominated activation should be reported"
    name = next(iter(cb.hostile))
    assert len(cb.diagnostics[name]) == 2
    record = cb.diagnostics[name][-1]
    assert record.hostile and record.outlier_ratio > cb.outlier_ratio
    assert record.layer in {layer.name for layer in model.layers}
    warnings = [r.getMessage() for r in caplog.records if "hostile to int8" in r.getMessage()]
    assert len(warnings) == len(cb.hostile)  # once per tensor, not once per epoch
    assert any(f"layer {record.layer!r}" in w and "ReLU6" in w for w in warnings)
    # Inputs are data, never reported; well-behaved tensors are not reported.
    assert all(d[-1].producer != "INPUT" for n, d in cb.diagnostics.items() if n in cb.hostile)


def test_a_dead_relu_is_not_called_hostile(caplog):
    x, y = _mlp_data()
    keras.utils.set_random_seed(0)
    inp = keras.Input((20,))
    dead = keras.layers.Dense(8, activation="relu", bias_initializer=keras.initializers.Constant(-100.0))
    model = keras.Model(inp, keras.layers.Dense(5)(dead(inp)))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = tfq8.CalibrationCallback(x[:48], every_n_epochs=1, verbose=0)
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    zeros = [d[-1] for d in cb.diagnostics.values() if d[-1].percentile_abs == 0.0]
    assert zeros and not any(d.hostile for d in zeros) and all(d.outlier_ratio == 1.0 for d in zeros)
    assert not any("hostile" in r.getMessage() for r in caplog.records)


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_every_n_epochs_early_stop_and_verbose(caplog):
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:32], every_n_epochs=2, verbose=1)
    with caplog.at_level(logging.INFO, logger="tfq8"):
        model.fit(x, y, epochs=5, batch_size=48, verbose=0, callbacks=[cb, _StopAt(2)])
    # Epoch 2 (every_n_epochs), then at train end for the weights of epoch 3.
    assert [d.epoch for d in next(iter(cb.diagnostics.values()))] == [2, 3]
    assert tfq8.inspect(tfq8.convert(model)).full_integer
    ours = [r.getMessage() for r in caplog.records if r.name == "tfq8.callbacks"]
    assert any(m.startswith("Epoch 2: calibrated") for m in ours)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tfq8"):
        model.fit(x, y, epochs=1, batch_size=48, verbose=0,
                  callbacks=[tfq8.CalibrationCallback(x[:32], verbose=0)])
    assert not [r for r in caplog.records if r.name == "tfq8.callbacks"]


def test_missing_monitor_warns_once_listing_keys(tmp_path, caplog):
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:32], every_n_epochs=1, filepath=str(tmp_path / "m.tflite"),
                                  monitor="val_missing", save_best_only=True, method="minmax",
                                  verbose=0)
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        model.fit(x, y, epochs=2, batch_size=48, verbose=0, callbacks=[cb])
    msgs = [r.getMessage() for r in caplog.records if "val_missing" in r.getMessage()]
    assert len(msgs) == 1 and "Available keys" in msgs[0] and "loss" in msgs[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs", [
    dict(calibration_data=None),
    dict(every_n_epochs=-1),
    dict(every_n_epochs=0),
    dict(every_n_epochs=1.5),
    dict(filepath="model.h5"),
    dict(filepath="m-{}.tflite"),
    dict(monitor="val_int8_accurcy!", validation_data=(np.zeros((2, 20)), np.zeros(2))),
    dict(monitor="val_int8_accuracy", filepath="m.tflite", save_best_only=True),
    dict(monitor=""),
    dict(mode="maximum"),
    dict(save_best_only=True),
    dict(save_best_only="yes", filepath="m.tflite"),
    dict(verbose=-1),
    dict(method="median"),
    dict(num_samples=0),
    dict(convert_options={"method": "kl"}),
    dict(convert_options={"method_options": {"percentile": 99.0}}),
    dict(outlier_ratio=0.5),
    dict(outlier_percentile=100),
    dict(range_growth=1),
    dict(batch_size=0),
    dict(max_bins=0),
    dict(validation_steps=2),
    dict(validation_steps=0, validation_data=iter([])),
    dict(convert_options={"input_type": "int4"}),
    dict(convert_options={"allow_float": "no"}),
    dict(initial_value_threshold=0.9),  # without save_best_only it would be ignored
    dict(initial_value_threshold="0.9", save_best_only=True, filepath="m.tflite"),
    dict(initial_value_threshold=float("nan"), save_best_only=True, filepath="m.tflite"),
])
def test_bad_arguments_raise(kwargs):
    kwargs = dict(kwargs)
    data = kwargs.pop("calibration_data", np.zeros((4, 20), np.float32))
    with pytest.raises(ValueError, match="Received:"):
        tfq8.CalibrationCallback(data, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(filepath=3), r"filepath must be a string or path .*Received: filepath=3"),
    (dict(validation_data=42), r"validation_data must be .*Received: validation_data of type int"),
    (dict(validation_data="val.npz"), r"not a file name: load the file first. Received: "
                                      r"validation_data='val.npz'"),
    (dict(calibration_data="calib.npy"), r"calibration_data must be samples .*not a file name.*"
                                         r"Received: calibration_data='calib.npy'"),
    (dict(calibration_data=5), r"calibration_data must be numpy arrays.*Received: int"),
    (dict(convert_options=[("allow_float", True)]), r"convert_options must be a dict.*"
                                                    r"Received: convert_options of type list"),
])
def test_wrong_kinds_raise_type_error_in_the_constructor(kwargs, match):
    """A file name as validation_data failed in fit as 'must be numeric ... dtype <U1'; a
    file name or number as calibration_data in fit, as 'data must ...'; a list as
    convert_options as 'cannot convert dictionary update sequence element #0'."""
    kwargs = dict(kwargs)
    data = kwargs.pop("calibration_data", np.zeros((4, 20), np.float32))
    with pytest.raises(TypeError, match=match):
        tfq8.CalibrationCallback(data, **kwargs)
    with pytest.raises(TypeError, match=r"for_model takes the Keras 3 or tf_keras model .*"
                                        r"Received: model of type ndarray"):
        tfq8.CalibrationCallback.for_model(np.zeros((4, 20)), np.zeros((4, 20)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(verbose="1"), r"^verbose must be 0, 1 or 2. Received: verbose='1'"),
    (dict(monitor=3), r"^monitor must be a metric name. Received: monitor=3"),
    (dict(mode=1), r"^mode must be 'auto', 'min' or 'max'. Received: mode=1"),
    (dict(method=3), r"^method must be one of auto, .*Received: method=3"),
    (dict(outlier_ratio="8"), r"^outlier_ratio must be a number > 1. Received: outlier_ratio='8'"),
    (dict(range_growth="4"), r"^range_growth must be a number > 1. Received: range_growth='4'"),
    (dict(outlier_percentile="99"), r"^outlier_percentile must be in \(50, 100\). "
                                    r"Received: outlier_percentile='99'"),
    (dict(convert_options={"allow_float": "no"}),
     r"^convert_options: allow_float must be True or False. Received: allow_float='no'"),
])
def test_an_option_of_the_wrong_type_is_an_argument_type_error(kwargs, match):
    """These were plain ValueErrors, unlike every_n_epochs='1' or save_best_only='yes' (and
    convert_options={'allow_float': 'no'} lost the ArgumentTypeError tfq8.convert raises)."""
    with pytest.raises(ArgumentTypeError, match=match):
        tfq8.CalibrationCallback(np.zeros((4, 20), np.float32), **kwargs)


def test_numpy_numbers_and_checked_booleans_in_the_constructor():
    """range_growth=np.float32(2.0) was refused as not a number; save_best_only='yes' was
    reported as a monitor problem."""
    cb = tfq8.CalibrationCallback(np.zeros((4, 20), np.float32), range_growth=np.float32(2.0),
                                  outlier_ratio=np.int64(4), outlier_percentile=np.float64(99.0))
    assert (cb.range_growth, cb.outlier_ratio, cb.outlier_percentile) == (2.0, 4.0, 99.0)
    with pytest.raises(ValueError, match=r"^save_best_only must be True or False"):
        tfq8.CalibrationCallback(np.zeros((4, 20), np.float32), save_best_only="yes")


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="percentile", convert_options={"method_options": {"percentile": 200}}),
     r"convert_options: .*percentile must be in \(50, 100\]. Received: percentile=200"),
    (dict(convert_options={"ranges": [1, 2]}), r"convert_options: ranges must be a dict"),
    (dict(convert_options={"per_channel": "no"}), r"per_channel must be True or False"),
    (dict(filepath="{loss:02d}.tflite"),
     r"filepath must format with epoch .*Received: filepath='\{loss:02d\}.tflite' "
     r"\(Unknown format code 'd'"),
    (dict(filepath="m-{epoch.x}.tflite"), r"Received: filepath='m-\{epoch.x\}.tflite' \(.*'x'"),
    (dict(filepath="m-{val_int8_accuracy:.3f}.tflite", validation_data=None),
     r"filepath names int8 metrics.*validation_data=None"),
    (dict(filepath=__file__ + "/m-{epoch}.tflite"), r"filepath lies under .*, which is a file"),
])
def test_convert_options_and_filepath_refused_by_the_constructor(kwargs, match):
    x, y = _mlp_data(8)
    kwargs = {"validation_data": (x, y), **kwargs}
    with pytest.raises(ValueError, match=match):
        tfq8.CalibrationCallback(x, verbose=0, **kwargs)


@pytest.mark.parametrize("filepath, inject, match", [
    ("m-{val_missing:.3f}.tflite", None,
     r"filepath names 'val_missing' which is not in the epoch logs. Available keys: .*'loss'"),
    ("m-{tag:.3f}.tflite", ("tag", ["best"]),
     r"filepath could not be formatted with epoch=1 .*Unknown format code 'f'.*Received: filepath="),
])
def test_filepath_that_fails_only_with_the_real_logs_names_filepath(tmp_path, filepath, inject, match):
    x, y = _mlp_data(48)
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:16], filepath=str(tmp_path / filepath), method="minmax",
                                  verbose=0)  # only model.fit's logs know these keys
    callbacks = [cb] if inject is None else [_Inject(*inject), cb]
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, batch_size=48, verbose=0, callbacks=callbacks)
    assert not list(tmp_path.iterdir())


def test_out_of_range_validation_labels_fail_before_training():
    x, y = _mlp_data()
    model = _compiled_mlp()  # 5 classes
    started = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    cb = tfq8.CalibrationCallback(x[:16], validation_data=(x[:16], y[:16] + 10), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data labels for output '\w+' must be class "
                                         r"indices in 0\.\.4 .*Received: labels 10\.\.14"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[cb, probe])
    assert started == []


def test_validation_labels_checked_against_a_subclassed_models_outputs():
    model = factories.subclassed()  # no model.outputs: 3 classes read from a prediction
    specs = load_model(model).specs
    x = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    labels = np.arange(12) % 3
    with pytest.raises(ValueError, match=r"in 0\.\.2 .*Received: labels -1\.\.1"):
        int8_metrics.ValidationSet.build((x, labels - 1), model, specs)
    # In range, one-hot rows and non-integral targets (a custom loss's) are accepted.
    for y in (labels, np.eye(3)[labels], labels + 0.5):
        val = int8_metrics.ValidationSet.build((x, y), model, specs)
        assert np.array_equal(next(iter(val.y.values())), y)


def test_abs_quantile_and_layer_names():
    h = Histogram().update(np.concatenate([np.linspace(-1, 1, 9999), [0.0] * 500, [50.0]]))
    p = diagnostics._abs_quantile(h, 0.999)
    assert 0.95 < p <= 1.01
    assert diagnostics._abs_quantile(h, 1.0) == pytest.approx(50.0, rel=1e-3)
    layers = {"dense", "dense_1", "re_lu", "conv2d_1"}
    # Keras 3 export: every scope carries a _1 suffix (model 'sequential').
    assert diagnostics._layer_of("sequential_1/dense_1/MatMul;sequential_1/dense_1/BiasAdd",
                                 layers, "sequential") == "dense"
    assert diagnostics._layer_of("sequential_1/conv2d_1_1/Relu", layers, "sequential") == "conv2d_1"
    # tf_keras: scopes are the layer names.
    assert diagnostics._layer_of("sequential/re_lu/Relu;sequential/conv2d/Conv2D", layers,
                                 "sequential") == "re_lu"
    assert diagnostics._layer_of("StatefulPartitionedCall:0", layers, "sequential") is None


def _two_output_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((20,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    return keras.Model(inp, [keras.layers.Dense(5, name="digit")(h),
                             keras.layers.Dense(1, activation="sigmoid", name="even")(h)])


def _int8_and_keras_logs(model, x, y, w=None):
    """int8 metrics with the float outputs passed as int8, next to model.evaluate's logs."""
    val = int8_metrics.ValidationSet.build((x, y) if w is None else (x, y, w), model,
                                           load_model(model).specs)
    names = int8_metrics.output_names(model)
    floats = int8_metrics._predict_float(model, val.rep, names, 64)
    got = int8_metrics._int8_metrics(model, names, floats, floats, val.y, val.weights)
    return got, model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)


def test_int8_metrics_reduce_as_keras_does():
    """With int8 outputs equal to float, the int8 loss and accuracy are Keras' own figures:
    sample weights weigh the loss as Keras does (sum over the count), not plain accuracy;
    a list of loss names is per output, scaled by loss_weights."""
    x, y = _mlp_data(n=64)
    w = np.random.default_rng(1).uniform(0.0, 2.0, 64)
    got, keras_logs = _int8_and_keras_logs(_compiled_mlp(), x, y, w)
    assert got["val_int8_loss"] == pytest.approx(keras_logs["loss"], rel=1e-5)
    assert got["val_int8_accuracy"] == pytest.approx(keras_logs["accuracy"], abs=1e-6)

    model = _two_output_model()
    model.compile("adam", ["sparse_categorical_crossentropy", "binary_crossentropy"],
                  loss_weights=[1.0, 0.1])
    got, keras_logs = _int8_and_keras_logs(model, x, [y, (y % 2).astype(np.float32)])
    assert got["val_int8_loss"] == pytest.approx(keras_logs["loss"], rel=1e-4)
    assert got["val_int8_even_loss"] == pytest.approx(keras_logs["even_loss"], rel=1e-4)

    # Regularization losses count, and a one-unit logit's accuracy thresholds at 0.5 as Keras'.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(
        1, kernel_regularizer=keras.regularizers.L2(0.5))])
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    got, keras_logs = _int8_and_keras_logs(model, x, (x[:, 0] > 0).astype(np.float32), w)
    assert got["val_int8_loss"] == pytest.approx(keras_logs["loss"], rel=1e-5)
    assert got["val_int8_accuracy"] == pytest.approx(keras_logs["accuracy"], abs=1e-6)



def test_a_metric_both_weighted_and_not_gets_both_int8_keys_as_keras_names_them():
    """Keras logs a metric named in both `metrics` and `weighted_metrics` twice, the weighted
    one as weighted_<name> (<output>_weighted_<name>); the int8 keys follow (the weighted
    one was dropped: no val_int8_weighted_accuracy to monitor)."""
    x, y = _mlp_data(n=64)
    w = np.random.default_rng(1).uniform(0.0, 2.0, 64)
    both = ["accuracy", "sparse_categorical_crossentropy"]
    got, keras_logs = _int8_and_keras_logs(
        _compiled_mlp(metrics=both, weighted_metrics=both), x, y, w)
    assert {"weighted_accuracy", "weighted_sparse_categorical_crossentropy"} <= set(keras_logs)
    for key, value in keras_logs.items():
        assert got["val_int8_" + key] == pytest.approx(value, rel=1e-5), key
    assert got["val_int8_weighted_accuracy"] != pytest.approx(got["val_int8_accuracy"])

    model = _two_output_model()
    model.compile("adam", ["sparse_categorical_crossentropy", "binary_crossentropy"],
                  metrics=[["accuracy"], ["mae"]], weighted_metrics=[["accuracy"], ["mae"]])
    got, keras_logs = _int8_and_keras_logs(model, x, [y, (y % 2).astype(np.float32)], w)
    assert {"digit_weighted_accuracy", "even_weighted_mae"} <= set(keras_logs)
    for key in ("digit_accuracy", "digit_weighted_accuracy", "even_mae", "even_weighted_mae"):
        assert got["val_int8_" + key] == pytest.approx(keras_logs[key], rel=1e-5), key


def _top_k_by_index(scores, labels, k):
    """Top-k accuracy as `tf.math.top_k` reads the top k: lower index first on ties."""
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    return float(np.mean((order == labels[:, None]).any(axis=1)))


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
def test_int8_top_k_counts_a_tie_once_as_top_k_reads_it(framework):
    """Keras' top-k metrics count every class tied at the k-th score as a hit. int8 outputs
    tie often (a softmax dequantized from int8 holds a few levels per row), so the int8 value
    breaks ties toward the lower index, as `tf.math.top_k`; without ties it is Keras' own."""
    x, y = _mlp_data(n=64, classes=8)
    top2 = "SparseTopKCategoricalAccuracy"
    if framework == "keras":
        module = keras
        model = factories.mlp(classes=8)
        metrics = [keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"),
                   keras.metrics.sparse_top_k_categorical_accuracy]  # a function, k=5
    else:
        module = pytest.importorskip("tf_keras")
        module.utils.set_random_seed(0)
        model = module.Sequential([module.Input((20,)), module.layers.Dense(8)])
        metrics = [module.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"),
                   "sparse_top_k_categorical_accuracy"]  # tf_keras: its function, k=5
    model.compile("adam", module.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=metrics)
    got, keras_logs = _int8_and_keras_logs(model, x, y)
    assert got["val_int8_top2"] == pytest.approx(keras_logs["top2"], abs=1e-6)

    val = int8_metrics.ValidationSet.build((x, y), model, load_model(model).specs)
    names = int8_metrics.output_names(model)
    floats = int8_metrics._predict_float(model, val.rep, names, 64)
    levels = {n: np.round(v / 0.5).astype(np.float32) * 0.5 for n, v in floats.items()}
    got = int8_metrics._int8_metrics(model, names, floats, levels, val.y, val.weights)
    scores = levels[names[0]]
    for key, k in (("val_int8_top2", 2), ("val_int8_sparse_top_k_categorical_accuracy", 5)):
        metric = getattr(module.metrics, top2)(k=k)
        metric.update_state(y, scores)
        assert got[key] == pytest.approx(_top_k_by_index(scores, y, k), abs=1e-6)
        assert got[key] < float(metric.result())  # the ties Keras counts as hits

def mean_abs_logit(y_true, y_pred):
    """A custom metric function (Keras and tf_keras name it by its __name__)."""
    return keras.ops.mean(keras.ops.abs(y_pred), axis=-1)


class _ScaledMean(keras.metrics.Mean):
    """A custom Metric that from_config cannot rebuild (`scale` is not in its config)."""

    def __init__(self, scale, name="scaled_mean"):
        super().__init__(name=name)
        self.scale = scale

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_pred * self.scale)


def test_custom_metric_functions_get_int8_values_and_the_rest_a_warning(caplog):
    x, y = _mlp_data(n=64)
    got, keras_logs = _int8_and_keras_logs(
        _compiled_mlp(metrics=["accuracy", mean_abs_logit]), x, y)
    assert got["val_int8_mean_abs_logit"] == pytest.approx(keras_logs["mean_abs_logit"], rel=1e-5)
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((20,)), tf_keras.layers.Dense(5)])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=[mean_abs_logit])
    got, keras_logs = _int8_and_keras_logs(model, x, y)
    assert got["val_int8_mean_abs_logit"] == pytest.approx(keras_logs["mean_abs_logit"], rel=1e-5)
    # A metric that cannot be computed on the int8 outputs: a WARNING once per fit, naming it.
    model = _compiled_mlp(metrics=["accuracy", _ScaledMean(2.0)])
    cb = tfq8.CalibrationCallback(x[:32], validation_data=(x, y), every_n_epochs=1,
                                  method="minmax", verbose=0)
    with caplog.at_level(logging.WARNING, logger="tfq8"):
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "no int8 value" in r.getMessage()]
    assert len(warnings) == 1 and "metric 'scaled_mean'" in warnings[0] and "TypeError" in warnings[0]
    assert len(history.history["val_int8_accuracy"]) == 2


def test_a_metrics_list_pairs_with_outputs_as_each_framework_does():
    x, _ = _mlp_data(n=64)
    labels = [(x[:, 0] > 0).astype(np.float32), x[:, 1:2]]

    def model_of(k):
        k.utils.set_random_seed(0)
        inp = k.Input((20,))
        h = k.layers.Dense(16, activation="relu")(inp)
        model = k.Model(inp, [k.layers.Dense(1, activation="sigmoid", name="even")(h),
                              k.layers.Dense(1, name="reg")(h)])
        model.compile("adam", ["binary_crossentropy", "mse"], metrics=["accuracy", "mae"])
        return model

    # Keras 3 pairs the list with the outputs by position: even -> accuracy, reg -> mae.
    got, keras_logs = _int8_and_keras_logs(model_of(keras), x, labels)
    assert "even_mae" not in keras_logs and "val_int8_even_mae" not in got
    assert got["val_int8_reg_mae"] == pytest.approx(keras_logs["reg_mae"], rel=1e-5)
    # tf_keras applies every metric of a flat list to every output.
    got, keras_logs = _int8_and_keras_logs(model_of(pytest.importorskip("tf_keras")), x, labels)
    for name in ("even", "reg"):
        assert got[f"val_int8_{name}_mae"] == pytest.approx(keras_logs[f"{name}_mae"], rel=1e-5)


def test_best_is_kept_when_training_resumes_and_early_stops_reach_history(tmp_path):
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:64], validation_data=(x, y), every_n_epochs=1,
                                  filepath=str(tmp_path / "best.tflite"), save_best_only=True,
                                  monitor="val_int8_loss", mode="min", method="minmax", verbose=0)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    best = cb.best
    saved = list(cb.saved)
    model.set_weights([w * 0.0 for w in model.get_weights()])  # a far worse model
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.best == best and cb.saved == [] and saved     # the better file stays
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9,
                                         restore_best_weights=True)
    cb = tfq8.CalibrationCallback(x[:64], validation_data=(x, y), method="minmax", verbose=0,
                                  filepath=str(tmp_path / "final-{epoch}.tflite"))
    model = _compiled_mlp(seed=1)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[stop, cb])
    assert len(history.history["loss"]) == 2                  # stopped after epoch 2
    # Restored to epoch 1's weights, never calibrated: evaluated and exported as epoch 1,
    # not as the last epoch's (History's last row is epoch 2's).
    assert "val_int8_accuracy" not in history.history
    assert [h["epoch"] for h in cb.int8_history] == [1]
    assert cb.saved == [str(tmp_path / "final-1.tflite")]
    assert tfq8.convert(model, method="minmax")               # its statistics are current
    # Listed after the callback (to monitor int8 keys), EarlyStopping restores later: stale.
    stop = keras.callbacks.EarlyStopping(monitor="val_int8_loss", mode="min", patience=0,
                                         min_delta=1e9, restore_best_weights=True)
    cb = tfq8.CalibrationCallback(x[:64], validation_data=(x, y), method="minmax", verbose=0,
                                  every_n_epochs=1)
    model = _compiled_mlp(seed=2)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[cb, stop])
    with pytest.raises(ValueError, match=r"stale: .*EarlyStopping with restore_best_weights=True "
                                         r"listed after the callback"):
        tfq8.convert(model, method="minmax")
    assert tfq8.convert(model, x[:64], method="minmax")


def test_weights_restored_before_the_callback_are_not_exported_as_the_last_epoch(tmp_path, caplog):
    x, y = _mlp_data()
    model = _compiled_mlp()
    files = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            files.update({p.name: p.read_bytes() for p in tmp_path.iterdir()})

    stop = keras.callbacks.EarlyStopping(monitor="val_score", mode="max", patience=2,
                                         restore_best_weights=True)
    cb = tfq8.CalibrationCallback(x[:32], validation_data=(x, y), every_n_epochs=1,
                                  filepath=str(tmp_path / "e{epoch:02d}.tflite"),
                                  method="minmax", verbose=1)
    with caplog.at_level(logging.INFO, logger="tfq8.callbacks"):
        history = model.fit(x, y, epochs=6, batch_size=48, verbose=0, callbacks=[
            _Inject("val_score", [0.5, 0.6, 0.4, 0.3, 0.2, 0.1]), stop, cb, Snapshot()])
    assert len(history.history["loss"]) == 4                  # best epoch 2, stopped after 4
    names = ["e01.tflite", "e02.tflite", "e03.tflite", "e04.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert all((tmp_path / n).read_bytes() == files[n] for n in names)  # nothing overwritten
    assert cb.saved == [str(tmp_path / n) for n in names]
    assert len(history.history["val_int8_accuracy"]) == 4
    assert [h["epoch"] for h in cb.int8_history] == [1, 2, 3, 4]
    assert history.history["val_int8_accuracy"] == [h["val_int8_accuracy"] for h in cb.int8_history]
    # The attached statistics are those of the restored (epoch 2) weights.
    fresh = tfq8.calibrate(model, x[:32])
    assert tfq8.convert(model, method="minmax") == tfq8.convert(calibration=fresh, method="minmax")
    assert tfq8.convert(model, method="minmax") == (tmp_path / "e02.tflite").read_bytes()
    assert any("restored to those of epoch 2 after epoch 4" in r.getMessage()
               and "e02.tflite" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("validation_data, match", [
    (lambda x, y: (x, y, None, None), r"must be x, \(x,\), \(x, y\) or \(x, y, sample_weight\)"),
    (lambda x, y: (x, y, np.ones(5)), r"sample_weight must have one entry per sample \(96\)"),
    (lambda x, y: (x, np.eye(7)[y]), r"one-hot rows of 5 .* Received: labels of shape \(96, 7\)"),
])
def test_malformed_validation_data_fails_before_training(validation_data, match):
    x, y = _mlp_data()
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:64], validation_data=validation_data(x, y), verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])


def test_int8_evaluation_batches_fit_a_memory_budget(monkeypatch):
    x, y = _mlp_data(n=64)
    model = _compiled_mlp()
    val = int8_metrics.ValidationSet.build((x, y), model, load_model(model).specs)
    blob = tfq8.convert(model, x, method="minmax")
    from tfq8.harness import interpreter

    whole = int8_metrics.evaluate_int8(blob, model, val)          # 64 samples: one batch
    assert int8_metrics.run_int8(blob, val.rep, int8_metrics.output_names(model), None)[1] >= 64
    seen = []
    run_int8 = int8_metrics.run_int8
    monkeypatch.setattr(int8_metrics, "run_int8",
                        lambda *a, **k: seen.append(run_int8(*a, **k)[1]) or run_int8(*a, **k))
    monkeypatch.setattr(interpreter, "_BATCH_BYTES", 1)           # one sample per run
    assert int8_metrics.evaluate_int8(blob, model, val) == pytest.approx(whole, rel=1e-6)
    assert seen == [1]


def test_the_trial_conversion_runs_once_per_model_without_warnings(caplog):
    model = _compiled_mlp(seed=3)
    x, y = _mlp_data(64, seed=3)
    cb = tfq8.CalibrationCallback(x, validation_data=(x[:16], y[:16]), verbose=1,
                                  method="percentile",
                                  convert_options={"method_options": {"percentile": 99.9}})
    with caplog.at_level("INFO", logger="tfq8"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])  # the same model: no second trial
    calibrations = [r.getMessage() for r in caplog.records if "Calibrating on" in r.getMessage()]
    assert calibrations == ["Calibrating on 16 samples."] + ["Calibrating on 64 samples."] * 2
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_validation_pydataset_without_a_length_is_named():
    class NoLength(keras.utils.PyDataset):
        def __getitem__(self, i):
            return _mlp_data(8)

    model = _compiled_mlp()
    with pytest.raises(TypeError, match=r"validation_data is a keras.utils.PyDataset with neither "
                                        r"num_batches nor __len__. Received: NoLength"):
        int8_metrics.ValidationSet.build(NoLength(), model, load_model(model).specs)


def test_verbose_0_silences_tfq8s_info_lines_but_not_warnings(caplog):
    model = _compiled_mlp(seed=4)
    x, y = _mlp_data(64, seed=4)
    cb = tfq8.CalibrationCallback(x, validation_data=(x[:16], y[:16]), every_n_epochs=1,
                                  verbose=0)
    with caplog.at_level("INFO", logger="tfq8"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
        assert len(cb.int8_history) == 2  # it did calibrate, convert and evaluate
        assert not [r for r in caplog.records if r.name.startswith("tfq8")]
        few = tfq8.CalibrationCallback(x[:5], validation_data=(x[:16], y[:16]), verbose=0)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[few])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned and all("Calibrating on 5 sample(s)" in w for w in warned)
    assert not [r for r in caplog.records if r.levelname == "INFO" and r.name.startswith("tfq8")]
    assert logging.getLogger("tfq8").filters == []  # removed again


def test_mixed_precision_fit_calibrates_the_float32_copy_of_each_epoch(tmp_path):
    x, y = _mlp_data()
    keras.config.set_dtype_policy("mixed_float16")  # as a GPU training script sets it
    try:
        model = _compiled_mlp()
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.layers[0].compute_dtype == "float16"
    path = str(tmp_path / "m.tflite")
    cb = tfq8.CalibrationCallback(x[:48], filepath=path, validation_data=(x[48:], y[48:]),
                                  every_n_epochs=1, verbose=0)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    assert len(history.history["val_int8_agreement"]) == 2
    assert min(history.history["val_int8_agreement"]) > 0.9
    with open(path, "rb") as f:
        exported = f.read()
    assert tfq8.inspect(exported).full_integer
    # The statistics attached to the model are of its final weights: convert() takes them.
    assert tfq8.convert(model, method="minmax") == tfq8.convert(
        calibration=cb.calibration, method="minmax") == tfq8.convert(
        model, x[:48], method="minmax")


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
@pytest.mark.parametrize("hook", ["on_train_begin", "on_epoch_end"])
def test_a_hook_called_before_the_callback_has_a_model_is_a_runtime_error(framework, hook):
    # It failed inside the hook: a TypeError saying model=None was of the wrong kind, or an
    # AttributeError on None.weights.
    x, _ = _mlp_data(n=8)
    cb = (tfq8.CalibrationCallback(x) if framework == "keras"
          else cbmod.CalibrationCallback.for_model(factories.tf_keras_cnn(), x))
    args = (0, {}) if hook == "on_epoch_end" else ()
    with pytest.raises(RuntimeError, match=rf"^CalibrationCallback\.{hook} was called before the "
                                           r"callback had a model: pass the callback to "
                                           r"model\.fit.*Received: model=None$"):
        getattr(cb, hook)(*args)


def test_endless_empty_validation_batches_are_refused_before_training():
    # Read forever without validation_steps: no byte budget is ever used up.
    x, y = _mlp_data()

    def endless():
        while True:
            yield x[:0], y[:0]

    cb = tfq8.CalibrationCallback(x[:64], validation_data=endless(), verbose=0)
    with pytest.raises(ValueError, match=r"^validation_data yielded 1000 empty batches in a row "
                                         r"\(0 samples each\): expected batches holding samples\. "
                                         r"Received: batches of shapes \[\(0, 20\)\]$"):
        _compiled_mlp().fit(x, y, epochs=1, verbose=0, callbacks=[cb])


def test_verbose_beyond_2_is_refused_as_its_message_says():
    with pytest.raises(ValueError, match=r"^verbose must be 0, 1 or 2\. Received: verbose=3$"):
        tfq8.CalibrationCallback(np.zeros((4, 20), np.float32), verbose=3)
    assert tfq8.CalibrationCallback(np.zeros((4, 20), np.float32), verbose=np.int64(2)).verbose == 2


@pytest.mark.parametrize("kwargs, arg", [
    (dict(filepath="{dir}/m-{{val_int8_accuracy:.2f}}.tflite"), "filepath"),
    (dict(filepath="{dir}/m.tflite", save_best_only=True, monitor="val_int8_loss"), "monitor"),
])
def test_int8_metrics_that_need_labels_are_refused_before_training_without_them(tmp_path,
                                                                                 kwargs, arg):
    # Validation inputs alone give only val_int8_agreement: the export failed (filepath) or
    # was skipped with a warning (monitor) only after training.
    x, y = _mlp_data()
    kwargs = {k: v.format(dir=tmp_path) if k == "filepath" else v for k, v in kwargs.items()}
    model = _compiled_mlp()
    cb = tfq8.CalibrationCallback(x[:64], validation_data=x[64:], verbose=0, **kwargs)
    with pytest.raises(ValueError, match=rf"^{arg} names 'val_int8_(accuracy|loss)', which needs "
                                         r"labels: validation_data has none.*Received: "):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert cb.calibration is None  # nothing trained past on_train_begin's checks
    ok = tfq8.CalibrationCallback(x[:64], validation_data=x[64:], verbose=0,
                                  filepath=str(tmp_path / "a-{val_int8_agreement:.2f}.tflite"))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ok])
    assert len(ok.saved) == 1


def test_diverged_weights_are_skipped_with_a_warning_not_a_crash(tmp_path, caplog):
    x, y = _mlp_data()
    model = _compiled_mlp()

    class Diverge(keras.callbacks.Callback):   # the weights go NaN during epoch 2
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1:
                kernel = self.model.layers[0].kernel
                kernel.assign(np.full(kernel.shape, np.nan, np.float32))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    cb = tfq8.CalibrationCallback(x[:32], validation_data=(x[48:], y[48:]), every_n_epochs=1,
                                  filepath=str(tmp_path / "e{epoch}.tflite"), method="minmax",
                                  verbose=0)
    with caplog.at_level(logging.WARNING, logger="tfq8.callbacks"):
        history = model.fit(x, y, epochs=4, batch_size=48, verbose=0, callbacks=[
            Diverge(), keras.callbacks.TerminateOnNaN(), cb])
    assert len(history.history["loss"]) == 2                  # TerminateOnNaN stopped it
    assert [h["epoch"] for h in cb.int8_history] == [1]
    assert len(history.history["val_int8_accuracy"]) == 1
    assert cb.saved == [str(tmp_path / "e1.tflite")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.tflite"]
    warned = [r.getMessage() for r in caplog.records if "NaN or Inf" in r.getMessage()]
    assert len(warned) == 1                                   # once per fit
    assert "after epoch 2" in warned[0] and repr(model.layers[0].kernel.path) in warned[0]
    assert "stale" in warned[0]
    with pytest.raises(ValueError, match="stale"):            # epoch 1's statistics
        tfq8.convert(model, method="minmax")

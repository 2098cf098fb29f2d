"""The statistics pass in a worker process beside TFLite's calibrator."""

import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import factories
import tfq8
from tfq8 import _tflite
from tfq8.stats import collect as collect_mod
from tfq8.stats import worker as worker_mod


@pytest.fixture(autouse=True)
def worker_for_tiny_models(monkeypatch):
    # The test models are far below the size where the worker pays off.
    monkeypatch.setattr(collect_mod, "WORKER_MIN_TENSOR_BYTES", 0)


@pytest.fixture(scope="module")
def cnn_and_data():
    return factories.cnn(), factories.images(40)


def _calibrate(model, x, monkeypatch, worker: bool):
    monkeypatch.setenv(worker_mod.ENV, "1" if worker else "0")
    return tfq8.calibrate(model, x, keep_samples=8)


def _assert_falls_back(model, x, monkeypatch, caplog, says: str):
    """calibrate() logs `says` at debug level and still gives the in-process statistics."""
    reference = _calibrate(model, x, monkeypatch, worker=False)
    monkeypatch.setenv(worker_mod.ENV, "1")
    with caplog.at_level(logging.DEBUG, logger="tfq8"):
        calib = tfq8.calibrate(model, x, keep_samples=8)
    assert says in caplog.text
    assert [t.histogram for t in calib.tensors] == [t.histogram for t in reference.tensors]


def _background(model, x):
    handle = tfq8.models.load_model(model)
    rep = tfq8.representative_dataset(x, specs=handle.specs)
    with collect_mod.BackgroundCollect(rep, track=[0, 5]) as bg:
        calibrated = _tflite.calibrate_only(handle.converter(), rep, on_float_model=bg.submit)
        return calibrated, rep, bg.result(calibrated)


def test_worker_and_in_process_statistics_are_identical(cnn_and_data, monkeypatch):
    model, x = cnn_and_data
    calibrated, rep, stats = _background(model, x)
    assert stats is not None, "the worker was not used"
    here = collect_mod.collect(calibrated, rep, track=[0, 5])
    assert [s.index for s in stats] == [s.index for s in here]
    for a, b in zip(stats, here):
        assert (a.name, a.producer) == (b.name, b.producer)
        assert a.histogram == b.histogram
        np.testing.assert_array_equal(a.peaks, b.peaks)
    # And so are the models built from them.
    with_worker = _calibrate(model, x, monkeypatch, worker=True)
    without = _calibrate(model, x, monkeypatch, worker=False)
    assert tfq8.convert(calibration=with_worker) == tfq8.convert(calibration=without)


def test_worker_that_cannot_start_falls_back(cnn_and_data, monkeypatch, caplog):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    _assert_falls_back(*cnn_and_data, monkeypatch, caplog, "could not start /nonexistent/python")


def test_worker_that_dies_falls_back(cnn_and_data, monkeypatch, caplog):
    submit = worker_mod.StatsWorker.submit

    def submit_then_die(self, *args, **kwargs):
        submit(self, *args, **kwargs)
        self._process.kill()

    monkeypatch.setattr(worker_mod.StatsWorker, "submit", submit_then_die)
    _assert_falls_back(*cnn_and_data, monkeypatch, caplog, "statistics worker: no result")


def test_a_stuck_worker_is_given_up_and_the_pass_runs_here(cnn_and_data, monkeypatch, caplog):
    submit = worker_mod.StatsWorker.submit

    def submit_then_stop(self, *args, **kwargs):  # a worker that never answers (SIGSTOP)
        submit(self, *args, **kwargs)
        os.kill(self._process.pid, signal.SIGSTOP)
        stopped.append(self._process)

    stopped = []
    monkeypatch.setattr(worker_mod.StatsWorker, "submit", submit_then_stop)
    monkeypatch.setattr(collect_mod, "WORKER_MIN_WAIT_S", 0.5)
    monkeypatch.setattr(collect_mod, "WORKER_WAIT_FACTOR", 0.0)
    _assert_falls_back(*cnn_and_data, monkeypatch, caplog, "no answer within 0.5 s")
    assert "collecting in this process instead" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert len(stopped) == 1 and stopped[0].poll() is not None  # the stuck process is gone


def test_worker_reports_a_tensor_that_is_not_finite(monkeypatch):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Lambda(keras.ops.log)(inp)))
    x = np.abs(np.random.default_rng(0).normal(size=(8, 4))).astype(np.float32) + 0.1
    x[5, 0] = -1.0
    for worker in (True, False):
        monkeypatch.setenv(worker_mod.ENV, "1" if worker else "0")
        with pytest.raises(ValueError, match=r"is not finite for samples 0\.\.7: values must be"):
            tfq8.calibrate(model, x)


def test_worker_process_never_imports_tensorflow():
    code = ("import sys, tfq8.stats.worker, tfq8.stats.sweep, tfq8.harness.litert; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_worker_exits_when_the_parent_sends_nothing():
    p = subprocess.Popen([sys.executable, "-m", "tfq8.stats.worker"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    header, _ = worker_mod._read(p.stdout)
    assert header == {"ready": True}
    p.stdin.close()
    assert p.wait(timeout=60) == 0


def test_messages_round_trip_without_pickle(tmp_path):
    path = tmp_path / "msg"
    arrays = {"a": np.arange(5, dtype=np.int64), "b": np.ones((2, 3), np.float32)}
    with open(path, "wb") as f:
        worker_mod._write(f, {"k": [1, "x"]}, arrays)
    with open(path, "rb") as f:
        header, back = worker_mod._read(f)
    assert header == {"k": [1, "x"]}
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    with open(path, "rb") as f:  # a message cut short
        f.read(3)
        with pytest.raises((EOFError, ValueError)):
            worker_mod._read(f)


@pytest.mark.parametrize("setting", ["env", "one core", "large inputs"])
def test_worker_is_not_started_where_it_would_not_help(cnn_and_data, monkeypatch, caplog, setting):
    model, x = cnn_and_data
    monkeypatch.setenv(worker_mod.ENV, "0" if setting == "env" else "1")
    if setting == "one core":
        monkeypatch.setattr(collect_mod.os, "cpu_count", lambda: 1)
    if setting == "large inputs":
        monkeypatch.setattr(collect_mod, "WORKER_MAX_INPUT_BYTES", x.nbytes - 1)
    started = []
    monkeypatch.setattr(worker_mod.StatsWorker, "start", classmethod(
        lambda cls: started.append(1)))
    with caplog.at_level(logging.DEBUG, logger="tfq8"):
        calib = tfq8.calibrate(model, x)
    assert not started
    assert {"env": "TFQ8_STATS_WORKER=0", "one core": "one core",
            "large inputs": "not copied to a worker"}[setting] in caplog.text
    assert calib.tensors[0].histogram.count > 0


def test_tiny_models_are_collected_in_process(cnn_and_data, monkeypatch, caplog):
    model, x = cnn_and_data
    monkeypatch.setenv(worker_mod.ENV, "1")
    monkeypatch.setattr(collect_mod, "WORKER_MIN_TENSOR_BYTES", 1 << 40)
    submitted = []
    monkeypatch.setattr(worker_mod.StatsWorker, "submit", lambda *a, **k: submitted.append(1))
    with caplog.at_level(logging.DEBUG, logger="tfq8"):
        calib = tfq8.calibrate(model, x)
    assert not submitted and "quicker here" in caplog.text
    assert calib.tensors[0].histogram.count > 0


def _dynamic_cnn():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))


@pytest.mark.parametrize("kind", ["two_in_two_out", "tf_keras", "subclassed", "dynamic_hw"])
def test_worker_matches_in_process_on_every_kind_of_model(kind, monkeypatch):
    model, x = {
        "two_in_two_out": lambda: (factories.two_in_two_out(), factories.two_in_data(24)),
        "tf_keras": lambda: (factories.tf_keras_cnn(), factories.images(24)),
        "subclassed": lambda: (factories.subclassed(),
                               np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32)),
        "dynamic_hw": lambda: (_dynamic_cnn(), factories.images(24, shape=(9, 7, 3))),
    }[kind]()
    handle = tfq8.models.load_model(model)
    rep = tfq8.representative_dataset(x, specs=handle.specs)
    with collect_mod.BackgroundCollect(rep, track=[1, 3]) as bg:
        calibrated = _tflite.calibrate_only(handle.converter(), rep, on_float_model=bg.submit)
        stats = bg.result(calibrated)
    assert stats is not None, "the worker was not used"
    here = collect_mod.collect(calibrated, rep, track=[1, 3])
    assert [(s.index, s.name, s.producer) for s in stats] == [
        (s.index, s.name, s.producer) for s in here]
    for a, b in zip(stats, here):
        assert a.histogram == b.histogram, a.name
        np.testing.assert_array_equal(a.peaks, b.peaks)


def test_worker_runs_this_tfq8_even_beside_another_one(cnn_and_data, monkeypatch, tmp_path):
    # A directory holding some other `tfq8` package as the working directory.
    (tmp_path / "tfq8" / "stats").mkdir(parents=True)
    for rel in ("tfq8/__init__.py", "tfq8/stats/__init__.py"):
        (tmp_path / rel).write_text("raise ImportError('the wrong tfq8')\n")
    (tmp_path / "tfq8" / "stats" / "worker.py").write_text("raise ImportError('the wrong tfq8')\n")
    monkeypatch.chdir(tmp_path)
    model, x = cnn_and_data
    _, _, stats = _background(model, x)
    assert stats is not None, "the worker did not run"


def test_worker_that_never_says_ready_is_given_up(cnn_and_data, monkeypatch, caplog, tmp_path):
    # A "Python" that never runs our code (as in some embedding hosts) must not hang calibrate.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setattr(worker_mod, "READY_TIMEOUT_S", 0.5)
    _assert_falls_back(*cnn_and_data, monkeypatch, caplog, "did not start within 0.5 s")


def test_garbled_answer_falls_back(cnn_and_data, monkeypatch, caplog):
    read = worker_mod._read

    def garbled(stream):
        header, arrays = read(stream)
        return header, ({} if "tensors" in header else arrays)

    monkeypatch.setattr(worker_mod, "_read", garbled)
    _assert_falls_back(*cnn_and_data, monkeypatch, caplog, "does not parse: KeyError")


def test_temp_files_that_cannot_be_made_fall_back(cnn_and_data, monkeypatch, caplog):
    def no_file():
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(worker_mod.tempfile, "TemporaryFile", no_file)
    _assert_falls_back(*cnn_and_data, monkeypatch, caplog, "Too many open files")


def test_calibrate_only_leaves_no_hook_on_the_converter(cnn_and_data):
    model, x = cnn_and_data
    converter = tfq8.models.load_model(model).converter()
    _tflite.calibrate_only(converter, tfq8.representative_dataset(x, model=model),
                           on_float_model=lambda blob: None)
    assert "_quantize" not in vars(converter)

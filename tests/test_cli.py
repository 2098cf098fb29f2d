"""The `tfq8` command line end to end on a saved tiny model.

The first test runs the real console script in a child process; the others call
`tfq8.cli.run` in this process (TensorFlow is imported once) and read the file
descriptors, as a shell would see them.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import factories as F
import tfq8
from clirun import run_cli as _run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = F.cnn(seed=6)
    model.save(d / "model.keras")
    x = F.images(96, seed=6)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    np.save(d / "calib.npy", x[:48])
    np.savez(d / "test.npz", x=x, y=y)
    np.save(d / "wrong_shape.npy", np.zeros((4, 8, 8, 3), np.float32))
    np.save(d / "short_labels.npy", y[:10])
    return d


def _one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("tfq8") and "error:" in l]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return errors[0]


def test_console_script_convert_end_to_end(files):
    exe = shutil.which("tfq8", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "tfq8.cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = files / "model_int8.tflite"
    proc = subprocess.run(cmd + ["convert", str(files / "model.keras"), "--data",
                                 str(files / "calib.npy"), "--method", "auto", "--output", str(out),
                                 "--calibration-out", str(files / "stats.npz"), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds the JSON only
    assert result["full_integer"] and result["size_bytes"] == out.stat().st_size
    info = tfq8.inspect(str(out))  # how an app quantizes inputs and reads outputs
    assert result["io"] == [{"tensor": t.name, "kind": kind, "dtype": "INT8", "scale": list(t.scale),
                             "zero_point": list(t.zero_point)}
                            for kind, t in (("input", info.inputs[0]), ("output", info.outputs[0]))]
    assert len(info.inputs) == len(info.outputs) == 1 and len(result["io"][0]["scale"]) == 1
    assert "tfq8 convert: calibrating" in proc.stderr  # progress on stderr
    proc = subprocess.run(cmd + ["bench", str(out), "--runs", "5", "--warmup", "1",
                                 "--per-op=false", "--progress=false"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "speedup" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr  # not even LiteRT's XNNPACK announcement
    # And a bad file from the real process: one line, no traceback, non-zero.
    (files / "garbage.tflite").write_bytes(b"not a model at all" * 10)
    proc = subprocess.run(cmd + ["inspect", str(files / "garbage.tflite")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "not a TFLite model" in _one_error_line(proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "tfq8", "inspect", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)  # python -m tfq8
    assert proc.returncode == 0 and json.loads(proc.stdout)["full_integer"], proc.stderr[-3000:]


def test_check_bench_inspect_json(files, capfd):
    tfl = files / "model_int8.tflite"
    if not tfl.exists():
        pytest.skip("needs the model written by the console-script test")
    code, out, err = _run(capfd, "check", tfl, "--reference", files / "model.keras",
                          "--data", files / "test.npz", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["num_samples"] == 96 and report["reference_accuracy"] == 1.0
    assert report["agreement"] > 0.9 and report["tensors"]
    assert "samples 96/96" in err

    code, out, err = _run(capfd, "check", tfl, "--reference", files / "model.keras",
                          "--data", files / "test.npz", "--top", "2")
    assert code == 0 and "agreement" in out and "2 more tensor(s)" not in out or "more" in out

    code, out, err = _run(capfd, "bench", tfl, "--reference", files / "model.keras", "--runs", "10",
                          "--warmup", "1", "--json")
    assert code == 0, err
    bench = json.loads(out)
    assert bench["speedup"] > 0 and len(bench["ops"]) == 4 and bench["num_threads"] == 1

    code, out, err = _run(capfd, "inspect", tfl, "--json", "--strict")
    assert code == 0 and json.loads(out)["full_integer"] is True
    code, out, err = _run(capfd, "inspect", tfl)
    assert code == 0 and "full-integer" in out


def test_convert_writes_the_model_to_stdout_when_output_names_it(files, tmp_path):
    """`--output /dev/stdout` sent the model to stderr (stdout carries only the report while a
    command runs) and the report to stdout."""
    exe = shutil.which("tfq8", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "tfq8.cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    args = ["convert", str(files / "model.keras"), "--data", str(files / "calib.npy"),
            "--method", "minmax", "--progress=false"]
    proc = subprocess.run(cmd + args + ["--output", "/dev/stdout"], capture_output=True,
                          env=env, timeout=300)  # a pipe
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout[4:8] == b"TFL3" and b"TFL3" not in proc.stderr
    assert b"wrote /dev/stdout: " + str(len(proc.stdout)).encode() + b" bytes" in proc.stderr
    with open(tmp_path / "redirected.tflite", "wb") as f:  # > redirected.tflite
        proc = subprocess.run(cmd + args + ["--output", "/dev/stdout", "--json"], stdout=f,
                              stderr=subprocess.PIPE, env=env, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stderr)["size_bytes"] > 0
    written = (tmp_path / "redirected.tflite").read_bytes()
    assert written[4:8] == b"TFL3" and len(written) == json.loads(proc.stderr)["size_bytes"]


def test_check_labels_file_with_one_array_per_output(tmp_path, capfd):
    import tfq8

    model = F.two_in_two_out(seed=3)
    data = F.two_in_data(64, seed=1)
    model.save(tmp_path / "two.keras")
    blob = tfq8.convert(model, data, output_path=tmp_path / "two_int8.tflite")
    y = np.random.default_rng(0).integers(0, 3, 64)
    np.savez(tmp_path / "two.npz", **data)
    np.savez(tmp_path / "labels.npz", cls=y, reg=np.zeros((64, 1), np.float32))
    expected = tfq8.check(blob, reference=model, data=data, labels=y, output="cls",
                          per_tensor=False)
    for output in ("cls", "0"):
        code, out, err = _run(capfd, "check", tmp_path / "two_int8.tflite", "--reference",
                              tmp_path / "two.keras", "--data", tmp_path / "two.npz", "--labels",
                              tmp_path / "labels.npz", "--label-output", output, "--json")
        assert code == 0, err
        assert json.loads(out)["accuracy"] == expected.accuracy
    np.savez(tmp_path / "other.npz", reg=np.zeros((64, 1)), aux=np.zeros(64))
    code, _, err = _run(capfd, "check", tmp_path / "two_int8.tflite", "--data",
                        tmp_path / "two.npz", "--labels", tmp_path / "other.npz",
                        "--label-output", "cls")
    assert code == 1 and "without the labels of output 'cls'" in _one_error_line(err)
    # In the command line's words: it said "labels is a dict ...: pass output= to name ...".
    assert _one_error_line(err).startswith("tfq8 check: error: --labels is a dict")
    assert "pass --label-output to name the output" in _one_error_line(err)


def test_help_on_every_command(capfd):
    code, out, _ = _run(capfd, "--help")
    assert code == 0 and all(c in out for c in ("convert", "check", "bench", "inspect"))
    for command, flag in [("convert", "--calibration-out"), ("check", "--labels"),
                          ("bench", "--threads"), ("inspect", "--strict")]:
        code, out, _ = _run(capfd, command, "--help")
        assert code == 0 and flag in out and "--json" in out, out


def test_default_output_sits_beside_the_model(tmp_path, monkeypatch):
    from tfq8.cli import _default_output

    assert _default_output("m.keras") == "m_int8.tflite"
    assert _default_output("saved/") == "saved_int8.tflite"
    # A SavedModel folder named "." or "..": beside it, not a hidden "._int8.tflite" in it.
    (tmp_path / "sm").mkdir()
    monkeypatch.chdir(tmp_path / "sm")
    assert _default_output(".") == str(tmp_path / "sm_int8.tflite")
    assert _default_output("./") == str(tmp_path / "sm_int8.tflite")
    assert _default_output("..") == str(tmp_path) + "_int8.tflite"


def test_version_is_the_package_version(capfd):
    import tfq8

    code, out, _ = _run(capfd, "--version")
    assert code == 0 and out == f"tfq8 {tfq8.__version__}\n"
    assert tfq8.__version__ == importlib.metadata.version("tfq8")


def test_bad_inputs_exit_non_zero_with_one_line(files, capfd):
    tfl = files / "model_int8.tflite"
    if not tfl.exists():
        pytest.skip("needs the model written by the console-script test")
    blob = tfl.read_bytes()
    (files / "trunc.tflite").write_bytes(blob[: len(blob) // 2])
    flipped = bytearray(blob)
    flipped[4:8] = b"XXXX"
    (files / "flipped.tflite").write_bytes(bytes(flipped))
    npz = (files / "test.npz").read_bytes()
    (files / "trunc.npz").write_bytes(npz[: len(npz) // 2])
    cases = [
        (("check", tfl, "--data", files / "trunc.npz"), "--data: could not read"),
        (("check", tfl, "--data", files / "test.npz", "--labels", files / "trunc.npz"),
         "--labels: could not read"),
        (("convert", files / "model.keras", "--calibration", files / "trunc.npz"),
         "Could not read a tfq8 calibration"),
        (("inspect", files / "trunc.tflite"), "truncated"),
        (("bench", files / "flipped.tflite"), "not a TFLite model"),
        (("check", files / "calib.npy", "--data", files / "calib.npy"), "not a TFLite model"),
        (("check", tfl, "--data", files / "wrong_shape.npy"), "expected input 'image'"),
        (("check", tfl, "--data", files / "test.npz", "--labels", files / "short_labels.npy"),
         "labels must have one entry per sample"),
        (("check", tfl, "--data", files / "nope.npy"), "--data"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--method", "bogus"),
         "Unknown range method"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--method",
          "percentile", "--method-option", "percentile=abc"), "Options of range method"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--method",
          "percentile", "--method-option", "percentile=99", "--method-option", "percentile=98"),
         "sets 'percentile' twice"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--method-option",
          "percentile=99"), "Pass --method too, such as --method 'percentile'"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--calibration-out",
          files / "calib.npy" / "stats.npz"), "--calibration-out lies under"),
        (("convert", files / "missing.keras", "--data", files / "calib.npy"), "does not exist"),
        (("convert", files / "model.keras"), "--data"),
        (("bench", tfl, "--threads", "0"), "threads"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--output", files),
         "--output is a directory"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--output",
          files / "model.keras"), "--output would overwrite MODEL"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--output",
          files / "calib.npy"), "--output would overwrite --data"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--output",
          files / "x.tflite", "--calibration-out", files / "x.tflite"),
         "--calibration-out would overwrite --output"),
        (("bench", tfl, "--frobnicate"), "frobnicate"),
        (("inspect",), "expected exactly one TFLITE"),
        (("explode", tfl), "unknown command"),
    ]
    before = (files / "model.keras").read_bytes(), (files / "calib.npy").read_bytes()
    for argv, message in cases:
        code, out, err = _run(capfd, *argv)
        assert code != 0, argv
        assert message in _one_error_line(err), (argv, err)
        assert out == "", argv
    assert ((files / "model.keras").read_bytes(), (files / "calib.npy").read_bytes()) == before


def test_convert_reuses_saved_statistics_with_ranges_and_options(files, capfd):
    stats = files / "stats.npz"
    if not stats.exists():
        pytest.skip("needs the statistics written by the console-script test")
    import tfq8

    calib = tfq8.Calibration.load(stats)
    logits = calib.tensors[-1].name
    out = files / "from_stats.tflite"
    code, _, err = _run(capfd, "convert", files / "model.keras", "--calibration", stats,
                        "--method", "percentile", "--method-option", "percentile=99.9",
                        "--range", f"{logits}=-4,4", "--output", out)
    assert code == 0, err
    expected = tfq8.convert(calibration=calib, method="percentile",
                            method_options={"percentile": 99.9}, ranges={logits: (-4.0, 4.0)})
    assert out.read_bytes() == expected
    # auto says what it chose; a range set by hand stays fixed.
    code, stdout, err = _run(capfd, "convert", files / "model.keras", "--calibration", stats,
                             "--range", f"{logits}=-4,4", "--output", files / "auto.tflite", "--json")
    assert code == 0, err
    auto = json.loads(stdout)["auto"]
    assert auto["method"] in auto["scores_db"] and auto["choice"][logits] == "fixed"
    assert set(auto["choice"]) == {t.name for t in calib.tensors}
    assert auto["loop_scales"] == {}  # no loop to narrow
    # auto's candidates, named on the command line.
    code, stdout, err = _run(capfd, "convert", files / "model.keras", "--calibration", stats,
                             "--method-option", "candidates=mse,kl", "--output",
                             files / "auto.tflite", "--json")
    assert code == 0, err
    assert list(json.loads(stdout)["auto"]["scores_db"]) == ["minmax", "mse", "kl"]
    assert (files / "auto.tflite").read_bytes() == tfq8.convert(
        calibration=calib, method_options={"candidates": ["mse", "kl"]})
    code, stdout, err = _run(capfd, "convert", files / "model.keras", "--calibration", stats,
                             "--output", files / "auto.tflite")
    assert code == 0 and re.search(r"\nauto chose \w+.*: output SQNR [\d.]+ dB", stdout), err
    cases = [
        (("--calibration", stats, "--data", files / "calib.npy"), "either --data or --calibration"),
        (("--calibration", stats, "--range", "logits"), "--range must be NAME=MIN,MAX"),
        (("--calibration", stats, "--range", "nope=0,1"), "--range ['nope']: no such tensor"),
        (("--calibration", stats, "--method-option", "99"), "--method-option must be KEY=VALUE"),
        (("--calibration", stats, "--method", "mse", "--method-option", "percentile=99"),
         "takes no option 'percentile'"),
        (("--calibration", files / "calib.npy"), "not the .npz archive"),
    ]
    for extra, message in cases:
        code, stdout, err = _run(capfd, "convert", files / "model.keras", "--output", out, *extra)
        assert code != 0, extra
        assert message in _one_error_line(err), (extra, err)
    other = files / "other.keras"
    F.cnn(seed=7).save(other)
    code, _, err = _run(capfd, "convert", other, "--calibration", stats, "--output", out)
    assert code != 0 and "statistics of another model" in _one_error_line(err)
    assert out.read_bytes() == expected  # failed runs left the earlier file whole


def test_verbosity_shows_the_traceback(files, capfd):
    code, _, err = _run(capfd, "inspect", files / "calib.npy", "--verbosity=1")
    assert code == 1 and "Traceback" in err and "not a TFLite model" in err


def test_folder_of_images_with_class_subfolders(files, capfd, tmp_path):
    import tensorflow as tf

    tfl = files / "model_int8.tflite"
    if not tfl.exists():
        pytest.skip("needs the model written by the console-script test")
    rng = np.random.default_rng(0)
    for cls in ("a_first", "b_second"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # resized to 16x16
            tf.io.write_file(str(tmp_path / cls / f"{k}.png"), tf.io.encode_png(img))
    (tmp_path / "notes.txt").write_text("ignored")
    code, out, err = _run(capfd, "check", tfl, "--data", tmp_path, "--image-scale", "0.01",
                          "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["num_samples"] == 6 and report["accuracy"] is not None  # labels from folders
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(capfd, "check", tfl, "--data", empty)
    assert code == 1 and "holds no images" in _one_error_line(err)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cut.png").write_bytes((tmp_path / "a_first" / "0.png").read_bytes()[:60])
    code, _, err = _run(capfd, "check", tfl, "--data", broken)
    assert code == 1 and _one_error_line(err).endswith(  # no "[Op:DecodeImage] name:" tail
        f"--data: cannot decode image {broken / 'cut.png'}: Invalid PNG data, size 60"), err


def test_data_files_read_as_a_user_expects(files, capfd, tmp_path, caplog):
    import tensorflow as tf

    tfl = files / "model_int8.tflite"
    if not tfl.exists():
        pytest.skip("needs the model written by the console-script test")
    x = np.load(files / "calib.npy")
    with open(tmp_path / "UP.NPY", "wb") as f:              # upper-case suffix: still numpy
        np.save(f, x)
    code, out, err = _run(capfd, "check", tfl, "--data", tmp_path / "UP.NPY", "--json")
    assert code == 0 and json.loads(out)["num_samples"] == len(x), err
    (tmp_path / "text.npy").write_text("1,2,3\n")
    code, _, err = _run(capfd, "check", tfl, "--data", tmp_path / "text.npy")
    assert code == 1 and "is not a numpy .npy file" in _one_error_line(err)
    code, _, err = _run(capfd, "check", tfl, "--data", files / "test.npz", "--num-samples", "5",
                        "--labels", files / "short_labels.npy")
    assert code == 1 and "labels must have one entry per sample of data (96)" in err
    rng = np.random.default_rng(0)
    for cls in ("c0", "c1", "c2"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(4):
            tf.io.write_file(str(tmp_path / "imgs" / cls / f"{k}.png"),
                             tf.io.encode_png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
    tf.io.write_file(str(tmp_path / "imgs" / "top.png"),
                     tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)))
    code, out, err = _run(capfd, "check", tfl, "--data", tmp_path / "imgs", "--num-samples", "3",
                          "--json")
    assert code == 0, err
    assert "1 image(s) at the top of" in caplog.text and "left out" in caplog.text
    assert "the data span [0, 255]" in caplog.text           # 0-255 pixels, a 0-1 scale model
    # three samples spread over the three classes (labels 0, 1, 2), not three of class 0
    assert json.loads(out)["num_samples"] == 3


def test_unreadable_inputs_and_outputs_name_their_flag(files, capfd, tmp_path, monkeypatch):
    """They were bare '[Errno 13] Permission denied: path' lines, and an unwritable --output
    was called output_path. (Simulated: the suite may run as root, who may read anything.)"""
    import tensorflow as tf

    tfl = files / "model_int8.tflite"
    if not tfl.exists():
        pytest.skip("needs the model written by the console-script test")
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        tf.io.write_file(str(tmp_path / "imgs" / cls / "0.png"),
                         tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)))
    shutil.copy(files / "calib.npy", tmp_path / "locked.npy")
    (tmp_path / "ro").mkdir()
    real_listdir, real_open, real_access = os.listdir, open, os.access
    locked = {str(tmp_path / "imgs" / "b"), str(tmp_path / "locked.npy")}

    def listdir(path="."):
        if os.fspath(path) in locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_listdir(path)

    def open_(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) in locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr("builtins.open", open_)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(tmp_path / "ro")
                        and real_access(p, mode, **kw))
    cases = [
        (("check", tfl, "--data", tmp_path / "imgs"),
         f"--data: cannot list the folder {tmp_path / 'imgs' / 'b'}: Permission denied"),
        (("check", tfl, "--data", tmp_path / "locked.npy"),
         f"--data: cannot read '{tmp_path / 'locked.npy'}': Permission denied"),
        (("check", tfl, "--data", files / "calib.npy", "--labels", tmp_path / "locked.npy"),
         "--labels: cannot read"),
        (("convert", files / "model.keras", "--data", files / "calib.npy", "--output",
          tmp_path / "ro" / "m.tflite"), "Cannot write --output '"),
    ]
    for argv, message in cases:
        code, out, err = _run(capfd, *argv)
        assert code == 1 and message in _one_error_line(err), (argv, err)
        assert "output_path" not in err


def test_convert_speaks_of_flags_for_a_float_op(tmp_path, capfd, caplog):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                              keras.layers.Dense(2, activation="elu")])
    model.save(tmp_path / "elu.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32))
    # TFLite's quantizer leaves ELU float; tfq8 runs it in int8 between int8 ops, but not
    # when it writes a float32 model output.
    argv = ["convert", tmp_path / "elu.keras", "--data", tmp_path / "x.npy", "--method", "minmax",
            "--output-type", "float32"]
    code, out, err = _run(capfd, *argv)
    line = _one_error_line(err)
    assert code == 1 and "Op(s) ELU" in line and "'relu'" in line  # what to use instead
    assert "Pass --allow-float to keep them in float" in line and "allow_float" not in line
    code, out, err = _run(capfd, *argv, "--allow-float")
    assert code == 0, err
    warning = caplog.text  # on stderr as "tfq8 convert: warning: ..." outside pytest
    assert "Op(s) ELU" in warning and "Kept in float (--allow-float)" in warning
    assert "allow_float" not in warning


def test_run_from_python_leaves_logging_as_it_found_it(tmp_path, capfd, monkeypatch):
    """Called from a notebook with logging.basicConfig()'s handler on the root logger,
    `run` prints its warnings once, on one line, and afterwards, whether the command
    succeeded, failed or was misused, the root logger's handlers and every level, absl's
    formatter and verbosity, faulthandler and TF_CPP_MIN_LOG_LEVEL are as they were."""
    import faulthandler
    import logging

    from absl import logging as absl_logging

    import tfq8

    x = np.random.default_rng(0).normal(size=(32, 20)).astype(np.float32)
    (tmp_path / "m.tflite").write_bytes(tfq8.convert(F.mlp(), x, method="minmax"))
    np.save(tmp_path / "far.npy", 100 * x)  # far outside the input's int8 grid: a warning
    root, absl_handler = logging.getLogger(), absl_logging.get_absl_handler()
    notebook = logging.StreamHandler(sys.stderr)  # what logging.basicConfig() adds
    notebook.setFormatter(logging.Formatter("NOTEBOOK %(levelname)s %(message)s"))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    saved_handlers, saved_level = list(root.handlers), root.level
    if absl_handler in root.handlers:  # put there by an earlier test's run
        root.removeHandler(absl_handler)
    root.addHandler(notebook)
    root.setLevel(logging.INFO)
    shown: dict[str, list[str]] = {"absl": [], "notebook": []}  # what each handler formats

    def seen_by(key, handler):
        def record(r):
            shown[key].append(handler.format(r))
            return True
        return record

    probe = seen_by("absl", absl_handler)
    absl_handler.addFilter(probe)
    notebook.addFilter(seen_by("notebook", notebook))
    try:
        handlers, formatter = list(root.handlers), absl_handler.python_handler.formatter
        names = ("", "tfq8", "tensorflow", "absl", "h5py")

        def state():
            return ([logging.getLogger(n).level for n in names], absl_logging.get_verbosity(),
                    faulthandler.is_enabled(), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))

        before = state()
        for argv, want in ([("check", tmp_path / "m.tflite", "--data", tmp_path / "far.npy"), 0],
                           [("inspect", tmp_path / "missing.tflite"), 1],
                           [("inspect", tmp_path / "m.tflite", "--no-such-flag"), 2]):
            code, _, err = _run(capfd, *argv)
            assert code == want, err
            if argv[0] == "check":  # once, in the command's one-line form
                assert [m[:27] for m in shown["absl"]] == ["tfq8 check: warning: Input "]
                assert shown["notebook"] == []
            assert root.handlers == handlers and state() == before, argv
            assert absl_handler.python_handler.formatter is formatter
        assert absl_handler not in root.handlers
        logging.getLogger("tfq8").warning("after")  # the notebook's handler, its format
        assert shown["notebook"] == ["NOTEBOOK WARNING after"]
    finally:
        absl_handler.removeFilter(probe)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@pytest.mark.parametrize("flag, value", [("--image-scale", "nan"), ("--image-offset", "inf")])
def test_an_image_scale_or_offset_that_is_not_finite_is_a_usage_error(capfd, tmp_path, flag,
                                                                      value):
    code, out, err = _run(capfd, "check", tmp_path / "m.tflite", "--data", tmp_path, flag, value)
    assert code == 2 and out == ""
    assert f"flag {flag}={value}: must be a finite number" in _one_error_line(err)


def test_calibration_out_with_calibration_is_refused_before_loading(capfd, tmp_path):
    # It was ignored: nothing written, and --json reported the file as written.
    code, out, err = _run(capfd, "convert", tmp_path / "model.keras", "--calibration",
                          tmp_path / "stats.npz", "--calibration-out", tmp_path / "new.npz")
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert "--calibration-out saves the statistics taken on --data" in line
    assert f"Received: --calibration {tmp_path / 'stats.npz'} --calibration-out" in line
    assert not (tmp_path / "new.npz").exists()


@pytest.mark.parametrize("extra, message", [
    (("--data", "calib.npy"), "Pass either --data or --calibration, not both"),
    (("--num-samples", "5"), "--num-samples chooses samples of --data"),
])
def test_flags_that_do_not_go_with_calibration_are_refused_before_loading(capfd, tmp_path,
                                                                         extra, message):
    # The model is not loaded first: its path need not even exist.
    code, out, err = _run(capfd, "convert", tmp_path / "model.keras", "--calibration",
                          tmp_path / "stats.npz", *extra)
    assert code == 1 and out == "" and message in _one_error_line(err)


def test_check_and_bench_errors_name_the_flags(capfd, tmp_path):
    import tfq8

    model = F.mlp()
    blob = tfq8.convert(model, np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32),
                        method="minmax")
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(blob)
    np.save(tmp_path / "x.npy", np.zeros((4, 20), np.float32))
    (tmp_path / "text.tflite").write_text("not a model at all")
    cases = [
        (("bench", tfl, "--time-budget", "nan"), "flag --time-budget=nan: must be a finite number"),
        (("bench", tfl, "--input-shape", "1,30"),
         "--input-shape: input 'serving_default_features:0' takes shapes like [-1, 20]"),
        (("bench", tfl, "--input-shape", "1,20", "--input-shape", "1,20"),
         "--input-shape must hold one shape per model input"),
        (("bench", tmp_path / "nope.tflite"), "TFLITE must be .tflite bytes or the path of a "
                                              ".tflite file; no such file. Received: TFLITE="),
        (("bench", tfl, "--reference", tmp_path / "text.tflite"), "--reference is not a TFLite"),
        # check and inspect name their argument TFLITE too, not tfq8.inspect's `model`
        (("check", tmp_path / "nope.tflite", "--data", tmp_path / "x.npy"),
         "TFLITE must be .tflite bytes or the path of a .tflite file; no such file. "
         "Received: TFLITE="),
        (("inspect", tmp_path / "nope.tflite"), "TFLITE must be .tflite bytes or the path of a "
                                                ".tflite file; no such file. Received: TFLITE="),
        (("inspect", tmp_path / "text.tflite"), "error: TFLITE is not a TFLite model"),
        (("check", tfl, "--data", tmp_path / "x.npy", "--label-output", "7"),
         "--label-output must be an index below 1 (outputs ['output_0']). "
         "Received: --label-output 7"),
        (("check", tfl, "--data", tmp_path / "x.npy", "--label-output", "-1"),
         "--label-output must name one of the model's outputs"),
    ]
    for argv, message in cases:
        code, out, err = _run(capfd, *argv)
        assert code != 0 and out == "", argv
        assert message in _one_error_line(err), (argv, err)


def test_run_from_python_takes_paths_in_argv_and_names_anything_else(capfd, tmp_path):
    from tfq8 import cli  # noqa: PLC0415

    # A pathlib.Path raised absl's AttributeError "'PosixPath' object has no attribute
    # 'startswith'".
    code, out, err = _run(capfd, "inspect", tmp_path / "missing.tflite")
    assert code == 1 and "no such file" in _one_error_line(err)
    with pytest.raises(SystemExit):
        cli.run(["tfq8", "inspect", tmp_path / "missing.tflite"])
    with pytest.raises(TypeError, match=r"^argv must be the command line as strings .*Received: "
                                        r"3 of type int in argv="):
        cli.run(["tfq8", "inspect", "m.tflite", "--top", 3])


def test_run_from_an_absl_app_keeps_its_flags(tmp_path, capfd):
    """An absl app calling `run` keeps its parsed flags' values (each command parses its
    own into absl's global FLAGS, unparsing them first: they were reset to their
    defaults), and flags never parsed stay unparsed."""
    from absl import flags  # noqa: PLC0415

    import tfq8  # noqa: PLC0415

    x = np.random.default_rng(0).normal(size=(32, 20)).astype(np.float32)
    (tmp_path / "m.tflite").write_bytes(tfq8.convert(F.mlp(), x, method="minmax"))
    name = "tfq8_test_user_flag"
    if name not in flags.FLAGS:
        flags.DEFINE_integer(name, 1, "A flag of the app that calls tfq8.cli.run.")
    was_parsed = flags.FLAGS.is_parsed()
    try:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["app", f"--{name}=5"])
        for argv, want in ([("inspect", tmp_path / "m.tflite"), 0],
                           [("inspect", tmp_path / "missing.tflite"), 1]):
            code, _, err = _run(capfd, *argv)
            assert code == want, err
            assert flags.FLAGS.is_parsed()
            assert flags.FLAGS[name].value == 5 and flags.FLAGS[name].present
        flags.FLAGS.unparse_flags()
        code, _, err = _run(capfd, "inspect", tmp_path / "m.tflite")
        assert code == 0, err
        assert not flags.FLAGS.is_parsed()
        assert flags.FLAGS[name].value == 1 and flags.FLAGS[name].using_default_value
    finally:
        flags.FLAGS.unparse_flags()
        if was_parsed:
            flags.FLAGS(["app"])


def test_run_from_python_closes_its_copy_of_stdout_when_the_command_fails(tmp_path, capfd):
    """The command's handle on the real stdout was left to the garbage collector: a
    failed command's traceback holds it in a reference cycle, so the descriptor stayed
    open (and a ResourceWarning came later, from wherever the collector ran)."""
    import gc  # noqa: PLC0415

    def descriptors():
        return sorted(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    gc.collect()
    gc.disable()  # only the collector closed it
    try:
        before = descriptors()
        code, _, err = _run(capfd, "inspect", tmp_path / "missing.tflite")
        assert code == 1, err
        assert descriptors() == before
    finally:
        gc.enable()


def test_folder_of_images_on_a_model_with_dynamic_height_and_width_is_refused(capfd, tmp_path):
    """The .tflite stores a dynamic height and width as 1: images must not be resized to 1x1
    (the model then fails deep in TensorFlow); check refuses them as convert does."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    tfl = tmp_path / "dyn_int8.tflite"
    tfq8.convert(model, F.images(16, seed=1), method="minmax", output_path=str(tfl))
    (tmp_path / "imgs").mkdir()
    tf.io.write_file(str(tmp_path / "imgs" / "0.png"),
                     tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)))
    code, _, err = _run(capfd, "check", tfl, "--data", tmp_path / "imgs")
    assert code == 1 and "of fixed size" in _one_error_line(err), err


def test_bench_of_a_model_with_dynamic_height_and_width_says_the_flag_as_typed(capfd, tmp_path):
    """The error asks for --input-shape in the command line's form only (it offered
    benchmark()'s `input_shapes=[[1, 224, 224, 3]]` as `--input-shape [[1, 224, 224, 3]]`)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    tfl = tmp_path / "dyn_int8.tflite"
    tfq8.convert(model, F.images(16, seed=1), method="minmax", output_path=str(tfl))
    code, _, err = _run(capfd, "bench", tfl, "--runs", "1")
    line = _one_error_line(err)
    assert code == 1 and line.endswith(
        "pass --input-shape once per input, such as --input-shape=1,224,224,3."), line
    assert "[[" not in line and "input_shapes" not in line, line

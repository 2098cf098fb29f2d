"""Verified loading, the batched (de)quantizing runner, and fuzzed model bytes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import factories as F
import tfq8
from tfq8 import _tflite
from tfq8.harness import interpreter as I


@pytest.fixture(scope="module")
def int8_model():
    return tfq8.convert(F.cnn(), F.images(32))


def test_rejects_non_tflite_bytes_with_clear_errors(tmp_path):
    with pytest.raises(I.InvalidModelError, match="at least 16 bytes"):
        I.verify_model(b"")
    with pytest.raises(I.InvalidModelError, match="TFL3"):
        I.verify_model(bytes(100))
    # A Keras model file where a .tflite belongs says so.
    with pytest.raises(I.InvalidModelError, match=r"not a TFLite model \(it is a zip archive, "
                                                 r"such as a \.keras model\).*convert the model"):
        I.verify_model(b"PK\x03\x04" + bytes(100))
    with pytest.raises(I.InvalidModelError, match=r"\(it is an HDF5 file, such as a \.h5 Keras "
                                                 r"model\)"):
        I.verify_model(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(TypeError, match="Received: tflite_model of type int"):
        I.read_model_bytes(3)
    with pytest.raises(ValueError, match="no such file"):
        I.read_model_bytes(str(tmp_path / "missing.tflite"))
    with pytest.raises(ValueError, match="it is a folder"):
        I.ModelRunner(str(tmp_path))


def test_an_unreadable_file_names_the_argument(tmp_path, monkeypatch):
    """It was a bare PermissionError; the model loader saw h5py's 'accessible as hdf5'."""
    locked = {str(tmp_path / "m.tflite"), str(tmp_path / "m.keras")}
    for name in locked:
        open(name, "wb").close()
    real_open = open

    def refuse(path, *args, **kwargs):
        if os.fspath(path) in locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(ValueError, match=r"Could not read tflite_model: Permission denied. "
                                         r"Received: tflite_model='.*m.tflite'"):
        I.read_model_bytes(str(tmp_path / "m.tflite"))
    from tfq8 import models  # noqa: PLC0415

    with pytest.raises(ValueError, match=r"Could not read the model file: Permission denied. "
                                         r"Received: model='.*m.keras'"):
        models.load_model(str(tmp_path / "m.keras"))


def test_truncations_are_rejected_before_litert(int8_model):
    for cut in (8, 20, len(int8_model) // 3, len(int8_model) // 2, len(int8_model) - 200):
        with pytest.raises(I.InvalidModelError, match="truncated"):
            I.verify_model(int8_model[:cut])


def _edited(blob, edit):
    m = _tflite.read_model(blob)
    edit(m)
    return _tflite.write_model(m)


@pytest.mark.parametrize("edit, message", [
    (lambda m: setattr(m.subgraphs[0].operators[0], "inputs",
                       np.array([0, 999, 1], np.int32)), "refers to tensor 999"),
    (lambda m: setattr(m.subgraphs[0].operators[1], "opcodeIndex", 57), "opcode index 57"),
    (lambda m: setattr(m.subgraphs[0].tensors[6], "buffer", 4000), "buffer 4000"),
    (lambda m: setattr(m.buffers[m.subgraphs[0].tensors[6].buffer], "data",
                       np.zeros(3, np.uint8)), "needs 216 bytes"),
    (lambda m: setattr(m.subgraphs[0].tensors[7], "shape",
                       np.array([1, -4, 14, 8], np.int32)), "negative dimension"),
    (lambda m: setattr(m.subgraphs[0], "outputs", np.array([42], np.int32)), "an output"),
    (lambda m: setattr(m.subgraphs[0].operators[1], "inputs", np.array([9, 4, 3], np.int32)),
     "no earlier op writes"),
    (lambda m: setattr(m.subgraphs[0].tensors[7].quantization, "scale",
                       np.array([0.0], np.float32)), "non-positive"),
])
def test_semantically_broken_models_are_rejected(int8_model, edit, message):
    bad = _edited(int8_model, edit)
    with pytest.raises(I.InvalidModelError, match=message):
        I.verify_model(bad)
    with pytest.raises(ValueError):
        tfq8.inspect(bad)


def test_runner_quantizes_inputs_and_dequantizes_outputs(int8_model):
    x = F.images(10, seed=5)
    runner = I.ModelRunner(int8_model)
    inp, out = runner.inputs[0], runner.outputs[0]
    # By hand, one sample at a time.
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=int8_model, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))  # the runner's default kernels
    it.allocate_tensors()
    s, z = it.get_input_details()[0]["quantization"]
    so, zo = it.get_output_details()[0]["quantization"]
    want = []
    for xi in x:
        q = np.clip(np.round(xi / s) + z, -128, 127).astype(np.int8)[None]
        it.set_tensor(it.get_input_details()[0]["index"], q)
        it.invoke()
        want.append((it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float32) - zo) * so)
    got, = runner.run([x])
    np.testing.assert_allclose(got, np.concatenate(want), rtol=0, atol=1e-6)
    assert (inp.scales[0], inp.zero_points[0]) == pytest.approx((s, z))
    np.testing.assert_array_equal(out.quantize(out.dequantize(np.arange(-128, 128))),
                                  np.arange(-128, 128))


def test_fixed_batch_models_run_per_sample(int8_model):
    def fix(m):
        for i in m.subgraphs[0].inputs:
            t = m.subgraphs[0].tensors[i]
            t.shapeSignature = np.array(t.shape, np.int32)
    fixed = _edited(int8_model, fix)
    x = F.images(7, seed=2)
    a = I.ModelRunner(fixed)
    b = I.ModelRunner(int8_model, batch_size=4)
    assert (a.resizable, a.batch_size, b.resizable) == (False, 1, True)
    np.testing.assert_array_equal(a.run([x])[0], b.run([x])[0])


def test_backend_and_threads_are_validated(int8_model):
    with pytest.raises(ValueError, match="backend must be one of xnnpack, builtin, reference"):
        I.make_interpreter(int8_model, backend="gpu")
    with pytest.raises(ValueError, match="num_threads"):
        I.make_interpreter(int8_model, num_threads=0)
    for backend in I.BACKENDS:
        assert I.make_interpreter(int8_model, backend=backend) is not None


_FUZZ = textwrap.dedent("""
    import collections, sys
    import numpy as np
    import tfq8
    from tfq8.harness import interpreter as I
    rng = np.random.default_rng(int(sys.argv[1]))
    count = int(sys.argv[2])
    outcome = collections.Counter()
    for path in sys.argv[3:]:
        blob = open(path, "rb").read()
        for k in range(count):
            b = bytearray(blob)
            if k % 3 == 0:
                b = b[: int(rng.integers(0, len(b)))]
            else:
                top = len(b) if k % 2 else max(64, len(b) // 8)  # often the tables up front
                for _ in range(int(rng.integers(1, 9))):
                    b[int(rng.integers(0, top))] = int(rng.integers(0, 256))
            try:
                tfq8.inspect(bytes(b))
                runner = I.ModelRunner(bytes(b), backend=("builtin", "xnnpack", "reference")[k % 3])
                runner.run([np.zeros((3,) + t.shape[1:], t.data_dtype()) for t in runner.inputs])
                outcome["ran"] += 1
            except ValueError:
                outcome["rejected"] += 1
    print(outcome["ran"], outcome["rejected"])
""")


def test_fuzzed_model_bytes_never_crash_the_process(int8_model, tmp_path):
    paths = [tmp_path / "cnn.tflite", tmp_path / "two_in_two_out.tflite"]
    paths[0].write_bytes(int8_model)
    paths[1].write_bytes(tfq8.convert(F.two_in_two_out(), F.two_in_data(16)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _FUZZ, "1234", "400", *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=600)
    # A crash of LiteRT would end the child with a signal (negative return code);
    # any exception other than ValueError would end it with a traceback.
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran, rejected = (int(v) for v in proc.stdout.split()[-2:])
    assert ran + rejected == 800
    assert rejected > 400 and ran > 20  # both paths were exercised

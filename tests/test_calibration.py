"""Calibration: statistics of the TFLite graph's tensors; merge, save, load, collect."""

import json
import os
import re
import stat
import time

import numpy as np
import pytest

import factories
import tfq8
from tfq8 import _tflite
from tfq8.calibration import atomic_write
from tfq8.harness.interpreter import make_interpreter
from tfq8.stats import sweep as sweep_mod


@pytest.fixture(scope="module")
def model_and_data():
    return factories.cnn(), factories.images(48)


@pytest.fixture(scope="module")
def full(model_and_data):
    model, x = model_and_data
    return tfq8.calibrate(model, x)


def test_every_calibrated_tensor_has_a_histogram_of_every_value(full, model_and_data):
    _, x = model_and_data
    ranges = _tflite.calibrated_ranges(full.model)
    assert sorted(t.index for t in full.tensors) == sorted(ranges)
    sg = _tflite.read_model(full.model).subgraphs[0]
    for t in full.tensors:
        per_sample = int(np.prod(sg.tensors[t.index].shape[1:]))
        assert t.histogram.count == per_sample * len(x)
        # The extremes are the converter's own (TFLite's calibrator).
        assert (t.histogram.min, t.histogram.max) == pytest.approx(ranges[t.index], abs=0)
    producers = {t.producer for t in full.tensors}
    assert "INPUT" in producers and "CONV_2D" in producers


def test_merge_of_two_halves_equals_one_calibration(full, model_and_data):
    model, x = model_and_data
    a = tfq8.calibrate(model, x[:20])
    b = tfq8.calibrate(model, x[20:])
    merged = a.merge(b)
    assert merged.num_samples == len(x)
    for m, f in zip(merged.tensors, full.tensors):
        assert m.name == f.name
        assert m.histogram.count == f.histogram.count
        assert (m.histogram.min, m.histogram.max) == (f.histogram.min, f.histogram.max)
        assert m.histogram.counts.sum() == f.histogram.counts.sum()
    assert _tflite.calibrated_ranges(merged.model) == _tflite.calibrated_ranges(full.model)
    assert tfq8.convert(calibration=merged, method="minmax") == tfq8.convert(
        calibration=full, method="minmax")


def test_tensors_internal_to_a_fused_lstm_keep_the_converters_range():
    model = factories.tf_keras_lstm()
    x = np.random.default_rng(0).normal(size=(24, 6, 4)).astype(np.float32)
    calib = tfq8.calibrate(model, x)
    ranges = _tflite.calibrated_ranges(calib.model)
    hidden = sorted(set(ranges) - {t.index for t in calib.tensors})
    assert hidden, "the fused LSTM should keep some calibrated tensors to itself"
    for method in ("minmax", "mse", "auto"):
        blob = tfq8.convert(calibration=calib, method=method)
        assert tfq8.inspect(blob).full_integer
    assert tfq8.check(blob, reference=model, data=x).outputs[0].sqnr_db > 20
    # Their range in a merge is the union of both calibrators'.
    a, b = tfq8.calibrate(model, x[:12]), tfq8.calibrate(model, x[12:])
    merged = _tflite.calibrated_ranges(a.merge(b).model)
    for i in hidden:
        (lo_a, hi_a), (lo_b, hi_b) = (_tflite.calibrated_ranges(c.model)[i] for c in (a, b))
        assert merged[i] == pytest.approx((min(lo_a, lo_b), max(hi_a, hi_b)))


def test_merge_refuses_another_graph(full):
    other = tfq8.calibrate(factories.mlp(), np.zeros((4, 20), np.float32))
    with pytest.raises(ValueError, match="same TFLite graph"):
        full.merge(other)
    # The same architecture built twice: Keras numbers the layers, so the names differ.
    # The message said only "the tensors differ"; it names the first that does.
    twin = tfq8.calibrate(factories.cnn(), factories.images(8))
    first = next(a for a, b in zip(full.tensors, twin.tensors) if a.name != b.name)
    with pytest.raises(ValueError, match=r"layer names fix the tensor names.*This one has 5 "
                                         r"calibrated tensors, the other 5; the first that "
                                         rf"differs: tensor {first.index} '"):
        full.merge(twin)


def test_merge_refuses_the_same_graph_with_other_weights(model_and_data):
    _, x = model_and_data
    model = factories.cnn(seed=5)
    before = tfq8.calibrate(model, x[:8])
    model.set_weights([w * 1.5 for w in model.get_weights()])  # same tensors, other weights
    after = tfq8.calibrate(model, x[8:16])
    assert [t.name for t in after.tensors] == [t.name for t in before.tensors]
    with pytest.raises(ValueError, match="different weights"):
        before.merge(after)


def test_save_load_round_trip_without_pickle(full, tmp_path):
    path = tmp_path / "stats.npz"
    full.save(path)
    with np.load(path, allow_pickle=False) as z:  # loads with pickle off
        assert "model" in z.files
    loaded = tfq8.Calibration.load(path)
    assert loaded.model == full.model and loaded.num_samples == full.num_samples
    assert loaded.fingerprint == full.fingerprint
    assert all(a.histogram == b.histogram for a, b in zip(loaded.tensors, full.tensors))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.samples, full.samples))
    np.testing.assert_array_equal(loaded.sample_peaks, full.sample_peaks)
    # The same file a day later (np.savez dates its zip entries 1980-01-01), and from
    # the loaded calibration.
    later = time.time() + 86400
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", lambda: later)
        full.save(tmp_path / "again.npz")
    loaded.save(tmp_path / "loaded.npz")
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()
    assert (tmp_path / "loaded.npz").read_bytes() == path.read_bytes()


def test_save_replaces_atomically_and_load_reports_bad_files(full, tmp_path):
    path = tmp_path / "stats.npz"
    path.write_bytes(b"old")
    full.save(path)
    assert tfq8.Calibration.load(path).num_samples == full.num_samples
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="Could not read a tfq8 calibration"):
        tfq8.Calibration.load(bad)
    with pytest.raises(ValueError, match="Could not read"):
        tfq8.Calibration.load(tmp_path / "missing.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="holds one ndarray, not the .npz archive"):
        tfq8.Calibration.load(tmp_path / "array.npy")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="Could not read a tfq8 calibration"):
        tfq8.Calibration.load(tmp_path / "other.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for damage, match in ((lambda a: a[:, :4], r"kept sample 0 is float32\[\d+, 4, 16, 3\]; the "
                                               r"model's input 0 takes float32\[-1, 16, 16, 3\]"),
                          (lambda a: a.astype(np.float64), "kept sample 0 is float64"),
                          (lambda a: a * np.nan, "kept sample 0 holds NaN")):
        np.savez(tmp_path / "damaged.npz", **{**arrays, "sample0": damage(arrays["sample0"])})
        with pytest.raises(ValueError, match=r"Could not read a tfq8 calibration .*" + match):
            tfq8.Calibration.load(tmp_path / "damaged.npz")


def test_load_refuses_files_that_do_not_fit_their_model(full, tmp_path):
    """Files that unzip but whose statistics do not fit the model failed later, deep in
    numpy (a wrong number of peaks under auto) or math (a huge grid exponent), or gave a
    pickle warning for a file that is no archive at all (JSON, a .tflite)."""
    good, bad = tmp_path / "stats.npz", tmp_path / "bad.npz"
    full.save(good)
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    first = header["tensors"][0]
    meta = arrays["t0_meta"].copy()
    meta[2] = 10 ** 6
    for changes, match in (
            ({"t0_peaks": np.zeros(3)}, r"tensor '.*' has peaks of float64\[3\]; expected 48"),
            ({"t0_meta": meta}, r"finite extremes inside the bins' grid"),
            ({"t0_extremes": np.array([-np.inf, np.inf])}, r"finite extremes inside"),
            ({"t0_counts": arrays["t0_counts"].astype(np.float64)}, "integer meta values and counts"),
            ({"tensors": [{**first, "index": 9999}]}, r"index 9999, which is not a calibrated"),
            ({"tensors": [first, first]}, "listed twice"),
            ({"tensors": [{**first, "name": "x"}]}, r"tensor 0 is named 'x'; its model names it"),
            ({"tensors": [{**first, "index": "0"}]}, r"not a list of \{index \(int\)"),
            ({"num_samples": -5}, r"num_samples is -5; expected a count of at least 48"),
            ({"fingerprint": 5}, "fingerprint is 5"),
            ({"model": np.frombuffer(bytes(100), np.uint8)}, "its model .* not a TFLite")):
        edited = dict(arrays)
        head = dict(header)
        for key, value in changes.items():
            if key in head:
                head[key] = value
            else:
                edited[key] = value
        edited["header"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
        np.savez(bad, **edited)
        with pytest.raises(ValueError, match=r"Could not read a tfq8 calibration .*" + match):
            tfq8.Calibration.load(bad)
    for data, match in ((b'{"format": "tfq8.calibration/1"}', r"not an .npz archive \(it starts with b'\{"),
                        (full.model, r"not an .npz archive"), (b"", r"not an .npz archive \(it is empty")):
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            tfq8.Calibration.load(bad)


def _resave(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    for key, value in changes.items():
        if key == "model":
            arrays["model"] = value
        elif value is None:
            header.pop(key)
        else:
            header[key] = value
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(dst, **arrays)


@pytest.mark.parametrize("damage, match", [
    ("truncate", "damaged, truncated"),
    ("foreign", r"it holds the arrays \['x'\], and no header"),
    (dict(num_samples=None), "missing entry 'num_samples'"),
    (dict(tensors=5), "damaged, truncated"),
    (dict(model=np.frombuffer(b"\x10\x00\x00\x00TFL3" + bytes(8), np.uint8)), "damaged, truncated"),
])
def test_damaged_calibration_files_name_the_file(full, tmp_path, damage, match):
    good, bad = tmp_path / "stats.npz", tmp_path / "bad.npz"
    full.save(good)
    if damage == "truncate":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "foreign":
        np.savez(bad, x=np.zeros(3))
    else:
        _resave(good, bad, **damage)
    with pytest.raises(ValueError, match=f"Could not read a tfq8 calibration from '{bad}'.*{match}"):
        tfq8.Calibration.load(bad)


def test_atomic_write_keeps_modes_and_links_and_names_the_argument(tmp_path):
    target = tmp_path / "model.tflite"
    atomic_write(target, b"one", arg="output_path")
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    target.chmod(0o640)
    atomic_write(target, b"two", arg="output_path")
    assert target.read_bytes() == b"two" and target.stat().st_mode & 0o777 == 0o640
    link = tmp_path / "link.tflite"
    link.symlink_to(target)
    atomic_write(link, b"three", arg="output_path")
    assert link.is_symlink() and target.read_bytes() == b"three"
    with pytest.raises(ValueError, match=r"output_path is a directory.*Received: output_path="):
        atomic_write(tmp_path, b"x", arg="output_path")
    with pytest.raises(ValueError, match=r"output_path lies under .*model.tflite', which is a file"):
        atomic_write(target / "sub" / "m.tflite", b"x", arg="output_path")
    with pytest.raises(ValueError, match=r"output_path must name a file. Received: output_path=''"):
        atomic_write("", b"x", arg="output_path")
    with pytest.raises(TypeError, match=r"output_path must be a file path.*Received: output_path=123"):
        atomic_write(123, b"x", arg="output_path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tflite", "model.tflite"]


def test_a_failed_atomic_write_removes_the_directories_it_made(tmp_path, monkeypatch):
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "deeper" / "model.tflite"

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the data reach the disk at fsync
    with pytest.raises(OSError, match=r"Cannot write output_path=.*No space left on device; "
                                      r"nothing was written"):
        atomic_write(target, b"x" * 100_000, arg="output_path")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]  # only what was there
    atomic_write(target, b"x", arg="output_path")  # and a later write makes them again
    assert target.read_bytes() == b"x"


def test_atomic_write_writes_into_a_pipe_or_device_instead_of_replacing_it(tmp_path):
    """`--output /dev/null` once renamed a regular file onto /dev/null (as root)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that the write need not wait
    try:
        atomic_write(fifo, b"model bytes", arg="output_path")
        assert os.read(reader, 100) == b"model bytes"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left
    loop = tmp_path / "loop.tflite"
    loop.symlink_to(loop.name)
    with pytest.raises(ValueError, match=r"output_path is a symbolic link that loops"):
        atomic_write(loop, b"x", arg="output_path")


def test_a_failed_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.tflite"
    atomic_write(target, b"old", arg="output_path")
    with pytest.raises(ValueError, match=r"output_path must not contain a NUL character"):
        atomic_write(str(tmp_path / "a\0b.tflite"), b"x", arg="output_path")
    with pytest.raises(ValueError, match=r"output_path has a file name longer than the \d+ bytes"):
        atomic_write(tmp_path / ("m" * 300 + ".tflite"), b"x", arg="output_path")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"Cannot write output_path='.*model.tflite': No space left "
                                      r"on device; nothing was written") as info:
        atomic_write(target, b"new", arg="output_path")
    assert info.value.errno == 28
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_kept_samples_are_spread_over_the_data(model_and_data):
    model, x = model_and_data
    calib = tfq8.calibrate(model, x, keep_samples=4)
    assert len(calib.samples[0]) == 4
    np.testing.assert_array_equal(calib.samples[0][0], x[0])
    np.testing.assert_array_equal(calib.samples[0][-1], x[-1])
    assert tfq8.calibrate(model, x, keep_samples=0).samples is None


def test_peaks_of_kept_samples_match_a_direct_run(model_and_data):
    """Per-sample peaks are recorded during collection, across batch boundaries."""
    model, x = model_and_data
    calib = tfq8.calibrate(model, x, keep_samples=9, batch_size=5)
    peaks = calib.sample_peaks
    assert peaks.shape == (9, len(calib.tensors))
    interp = make_interpreter(calib.model, preserve_all_tensors=True)
    detail = interp.get_input_details()[0]
    for k, sample in enumerate(calib.samples[0]):
        interp.set_tensor(detail["index"], sample[None])
        interp.invoke()
        for j, t in enumerate(calib.tensors):
            expected = np.abs(interp.get_tensor(t.index)).max()
            np.testing.assert_allclose(peaks[k, j], expected, rtol=1e-5, err_msg=t.name)
    half = tfq8.calibrate(model, x[:24], keep_samples=9).merge(
        tfq8.calibrate(model, x[24:], keep_samples=9))
    assert half.sample_peaks.shape == (9, len(calib.tensors))
    assert tfq8.calibrate(model, x, keep_samples=0).sample_peaks is None


def test_ranges_by_method_and_tensor_lookup(full):
    for method in ("minmax", "percentile", "kl", "mse"):
        ranges = full.ranges(method)
        assert set(ranges) == {t.index for t in full.tensors}
        assert all(lo <= hi for lo, hi in ranges.values())
    assert full.converter_ranges() == {t.index: (t.histogram.min, t.histogram.max)
                                       for t in full.tensors}
    first = full.tensors[0]
    assert full.tensor(first.name) is first and full.tensor(first.index) is first
    with pytest.raises(KeyError):
        full.tensor("no such tensor")
    # Printing a tensor's statistics shows its name and histogram, not one peak per kept sample.
    assert first.peaks is not None and len(first.peaks) > 8
    assert "peaks" not in repr(first) and first.name in repr(first) and len(repr(first)) < 500


def test_each_method_runs_once_per_calibration(model_and_data, monkeypatch):
    from tfq8.ranges import registry

    model, x = model_and_data
    calib = tfq8.calibrate(model, x[:16])
    calls = []
    kl = registry.get_method("kl")
    monkeypatch.setitem(registry._METHODS, "kl", lambda h, **o: calls.append(h) or kl(h, **o))
    first = calib.ranges("kl")
    first[next(iter(first))] = (0.0, 0.0)  # the caller's own copy
    again = calib.ranges("kl")
    assert len(calls) == len({tfq8.calibration.histogram_key(t.histogram) for t in calib.tensors
                              if t.producer not in tfq8.calibration.FIXED_SCALE_OPS})
    assert again != first and again == calib._run_method(kl, {})
    assert calib.ranges("percentile", percentile=99.0) != calib.ranges("percentile")


def test_equal_histograms_run_a_method_once(model_and_data, monkeypatch):
    from tfq8.ranges import registry
    from tfq8.calibration import histogram_key
    from tfq8.stats.histogram import Histogram

    model, x = model_and_data
    calib = tfq8.calibrate(model, x[:16])
    a, b = calib.tensors[1], calib.tensors[2]
    assert histogram_key(a.histogram) != histogram_key(b.histogram)
    b.histogram = a.histogram.copy()  # as a RESHAPE's output repeats its input
    assert histogram_key(a.histogram) == histogram_key(b.histogram)
    b.histogram.counts[-1] += 0  # equal values, still the same key
    calls = []
    kl = registry.get_method("kl")
    monkeypatch.setitem(registry._METHODS, "kl", lambda h, **o: calls.append(h) or kl(h, **o))
    ranges = calib.ranges("kl")
    assert ranges[b.index] == ranges[a.index] == kl(a.histogram)
    assert sum(h == a.histogram for h in calls) == 1
    assert {i: r for i, r in ranges.items() if i != b.index} == {
        t.index: r for t, r in zip(calib.tensors, map(kl, (t.histogram for t in calib.tensors)))
        if t.index != b.index}
    moved = a.histogram.copy()
    moved.zeros += 1
    assert histogram_key(moved) != histogram_key(a.histogram)
    signed = Histogram().update(np.array([0.0, 1.0]))
    negative_zero = signed.copy()
    negative_zero.min = -0.0
    assert signed == negative_zero and histogram_key(signed) != histogram_key(negative_zero)


def test_nan_activation_names_the_tensor_and_samples():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    out = keras.layers.Dense(2)(keras.layers.Lambda(lambda t: keras.ops.log(t))(inp))
    model = keras.Model(inp, out)
    x = np.abs(np.random.default_rng(0).normal(size=(8, 4))).astype(np.float32) + 0.1
    x[5, 0] = -1.0  # log(-1) = NaN inside the model, not in the data
    with pytest.raises(ValueError, match=r"not finite for samples"):
        tfq8.calibrate(model, x)


def test_xnnpack_probe_agrees_on_a_real_graph(full, model_and_data):
    _, x = model_and_data
    rep = tfq8.representative_dataset(x[:2], specs=tfq8.models.input_specs(factories.cnn()))
    assert sweep_mod.xnnpack_agrees(full.model, rep.inputs, [t.index for t in full.tensors])


def test_max_bins_has_a_ceiling_and_specs_a_type(model_and_data):
    model, x = model_and_data
    with pytest.raises(ValueError, match=r"max_bins must be at most 65536. Received: "
                                         r"max_bins=1099511627776"):
        tfq8.calibrate(model, x, max_bins=2**40)
    with pytest.raises(TypeError, match=r"specs must be a list of tfq8.data.InputSpec .*"
                                        r"Received: specs='abc'"):
        tfq8.representative_dataset(x, specs="abc")


def test_merge_keeps_samples_from_both_in_proportion_with_their_peaks(model_and_data):
    model, x = model_and_data
    a = tfq8.calibrate(model, x[:40], keep_samples=20)
    b = tfq8.calibrate(model, x[40:], keep_samples=8)
    merged = a.merge(b)
    kept = merged.samples[0]
    assert len(kept) == 20  # as many as the larger of the two kept
    from_a = sum(any(np.array_equal(k, s) for s in a.samples[0]) for k in kept)
    from_b = sum(any(np.array_equal(k, s) for s in b.samples[0]) for k in kept)
    assert (from_a, from_b) == (round(20 * 40 / 48), 20 - round(20 * 40 / 48))
    # Each kept sample keeps its own peaks: those a calibration on the kept samples records.
    again = tfq8.calibrate(model, kept, keep_samples=len(kept))
    for m, g in zip(merged.tensors, again.tensors):
        if g.peaks is not None:
            np.testing.assert_allclose(m.peaks, g.peaks, rtol=1e-5)


def test_merged_picks_take_whole_batches_evenly_from_each():
    from tfq8.calibration import _merged_picks
    pick = _merged_picks([8, 4], [300, 100], 2)  # 6 of the first 8, 2 of the other 4
    assert pick.tolist() == [0, 1, 4, 5, 6, 7, 8, 9]  # batches 0, 2, 3 of 4; batch 0 of 2
    assert _merged_picks([0, 4], [10, 10], 1).tolist() == [0, 1, 2, 3]


def test_load_names_a_missing_entry_plainly(full, tmp_path):
    full.save(tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "model"}
    np.savez(tmp_path / "no_model.npz", **arrays)
    with pytest.raises(ValueError, match=r"\(damaged, truncated or not written by "
                                         r"Calibration\.save\): missing entry 'model'$"):
        tfq8.Calibration.load(tmp_path / "no_model.npz")


@pytest.mark.parametrize("returned", [(-np.inf, np.inf), (float("nan"), 1.0), (5.0, 1.0), 3.0,
                                      (0.0, 1.0, 2.0), None, ("a", "b"), (-3e38, 3e38)],
                         ids=["inf", "nan", "reversed", "scalar", "triple", "none", "strings",
                              "wider_than_float32"])
def test_a_registered_method_returning_no_range_is_named(full, returned):
    """(-inf, inf) crashed the process in the quantizer (a segfault); NaN, and a finite pair
    wider than float32 can span, were blamed on a "corrupted" model, a reversed pair was
    quantized, the rest failed in unpacking."""
    from tfq8.ranges import registry  # noqa: PLC0415

    name = "_test_only_bad_range"
    registry.register(name)(lambda h: returned)
    try:
        with pytest.raises(ValueError, match=rf"^Range method '{name}' must return a \(min, max\) "
                                             r"pair of finite numbers with min <= max, "
                                             r"spanning at most 3\.402823e\+38 \(float32's "
                                             r"largest value\), 0 included\. Received: "
                                             rf"{re.escape(repr(returned))} for tensor '.+'$"):
            tfq8.convert(calibration=full, method=name)
    finally:
        registry._METHODS.pop(name, None)  # pylint: disable=protected-access


def test_a_registered_method_may_return_a_numpy_pair(full):
    """np.array([lo, hi]) was a range before the results were checked (and converts)."""
    from tfq8.ranges import registry  # noqa: PLC0415

    name = "_test_only_numpy_range"
    registry.register(name)(lambda h: np.array([h.min, h.max], dtype=np.float64))
    try:
        assert tfq8.convert(calibration=full, method=name)[4:8] == b"TFL3"
    finally:
        registry._METHODS.pop(name, None)  # pylint: disable=protected-access


def test_a_registered_method_may_take_a_list_option(full):
    """An option that is a list (any value the method takes) failed with Python's bare
    "unhashable type: 'list'" (the per-method cache's key), in ranges, convert and auto."""
    from tfq8.ranges import registry  # noqa: PLC0415

    name = "_test_only_list_option"
    registry.register(name)(lambda h, *, fractions=(1.0, 1.0): (
        min(0.0, h.min * fractions[0]), max(0.0, h.max * fractions[1])))
    try:
        as_list, as_tuple = (full.ranges(name, fractions=f(0.5, 0.25)) for f in (
            lambda *a: list(a), lambda *a: tuple(a)))
        assert as_list == as_tuple != full.ranges("minmax")
        blob = tfq8.convert(calibration=full, method=name, method_options={"fractions": [0.5, 0.5]})
        assert blob == tfq8.convert(calibration=full, method=name,
                                    method_options={"fractions": (0.5, 0.5)})
        tfq8.convert(calibration=full, method_options={
            "candidates": [(name, {"fractions": [0.5, 0.5]})]})
        assert list(full.last_auto.scores) == ["minmax", f"{name}(fractions=[0.5, 0.5])"]
    finally:
        registry._METHODS.pop(name, None)  # pylint: disable=protected-access


def test_a_calibration_made_by_hand_is_checked(full):
    # Garbage bytes failed deep in flatbuffers ("unpack_from requires a buffer of at least
    # 1651663211 bytes"); num_samples=0 and a path as the model were taken.
    with pytest.raises(ValueError, match=r"^model is not a TFLite model: expected the file "
                                         r"identifier b'TFL3' at bytes 4-8"):
        tfq8.Calibration(b"garbage " * 4, full.tensors, 1)
    with pytest.raises(ValueError, match=r"^model is truncated"):
        tfq8.Calibration(full.model[: len(full.model) // 2], full.tensors, 1)
    with pytest.raises(TypeError, match=r"^model must be the calibrated \.tflite flatbuffer "
                                        r"\(bytes\)\. Received: model of type str$"):
        tfq8.Calibration("model.tflite", full.tensors, 1)
    with pytest.raises(TypeError, match=r"^tensors must be a list of .*TensorStats"):
        tfq8.Calibration(full.model, [1, 2], 1)
    with pytest.raises(ValueError, match=r"^num_samples must be a positive integer\. "
                                         r"Received: num_samples=0$"):
        tfq8.Calibration(full.model, full.tensors, 0)
    assert tfq8.Calibration(full.model, full.tensors, 3).ranges("minmax") == full.ranges("minmax")
    # A tuple of tensors and a memoryview of the model were taken before the checks, and are.
    for model, tensors in ((full.model, tuple(full.tensors)), (memoryview(full.model), full.tensors)):
        assert tfq8.Calibration(model, tensors, 3).ranges("minmax") == full.ranges("minmax")


def test_weights_holding_nan_are_named_not_called_unquantizable():
    # A diverged training run: TFLite's calibrator records no range for the NaN
    # activations, and the conversion used to fail as if FULLY_CONNECTED could not
    # be quantized ("Pass allow_float=True").
    model = factories.mlp()
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    x = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    for run in (lambda: tfq8.calibrate(model, x), lambda: tfq8.convert(model, x)):
        with pytest.raises(ValueError, match=r"model's weights hold NaN or Inf \('"
                           + re.escape(kernel.path) + r"'\).* Received: a model with 1 "):
            run()


def test_an_infinite_mask_kept_as_a_weight_is_not_taken_for_diverged_weights():
    """A causal mask of 0s and -infs held as a non-trainable weight is the model's own
    constant (its softmax is finite): it calibrated and converted before NaN/Inf weights
    were refused. Inf in a trainable weight, which only a diverged run leaves, is still."""
    model = factories.causal_self_attention()
    x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32)
    assert np.isfinite(model.predict(x, verbose=0)).all()
    assert tfq8.models.nonfinite_weights(model) == []
    assert tfq8.calibrate(model, x).num_samples == 16
    kernel = model.layers[1].kernel
    kernel.assign(np.full(kernel.shape, np.inf, np.float32))
    assert tfq8.models.nonfinite_weights(model) == [kernel.path]
    with pytest.raises(ValueError, match=r"model's weights hold NaN or Inf \('"
                       + re.escape(kernel.path) + r"'\)"):
        tfq8.calibrate(model, x)

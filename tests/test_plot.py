"""tfq8.plot_ranges: histograms with each method's range, and `tfq8 convert --plot`."""

import json
import sys

import keras
import numpy as np
import pytest

import factories as F
import tfq8
from clirun import run_cli
from tfq8.harness import plot
from tfq8.stats.histogram import Histogram


@pytest.fixture(scope="module")
def calib():
    x = np.random.default_rng(3).normal(size=(400, 20)).astype(np.float32)
    x[:4] *= 40  # 1% of corrupted samples: the methods' ranges differ
    calib = tfq8.calibrate(F.mlp(seed=3), x)
    tfq8.convert(calibration=calib)  # auto: its choice is drawn bold
    return calib


def _labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_default_shows_the_most_disputed_tensors_with_every_range(calib):
    figure = tfq8.plot_ranges(calib, top=2)
    assert len(figure.axes) == 2
    proposals = {m: calib.ranges(m) for m in plot.METHODS}

    def spread(t):
        w = [p[t.index][1] - p[t.index][0] for p in proposals.values()]
        return np.log(max(w) / min(w))

    first = max(calib.tensors, key=spread)
    assert spread(first) > 0.1  # the methods do disagree on this data
    assert first.name in figure.axes[0].get_title().replace("\n", "")
    labels = _labels(figure.axes[0])
    assert labels[0] == f"{first.histogram.count:,} values"
    for m in plot.METHODS:
        lo, hi = proposals[m][first.index]
        assert any(l.startswith(f"{m} [{lo:.4g}, {hi:.4g}]") for l in labels), labels
    chosen = calib.last_auto.choice[first.index]
    assert [l for l in labels if l.endswith("(auto)")] == [
        l for l in labels if l.startswith(chosen + " ")]


def test_named_tensors_and_methods(calib):
    names = [calib.tensors[0].name, calib.tensors[-1].index]
    figure = tfq8.plot_ranges(calib, names, methods=["minmax", "kl"])
    assert len(figure.axes) == 2
    assert [len(_labels(ax)) for ax in figure.axes] == [3, 3]  # the histogram and two methods
    assert calib.tensors[-1].name in figure.axes[1].get_title().replace("\n", "")
    one = tfq8.plot_ranges(calib, np.int64(calib.tensors[-1].index), methods=["kl"])  # numpy index
    assert one.axes[0].get_title() == figure.axes[1].get_title()


def test_display_bins_keep_every_count():
    h = Histogram().update(np.random.default_rng(0).normal(size=5000))
    assert len(h.counts) > plot.DISPLAY_BINS
    counts, edges = plot._coarse(h, plot.DISPLAY_BINS)
    assert len(counts) <= plot.DISPLAY_BINS and len(edges) == len(counts) + 1
    assert counts.sum() == h.counts.sum() == 5000
    assert edges[0] == h.edges[0] and edges[-1] >= h.edges[-1] and np.all(np.diff(edges) > 0)


@pytest.mark.parametrize("ext,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                       (".pdf", b"%PDF")])
def test_written_atomically_and_deterministically(calib, tmp_path, ext, magic):
    path = tmp_path / f"ranges{ext}"
    path.write_bytes(b"old")
    tfq8.plot_ranges(calib, path=path)
    first = path.read_bytes()
    assert first.startswith(magic)
    tfq8.plot_ranges(calib, path=path)
    assert path.read_bytes() == first  # no dates in the file
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_bad_arguments(calib, tmp_path):
    cases = [
        (dict(tensors=["no_such_tensor"]), ValueError, "tensors: No calibrated tensor"),
        (dict(tensors=[]), ValueError, "at least one tensor"),
        (dict(methods=["median"]), ValueError, "Expected one of .*kl, minmax, mse, percentile"),
        (dict(methods=[]), ValueError, "at least one range method"),
        (dict(top=0), ValueError, "top must be"),
        (dict(path=tmp_path / "ranges.jpg"), ValueError, "path must end in .png, .svg, .pdf"),
        (dict(path=tmp_path), ValueError, "path is a directory"),
        # 1.0 and True drew tensor 1 (they equal its index); a TensorStats gave a ValueError
        # quoting its whole repr, peaks and all.
        (dict(tensors=[float(calib.tensors[1].index)]), TypeError, r"tensors: A calibrated tensor "
         r"is named by its name \(str\) or index \(int\). Received: \d+.0 of type float"),
        (dict(tensors=[True]), TypeError, "Received: True of type bool"),
        (dict(tensors=calib.tensors[:2]), TypeError, r"a TensorStats \(pass its .name or .index\)"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            tfq8.plot_ranges(calib, **kwargs)
    with pytest.raises(TypeError, match="calibration must be a tfq8.Calibration.*bytes"):
        tfq8.plot_ranges(calib.model)
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_says_how_to_install(calib, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "tfq8\[plot\]"'):
        tfq8.plot_ranges(calib)


def test_cli_convert_plot(tmp_path, capfd):
    model = F.cnn(seed=4)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", F.images(32, seed=4))
    argv = ["convert", tmp_path / "m.keras", "--data", tmp_path / "x.npy", "--progress=false"]
    code, out, err = run_cli(capfd, *argv, "--plot", tmp_path / "r.png", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["plot"] == str(tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    # A wrong extension fails at once, before calibrating, and writes nothing.
    (tmp_path / "m_int8.tflite").unlink()
    code, out, err = run_cli(capfd, *argv, "--plot", tmp_path / "r.gif")
    assert code == 1 and out == ""
    assert "--plot must end in .png, .svg, .pdf" in err and "calibrating" not in err
    assert not (tmp_path / "m_int8.tflite").exists() and not (tmp_path / "r.gif").exists()


def test_tensors_with_the_same_values_get_one_panel():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    calib = tfq8.calibrate(model, F.images(32, shape=(8, 8, 1), seed=2))  # Flatten: a RESHAPE
    shown = [ax.get_title().replace("\n", "") for ax in tfq8.plot_ranges(
        calib, top=len(calib.tensors)).axes]
    hists = [t.histogram for t in calib.tensors]
    distinct = [h for i, h in enumerate(hists) if h not in hists[:i]]
    assert len(distinct) < len(hists) and len(shown) == len(distinct)


def test_a_fixed_range_is_drawn_as_the_model_uses_it(calib):
    name = calib.tensors[-1].name
    tfq8.convert(calibration=calib, ranges={name: (-8.0, 8.0)})
    assert calib.last_auto.choice[calib.tensors[-1].index] == "fixed"
    assert calib.last_auto.ranges[calib.tensors[-1].index] == (-8.0, 8.0)
    labels = _labels(tfq8.plot_ranges(calib, [name]).axes[0])
    assert "fixed [-8, 8]" in labels and not any(l.endswith("(auto)") for l in labels)
    tfq8.convert(calibration=calib)  # the module's other tests see auto's own choice again


def test_auto_choice_among_other_candidates_is_drawn_bold(calib, monkeypatch):
    # auto chose a candidate the four built-in methods at their defaults are not (a method
    # of the user's, a (name, options) pair): its range was drawn nowhere, nothing bold.
    from tfq8.ranges import registry

    monkeypatch.setitem(registry._METHODS, "tenth", lambda h: (h.min / 10, h.max / 10))
    try:
        tfq8.convert(calibration=calib, method_options={
            "candidates": ["tenth", ("percentile", {"percentile": 99.0})]})
        report = calib.last_auto
        assert report.method == "percentile(percentile=99.0)"
        assert report.candidates[report.method] == ("percentile", {"percentile": 99.0})
        figure = tfq8.plot_ranges(calib, top=len(calib.tensors))
        assert len(figure.axes) > 1
        for ax in figure.axes:
            title = "".join(ax.get_title().split())  # wrapped at the ;
            t = max((t for t in calib.tensors if t.name in title), key=lambda t: len(t.name))
            name, options = report.candidates[report.choice[t.index]]
            lo, hi = calib.ranges(name, **options)[t.index]
            labels = _labels(ax)
            assert [l for l in labels if l.endswith("(auto)")] == [
                f"{report.choice[t.index]} [{lo:.4g}, {hi:.4g}] (auto)"], labels
            assert any(l.startswith("tenth [") for l in labels)
        # Methods named: those alone, as before.
        labels = _labels(tfq8.plot_ranges(calib, [calib.tensors[-1].name], methods=["kl"]).axes[0])
        assert len(labels) == 2 and not any(l.endswith("(auto)") for l in labels)
    finally:
        tfq8.convert(calibration=calib)  # the module's other tests see auto's own choice again


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": None}, r"^methods must be range method names, such as \['minmax', 'kl'\]\. "
                        r"Received: methods=None$"),
    ({"methods": 3}, r"^methods must be range method names.*Received: methods=3$"),
    ({"tensors": 3.5}, r"^tensors must be tensor names or indices.*Received: tensors=3\.5$"),
])
def test_arguments_that_are_not_lists_are_named(calib, kwargs, match):
    # Python's "'NoneType' object is not iterable" named neither.
    with pytest.raises(TypeError, match=match):
        tfq8.plot_ranges(calib, **kwargs)

"""`plot_ranges`: see a tensor's histogram with the range each method picks.

TFLite's converter hides its ranges; `tfq8.inspect` lists them and this draws
them: one panel per tensor, with the histogram of its calibration values (log
counts, so a single outlier stays visible) and the `(min, max)` each range
method proposes, `auto`'s choice drawn bold. By default it shows the tensors
where the methods disagree most, which is where the choice of method matters.

Needs matplotlib (`pip install "tfq8[plot]"`); nothing else in tfq8 does.

Example:
    >>> calib = tfq8.calibrate(model, x_train[:500])
    >>> blob = tfq8.convert(calibration=calib)             # auto: its choice is drawn bold
    >>> fig = tfq8.plot_ranges(calib, path="ranges.png")   # a matplotlib Figure
"""

from __future__ import annotations

import io
import itertools
import math
import os
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np

from tfq8 import _args
from tfq8.calibration import FIXED_SCALE_OPS, Calibration, atomic_write, check_output_path

METHODS = ("minmax", "percentile", "kl", "mse")
_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
# No dates (and fixed SVG ids), so the same calibration plots to the same bytes.
_METADATA = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
DISPLAY_BINS = 200
_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def plot_ranges(calibration: Calibration, tensors: Sequence[str | int] | None = None, *,
                methods: Sequence[str] = METHODS, top: int = 6,
                path: str | os.PathLike | None = None) -> Any:
    """Histograms of calibrated tensors with each method's range drawn on them.

    Args:
        calibration: A `Calibration` (from `tfq8.calibrate`, a
            `CalibrationCallback`, or `Calibration.load`). After a conversion
            with `method="auto"`, the range `auto` chose is drawn bold.
        tensors: Tensor names, or TFLite tensor indices (`TensorStats.index`;
            `Calibration.tensors` lists both);
            default: the `top` tensors whose ranges differ most between
            `methods` (the widest over the narrowest), one of each set of
            tensors holding the same values (a RESHAPE's input and output).
        methods: Range methods to draw (`tfq8.ranges.available_methods()`),
            each with its default options. By default the four built-in ones
            and, after an `auto` that compared other candidates
            (`method_options={"candidates": [...]}`: a method of your own, a
            `(name, options)` pair), those too, under auto's labels for them,
            so that auto's choice is drawn whatever it was. After `auto`, a
            fixed range (set with `ranges=`, or learned by QAT) is drawn too,
            in black.
        top: How many tensors to show when `tensors` is not given.
        path: Also write the figure here, atomically; `.png`, `.svg` or `.pdf`.

    Returns:
        A `matplotlib.figure.Figure`, made without pyplot (no window opens,
            no global figure is kept); `figure.savefig` writes it elsewhere.

    Raises:
        ImportError: If matplotlib is not installed.
        TypeError: If `calibration` is not a `Calibration`.
        ValueError: For an unknown tensor or method, or an unsupported `path`
            extension.

    Example:
        >>> fig = tfq8.plot_ranges(calib, [calib.tensors[1].name], methods=["minmax", "kl"])
        >>> fig.savefig("conv1.png")
    """
    if not isinstance(calibration, Calibration):
        raise TypeError("calibration must be a tfq8.Calibration (from tfq8.calibrate or "
                        f"Calibration.load). Received: {type(calibration).__name__}")
    default = methods is METHODS
    methods = _check_methods(methods)
    if path is not None:
        check_plot_path(path)
    report = calibration.last_auto
    proposals = {m: calibration.ranges(m) for m in methods}
    if default and report is not None:  # auto's other candidates: its choice may be one
        for label, (name, options) in report.candidates.items():
            if label not in proposals:
                proposals[label] = calibration.ranges(name, **options)
    if tensors is None:
        chosen = _most_disputed(calibration, proposals, _args.integer("top", top, minimum=1))
    else:
        chosen = [_tensor(calibration, k) for k in _as_list(tensors)]
    auto = report.choice if report is not None else {}
    fixed = {i: report.ranges[i] for i, m in auto.items() if m == "fixed" and i in report.ranges}
    figure = _draw(chosen, proposals, auto, fixed)
    if path is not None:
        save_figure(figure, path)
    return figure


def check_plot_path(path: str | os.PathLike, *, arg: str = "path",
                    inputs: Mapping[str, Any] | None = None) -> str:
    """Checks, before any work, that a figure can be written to `path` (and
    would not overwrite one of `inputs`, as `check_output_path`).

    Returns:
        The file format (`png`, `svg` or `pdf`), from the extension.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError, TypeError: As `check_output_path`, or for another extension.
    """
    check_output_path(path, arg=arg, inputs=inputs)
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"{arg} must end in {', '.join(_FORMATS)}. Received: {arg}={path!r}")
    _figure_class()
    return _FORMATS[ext]


def save_figure(figure: Any, path: str | os.PathLike, *, arg: str = "path") -> None:
    """Writes `figure` to `path` atomically, in the format its extension names."""
    fmt = check_plot_path(path, arg=arg)
    import matplotlib  # noqa: PLC0415 - optional dependency

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "tfq8"}):  # fixed SVG ids
        figure.savefig(buffer, format=fmt, metadata=_METADATA[fmt], dpi=100)
    atomic_write(path, buffer.getvalue(), arg=arg)


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        raise ImportError('tfq8.plot_ranges needs matplotlib: pip install "tfq8[plot]" '
                          '(or pip install matplotlib)') from e
    return Figure


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    from tfq8.ranges import registry  # noqa: PLC0415

    if isinstance(methods, str):
        methods = (methods,)
    try:
        methods = tuple(methods)
    except TypeError:
        raise TypeError("methods must be range method names, such as ['minmax', 'kl']. "
                        f"Received: methods={methods!r}") from None
    if not methods:
        raise ValueError("methods must name at least one range method. Received: methods=()")
    for m in methods:
        registry.get_method(m)  # raises naming the valid methods
    return methods


def _as_list(tensors: Sequence[str | int]) -> list[str | int]:
    if isinstance(tensors, (str, int, np.integer)):
        return [tensors]
    try:
        out = list(tensors)
    except TypeError:
        raise TypeError("tensors must be tensor names or indices (or None for the most disputed "
                        f"ones). Received: tensors={tensors!r}") from None
    if not out:
        raise ValueError("tensors must name at least one tensor (or be None for the most "
                         "disputed ones). Received: tensors=[]")
    return out


def _tensor(calibration: Calibration, key: str | int) -> Any:
    try:
        return calibration.tensor(key)
    except KeyError as e:
        raise ValueError(f"tensors: {e.args[0]}. Received: {key!r}") from None
    except TypeError as e:
        raise TypeError(f"tensors: {e}") from None


def _most_disputed(calibration: Calibration, proposals: dict[str, dict[int, tuple[float, float]]],
                   top: int) -> list[Any]:
    """The `top` tensors whose widest proposed range is furthest above the narrowest,
    skipping those with the same values as one already chosen."""
    def spread(t: Any) -> float:
        widths = [hi - lo for lo, hi in (p[t.index] for p in proposals.values())]
        return math.log(max(widths) / min(widths)) if min(widths) > 0 else 0.0

    shown: list[Any] = []
    for t in sorted(calibration.tensors, key=lambda t: (-spread(t), t.index)):
        # A RESHAPE's output holds its input's values: one panel for both.
        if len(shown) < top and not any(t.histogram == s.histogram for s in shown):
            shown.append(t)
    return shown


def _coarse(h: Any, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The histogram's counts and edges in at most `bins` bins: neighbours summed
    (the display only; the methods see every bin)."""
    group = max(1, math.ceil(len(h.counts) / bins))
    counts = np.pad(h.counts, (0, -len(h.counts) % group)).reshape(-1, group).sum(axis=1)
    edges = h.edges[::group]
    if len(edges) == len(counts):  # the last group was padded: its right edge
        edges = np.append(edges, edges[-1] + group * h.width)
    return counts, edges


def _draw(tensors: Sequence[Any], proposals: dict[str, dict[int, tuple[float, float]]],
          auto: dict[int, str], fixed: dict[int, tuple[float, float]]) -> Any:
    cols = 1 if len(tensors) == 1 else 2
    rows = math.ceil(len(tensors) / cols)
    figure = _figure_class()(figsize=(6.4 * cols, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, t in zip(axes, tensors):
        counts, edges = _coarse(t.histogram, DISPLAY_BINS)
        ax.stairs(counts, edges, fill=True, color="0.75",
                  label=f"{t.histogram.count:,} values")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        for color, (method, ranges) in zip(itertools.cycle(_COLORS), proposals.items()):
            lo, hi = ranges[t.index]
            bold = auto.get(t.index) == method
            for x in (lo, hi):
                ax.axvline(x, color=color, linewidth=2.5 if bold else 1.2,
                           linestyle="-" if bold else "--")
            ax.plot([], [], color=color, linewidth=2.5 if bold else 1.2,
                    linestyle="-" if bold else "--",
                    label=f"{method} [{lo:.4g}, {hi:.4g}]" + (" (auto)" if bold else ""))
        if t.index in fixed:  # what the model uses, whatever the methods say
            lo, hi = fixed[t.index]
            for x in (lo, hi):
                ax.axvline(x, color="black", linewidth=2.5)
            ax.plot([], [], color="black", linewidth=2.5, label=f"fixed [{lo:.4g}, {hi:.4g}]")
        fixed_scale = "; TFLite fixes its int8 scale" if t.producer in FIXED_SCALE_OPS else ""
        title = f"{t.name.replace(';', '; ')} ({t.producer}{fixed_scale})"  # wraps at the ;
        ax.set_title("\n".join(textwrap.wrap(title, 70, break_on_hyphens=False)), fontsize=8)
        ax.set_xlabel("value")
        ax.set_ylabel("count")
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(tensors):]:
        figure.delaxes(ax)
    return figure

"""Run the calibrated float model in LiteRT and feed one histogram per tensor.

The tensors are the TFLite graph's own (after batch-norm folding and activation
fusion), exactly those the quantizer will quantize: every tensor to which
TFLite's calibrator attached a `min/max`, model inputs and outputs included.
Batches are run at once where the model's batch dimension allows it, on
XNNPACK's kernels when a one-sample probe shows they expose every tensor with
the builtin kernels' values (to float rounding).

The bins come from this pass; the exact extremes come from TFLite's own
calibrator, which saw the same samples. The two agree up to float rounding
(TFLite's calibrator and LiteRT's kernels may round differently in the last
bit); taking the calibrator's makes `minmax` reproduce the converter bit for bit.

Example:
    >>> stats = collect(calibrated_model, rep)
    >>> stats[0].histogram
    Histogram(count=..., min=..., max=..., ...)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
from typing import Sequence

import numpy as np

from tfq8 import _tflite
from tfq8.data import RepresentativeDataset
from tfq8.harness.interpreter import batch_for, make_interpreter, size_inputs
from tfq8.stats.histogram import DEFAULT_MAX_BINS, Histogram

_log = logging.getLogger("tfq8")

_BATCH_BYTES = 64 << 20


@dataclasses.dataclass
class TensorStats:
    """Statistics of one activation tensor of the TFLite graph.

    Attributes:
        index: Tensor index in subgraph 0 of the calibrated model.
        name: Tensor name in the TFLite graph.
        histogram: Its histogram over all calibration samples.
        producer: Op that writes it (such as `CONV_2D`), or `INPUT`.
        peaks: Peak |value| of the tensor for each tracked calibration sample
            (the samples a `Calibration` keeps), or None if none were tracked.
    """

    index: int
    name: str
    histogram: Histogram
    producer: str
    peaks: np.ndarray | None = None


def _interpreter(model: bytes, *, xnnpack: bool):
    """LiteRT on every core with every tensor preserved (XNNPACK or builtin kernels)."""
    return make_interpreter(model, backend="xnnpack" if xnnpack else "builtin",
                            num_threads=os.cpu_count() or 1, preserve_all_tensors=True,
                            verified=True, allocate=False)  # sized from the data below


def resize_batch(interpreter, batch: int, rep: RepresentativeDataset) -> bool:
    """Sizes every input for `batch` samples of `rep`; False if the model forbids it.

    The other dimensions follow the samples, so inputs whose height and width
    are dynamic (`keras.Input((None, None, 3))`) run at the data's size.
    """
    details = interpreter.get_input_details()
    if any(len(d["shape_signature"]) == 0 or d["shape_signature"][0] not in (-1, batch)
           for d in details):
        return False
    try:
        size_inputs(interpreter, [[batch, *a.shape[1:]] for a in rep.inputs])
    except (RuntimeError, ValueError):
        return False
    return True


def collect(
    calibrated: bytes,
    rep: RepresentativeDataset,
    *,
    max_bins: int = DEFAULT_MAX_BINS,
    batch_size: int | None = None,
    track: Sequence[int] = (),
) -> list[TensorStats]:
    """Histograms of every calibrated activation tensor over `rep`.

    Args:
        calibrated: Calibrated float model (`_tflite.calibrate_only`).
        rep: The samples the calibrator saw.
        max_bins: Histogram resolution.
        batch_size: Samples per interpreter run (default: as many as fit in
            about 64 MiB of activations, at most 256).
        track: Sample indices (increasing) whose per-tensor peak |value| is
            recorded in `TensorStats.peaks` (a tensor without a batch
            dimension gets zeros).

    Returns:
        One `TensorStats` per calibrated tensor, by tensor index.

    Raises:
        ValueError: If a tensor holds NaN or Inf for some sample.
    """
    parsed = _tflite.read_model(calibrated)
    sg = parsed.subgraphs[0]
    ranges = _tflite.calibrated_ranges(calibrated)
    producers = {int(o): _tflite.op_name(parsed, op) for op in sg.operators for o in op.outputs}
    stats = {
        i: TensorStats(i, _tflite.tensor_name(sg.tensors[i]), Histogram(max_bins),
                       producers.get(i, "INPUT"), np.zeros(len(track)) if len(track) else None)
        for i in sorted(ranges)
    }
    xnnpack = _xnnpack_agrees(calibrated, rep, sorted(stats))
    interpreter = _interpreter(calibrated, xnnpack=xnnpack)
    batch = batch_size or batch_for(parsed, _BATCH_BYTES, 256, rep.inputs)
    batch = min(batch, len(rep))
    if batch > 1 and not resize_batch(interpreter, batch, rep):
        _log.info("The model's batch dimension is fixed; collecting one sample at a time.")
        batch = 1
    if batch == 1:
        resize_batch(interpreter, 1, rep) or interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        _run_batches(interpreter, inputs, rep, batch, stats, pool, np.asarray(track, np.int64))
    for i, s in stats.items():
        lo, hi = ranges[i]
        _adopt_extremes(s.histogram, lo, hi, s.name)
    return [stats[i] for i in sorted(stats)]


def _run_batches(interpreter, inputs, rep: RepresentativeDataset, batch: int,
                 stats: dict[int, TensorStats], pool, track: np.ndarray) -> None:
    """Runs every batch and adds each preserved tensor to its histogram."""
    done = 0
    for arrays in rep.batches(batch):
        n = len(arrays[0])
        if n != batch:  # the last, shorter batch
            resize_batch(interpreter, n, rep)
            batch = n
        for d, a in zip(inputs, arrays):
            interpreter.set_tensor(d["index"], a)
        interpreter.invoke()

        lo, hi = np.searchsorted(track, [done, done + n])
        rows = track[lo:hi] - done

        def update(s: TensorStats, first: int = done, count: int = n) -> None:
            try:
                values = interpreter.tensor(s.index)()  # a view, no copy
                s.histogram.update(values)
                if len(rows) and values.ndim and values.shape[0] == count:
                    picked = values[rows].reshape(len(rows), -1)
                    if picked.size:
                        s.peaks[lo:hi] = np.abs(picked).max(axis=1)
            except ValueError as e:
                raise ValueError(
                    f"Tensor {s.name!r} (index {s.index}, output of {s.producer}) is not "
                    f"finite for samples {first}..{first + count - 1}: {e} Check the model "
                    "and data."
                ) from None

        # numpy releases the GIL while binning: one histogram per thread.
        list(pool.map(update, stats.values()))
        done += n


def _xnnpack_agrees(calibrated: bytes, rep: RepresentativeDataset, tracked: list[int]) -> bool:
    """Whether XNNPACK's float kernels may fill the histograms.

    XNNPACK runs the float pass several times faster than the builtin kernels
    and, with all tensors preserved, still exposes every intermediate tensor.
    This is checked rather than assumed: one sample runs on both, and every
    tracked tensor must agree to float rounding; otherwise the builtin kernels
    are used.
    """
    first = [a[:1] for a in rep.inputs]
    values = []
    for xnnpack in (False, True):
        try:
            it = _interpreter(calibrated, xnnpack=xnnpack)
            resize_batch(it, 1, rep) or it.allocate_tensors()
            for d, a in zip(it.get_input_details(), first):
                it.set_tensor(d["index"], a)
            it.invoke()
            values.append([it.get_tensor(i) for i in tracked])
        except (RuntimeError, ValueError):
            return False
    for i, a, b in zip(tracked, *values):
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-4 * scale + 1e-30):
            _log.debug("XNNPACK and the builtin kernels disagree on tensor %d; "
                       "collecting with the builtin kernels.", i)
            return False
    return True


def _adopt_extremes(h: Histogram, lo: float, hi: float, name: str) -> None:
    """Replaces the extremes by TFLite's calibrator's (same data, its rounding).

    They differ by float rounding, except where the calibrator logged a tensor
    after an in-place op (a residual ADD) overwrote it: then its range is the
    ADD output's and wider than the tensor's own. The counts keep the true
    values, so every method but `minmax` sees the tensor as it is.
    """
    tol = 1e-4 * max(abs(h.min), abs(h.max), 1e-30)
    if not (math.isclose(lo, h.min, abs_tol=tol) and math.isclose(hi, h.max, abs_tol=tol)):
        _log.debug(
            "Tensor %r takes [%g, %g]; TFLite's calibrator recorded [%g, %g] (the "
            "converter's range, kept as the extremes).", name, h.min, h.max, lo, hi)
    h.set_extremes(lo, hi)

"""One pass of the samples through a float model in LiteRT, filling a histogram per tensor.

No TensorFlow here: the statistics worker process (`tfq8.stats.worker`) runs
this same code while TFLite's calibrator runs in the parent. `collect`
chooses the tensors and, in-process, calls `sweep` directly.

Batches run at once where the model's batch dimension allows it, on XNNPACK's
kernels when a one-sample probe shows they expose every tensor with the
builtin kernels' values (to float rounding), else on the builtin kernels.

Example:
    >>> stats = {i: TensorStats(i, f"t{i}", Histogram(), "CONV_2D") for i in tensor_ids}
    >>> sweep(float_model, [x], stats, batch=64, threads=2)
    >>> stats[tensor_ids[0]].histogram.count
    ...
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Mapping, Sequence

import numpy as np

from tfq8.data import fixed_batch
from tfq8.harness.litert import allocate, invoke, new_interpreter, size_inputs
from tfq8.stats.histogram import Histogram

_log = logging.getLogger("tfq8")


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
    peaks: np.ndarray | None = dataclasses.field(default=None, repr=False)  # one per kept sample


def sweep(model: bytes, inputs: Sequence[np.ndarray], stats: Mapping[int, TensorStats], *,
          batch: int, threads: int, track: Sequence[int] = (),
          probe: Sequence[int] | None = None) -> None:
    """Runs every sample through `model` and adds each tensor's values to `stats`.

    Args:
        model: A float `.tflite` model (already verified).
        inputs: The samples, one array per model input, in input order.
        stats: Tensor index -> its `TensorStats` (histogram filled in place;
            `peaks`, if not None, gets one entry per tracked sample).
        batch: Samples per invoke where the batch dimension may be resized.
        threads: Kernel threads, and threads filling histograms.
        track: Sample indices (increasing) whose per-tensor peak |value| is
            recorded in `peaks` (a tensor without a batch dimension gets zeros).
        probe: The tensors on which XNNPACK must agree with the builtin
            kernels for XNNPACK to be used (default: those in `stats`).

    Raises:
        ValueError: If a tensor holds NaN or Inf for some sample, naming it.
    """
    xnnpack = xnnpack_agrees(model, inputs, sorted(stats) if probe is None else list(probe))
    interpreter = _interpreter(model, xnnpack=xnnpack, threads=threads)
    fixed = _fixed_batch(interpreter)
    if fixed is not None:  # pipeline.calibrate passes whole batches
        if len(inputs[0]) % fixed:
            raise ValueError(f"The model's batch size is fixed at {fixed}: the samples must "
                             f"fill whole batches. Received {len(inputs[0])} samples")
        batch = fixed
    batch = max(1, min(batch, len(inputs[0])))
    if batch > 1 and not resize_batch(interpreter, batch, inputs):
        _log.info("The model's batch dimension cannot be resized; collecting one sample at "
                  "a time.")
        batch = 1
    if batch == 1:
        resize_batch(interpreter, 1, inputs) or allocate(interpreter)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        _run_batches(interpreter, inputs, batch, stats, pool, np.asarray(track, np.int64))


def _interpreter(model: bytes, *, xnnpack: bool, threads: int):
    """LiteRT with every tensor preserved (XNNPACK or builtin kernels), not yet sized."""
    return new_interpreter(model, backend="xnnpack" if xnnpack else "builtin",
                           num_threads=threads, preserve_all_tensors=True)


def _fixed_batch(interpreter) -> int | None:
    return fixed_batch([d["shape_signature"] for d in interpreter.get_input_details()])


def resize_batch(interpreter, batch: int, inputs: Sequence[np.ndarray]) -> bool:
    """Sizes every input for `batch` samples of `inputs`; False if the model forbids it.

    The other dimensions follow the samples, so inputs whose height and width
    are dynamic (`keras.Input((None, None, 3))`) run at the data's size.
    """
    details = interpreter.get_input_details()
    if any(len(d["shape_signature"]) == 0 or d["shape_signature"][0] not in (-1, batch)
           for d in details):
        return False
    try:
        size_inputs(interpreter, [[batch, *a.shape[1:]] for a in inputs])
    except (RuntimeError, ValueError):
        return False
    return True


def _run_batches(interpreter, inputs: Sequence[np.ndarray], batch: int,
                 stats: Mapping[int, TensorStats], pool, track: np.ndarray) -> None:
    """Runs every batch and adds each preserved tensor to its histogram."""
    details = interpreter.get_input_details()
    total = len(inputs[0])
    for done in range(0, total, batch):
        arrays = [a[done : done + batch] for a in inputs]
        n = len(arrays[0])
        if n != batch:  # the last, shorter batch
            resize_batch(interpreter, n, inputs)
            batch = n
        for d, a in zip(details, arrays):
            interpreter.set_tensor(d["index"], a)
        invoke(interpreter)

        lo, hi = np.searchsorted(track, [done, done + n])
        rows = track[lo:hi] - done

        def update(s: TensorStats, first: int = done, count: int = n) -> None:
            try:
                values = interpreter.tensor(s.index)()  # a view, no copy
                s.histogram.update(values)
                if s.peaks is not None and len(rows) and values.ndim and values.shape[0] == count:
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


def xnnpack_agrees(model: bytes, inputs: Sequence[np.ndarray], tracked: list[int]) -> bool:
    """Whether XNNPACK's float kernels may fill the histograms.

    XNNPACK runs the float pass several times faster than the builtin kernels
    and, with all tensors preserved, still exposes every intermediate tensor.
    This is checked rather than assumed: one sample (one batch) runs on both, and every
    tracked tensor must agree to float rounding; otherwise the builtin kernels
    are used.
    """
    values = []
    for xnnpack in (False, True):
        try:
            it = _interpreter(model, xnnpack=xnnpack, threads=1)
            first = [a[: _fixed_batch(it) or 1] for a in inputs]
            resize_batch(it, len(first[0]), first) or allocate(it)
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

"""Run the calibrated float model in LiteRT and feed one histogram per tensor.

The tensors are the TFLite graph's own (after batch-norm folding and activation
fusion), exactly those the quantizer will quantize: every tensor to which
TFLite's calibrator attached a `min/max`, model inputs and outputs included.
The pass itself is `tfq8.stats.sweep`. Where it can, `BackgroundCollect`
runs it in a worker process (`tfq8.stats.worker`) on the float model while
TFLite's calibrator runs on the same samples, so on two or more cores the pass
costs almost no time; otherwise `collect` runs it here, after the calibrator.

The bins come from this pass; the exact extremes come from TFLite's own
calibrator, which saw the same samples. The two agree up to float rounding
(TFLite's calibrator and LiteRT's kernels may round differently in the last
bit); taking the calibrator's makes `minmax` reproduce the converter bit for bit.
Where the calibrator logged a masked softmax's mask over the attention scores
(an in-place ADD wrote it there first), the scores keep their own extremes, and
`with_own_extremes` writes them into the calibrated model too.

Example:
    >>> stats = collect(calibrated_model, rep)
    >>> stats[0].histogram
    Histogram(count=..., min=..., max=..., ...)
    >>> with BackgroundCollect(rep) as bg:                   # or: beside the calibrator
    ...     calibrated = _tflite.calibrate_only(converter, rep, on_float_model=bg.submit)
    ...     stats = bg.result(calibrated) or collect(calibrated, rep)
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Sequence

import numpy as np

from tfq8 import _tflite
from tfq8.data import RepresentativeDataset
from tfq8.harness.interpreter import batch_for, tensor_bytes_per_sample
from tfq8.stats.histogram import DEFAULT_MAX_BINS, Histogram
from tfq8.stats.sweep import TensorStats, sweep
from tfq8.stats import worker as _worker

_log = logging.getLogger("tfq8")

_BATCH_BYTES = 64 << 20
# Larger calibration inputs are not copied to a worker process (memory), but collected here.
WORKER_MAX_INPUT_BYTES = 256 << 20
# A pass over fewer tensor bytes than this (tiny models) takes less time than handing it over.
WORKER_MIN_TENSOR_BYTES = 32 << 20
# Once the calibrator is done, the worker's answer is awaited at most this many times as
# long as the calibrator took (the worker runs the same samples in batches, usually faster
# than the calibrator one by one), and never less than WORKER_MIN_WAIT_S: a worker that is
# stuck (stopped, thrashing, deadlocked) is then given up and the pass runs here.
WORKER_WAIT_FACTOR = 10.0
WORKER_MIN_WAIT_S = 60.0

# A calibrator's extreme this far out that the tensor never reached is a leaked mask.
LEAKED_FILL = 1e9

__all__ = ["BackgroundCollect", "TensorStats", "collect", "with_own_extremes"]


def collect(
    calibrated: bytes,
    rep: RepresentativeDataset,
    *,
    max_bins: int = DEFAULT_MAX_BINS,
    batch_size: int | None = None,
    track: Sequence[int] = (),
) -> list[TensorStats]:
    """Histograms of every calibrated activation tensor over `rep`, in this process.

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
    ranges = _tflite.calibrated_ranges(calibrated)
    labels = _labels(parsed)
    stats = {i: TensorStats(i, labels[i][0], Histogram(max_bins), labels[i][1],
                            np.zeros(len(track)) if len(track) else None)
             for i in sorted(ranges)}
    batch = batch_size or batch_for(parsed, _BATCH_BYTES, 256, rep.inputs)
    sweep(calibrated, rep.inputs, stats, batch=batch, threads=os.cpu_count() or 1, track=track,
          probe=_activations(parsed))  # the worker's set: both paths choose kernels alike
    return _finish(stats, ranges)


class BackgroundCollect:
    """`collect`, run by a worker process while TFLite's calibrator runs.

    Start it before the conversion, pass `submit` as
    `_tflite.calibrate_only(..., on_float_model=...)`, then call `result` with
    the calibrated model. `result` returns None whenever the worker was not
    used or failed (a debug log says why): then call `collect`. The histograms
    are the same either way (`sweep` on the same graph; the calibrator only
    adds min/max to it).

    Args:
        rep: The calibration samples.
        max_bins, batch_size, track: As for `collect`.
    """

    def __init__(self, rep: RepresentativeDataset, *, max_bins: int = DEFAULT_MAX_BINS,
                 batch_size: int | None = None, track: Sequence[int] = ()):
        self.rep, self.max_bins, self.batch_size = rep, max_bins, batch_size
        self.track = np.asarray(track, np.int64)
        self._worker: _worker.StatsWorker | None = None
        self._labels: dict[int, tuple[str, str]] | None = None
        self._submitted_at: float | None = None  # when the calibrator got the float model
        reason = self._why_not()
        if reason:
            _log.debug("Statistics pass after the calibrator, in this process: %s.", reason)
            return
        try:
            self._worker = _worker.StatsWorker.start()
        except Exception as e:  # noqa: BLE001 - the in-process pass is the fallback
            _log.debug("Statistics pass in this process: %s", e)

    def _why_not(self) -> str | None:
        if os.environ.get(_worker.ENV, "1") == "0":
            return f"{_worker.ENV}=0"
        if (os.cpu_count() or 1) < 2:
            return "one core"
        size = sum(a.nbytes for a in self.rep.inputs)
        if size > WORKER_MAX_INPUT_BYTES:
            return f"{size} bytes of samples are not copied to a worker"
        return None

    def submit(self, float_model: bytes) -> None:
        """Sends the converter's float model to the worker (the calibrator's input)."""
        if self._worker is None:
            return
        try:  # called from inside the converter: never let this path break a conversion
            parsed = _tflite.read_model(float_model)
            volume = tensor_bytes_per_sample(parsed, self.rep.inputs) * len(self.rep)
            if volume < WORKER_MIN_TENSOR_BYTES:
                _log.debug("Statistics pass after the calibrator, in this process: %d tensor "
                           "bytes in all are quicker here.", volume)
                self._stop()
                return
            self._labels = _labels(parsed)
            tensors = [(i, *self._labels[i]) for i in _activations(parsed)]
            batch = self.batch_size or batch_for(parsed, _BATCH_BYTES, 256, self.rep.inputs)
            self._worker.submit(float_model, self.rep.inputs, tensors, batch=batch,
                                max_bins=self.max_bins, track=self.track,
                                threads=max(1, (os.cpu_count() or 1) - 1))
            self._submitted_at = time.monotonic()
        except Exception as e:  # noqa: BLE001 - the in-process pass is the fallback
            _log.debug("Statistics worker not used: %s", e)
            self._labels = None
            self._stop()

    def result(self, calibrated: bytes) -> list[TensorStats] | None:
        """The worker's `TensorStats` for the calibrated model, or None (use `collect`).

        Errors in the worker, including bad data (a tensor that is not finite),
        also give None: `collect` then raises its own error for them. So does a
        worker that has not answered `WORKER_WAIT_FACTOR` times the calibrator's
        time after the calibrator finished (at least `WORKER_MIN_WAIT_S`), with a
        warning: it is stuck, and waiting on would hang the conversion.
        """
        if self._worker is None or self._labels is None:
            return None
        ranges = _tflite.calibrated_ranges(calibrated)
        calibrator_s = time.monotonic() - (self._submitted_at or time.monotonic())
        wait_s = max(WORKER_MIN_WAIT_S, WORKER_WAIT_FACTOR * calibrator_s)
        try:
            found = self._worker.result(timeout=wait_s)
        except _worker.WorkerTimeout as e:
            _log.warning("Statistics worker: %s (TFLite's calibrator took %.1f s); collecting "
                         "in this process instead.", e, calibrator_s)
            return None
        except (_worker.WorkerError, ValueError) as e:
            _log.debug("Statistics worker: %s; collecting in this process.", e)
            return None
        finally:
            self._stop()
        labels = _labels(_tflite.read_model(calibrated))
        missing = [i for i in ranges if i not in found or labels.get(i) != self._labels.get(i)]
        if missing:  # the calibrator's graph is not the float graph the worker saw
            _log.debug("The calibrated model differs from the converter's float model at "
                       "tensors %s; collecting in this process.", missing[:5])
            return None
        stats = {}
        for i in sorted(ranges):
            s = found[i]
            s.name, s.producer = labels[i]
            stats[i] = s
        return _finish(stats, ranges)

    def _stop(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> "BackgroundCollect":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop()


def _labels(parsed: Any) -> dict[int, tuple[str, str]]:
    """Tensor index -> (name, producing op or INPUT) for subgraph 0."""
    sg = parsed.subgraphs[0]
    producers = {int(o): _tflite.op_name(parsed, op) for op in sg.operators for o in op.outputs}
    return {i: (_tflite.tensor_name(t), producers.get(i, "INPUT"))
            for i, t in enumerate(sg.tensors)}


def _activations(parsed: Any) -> list[int]:
    """Float32 tensors of subgraph 0 that hold no constant data: what the calibrator may log."""
    sg = parsed.subgraphs[0]
    out = []
    for i, t in enumerate(sg.tensors):
        buffer = parsed.buffers[t.buffer] if 0 < t.buffer < len(parsed.buffers) else None
        constant = buffer is not None and buffer.data is not None and len(buffer.data) > 0
        if t.type == _tflite.schema.TensorType.FLOAT32 and not constant:
            out.append(i)
    return out


def _finish(stats: dict[int, TensorStats], ranges: dict) -> list[TensorStats]:
    """Adopts the calibrator's extremes; drops the tensors LiteRT never showed.

    Fused ops keep some tensors to themselves (the gate intermediates of
    `UNIDIRECTIONAL_SEQUENCE_LSTM`): TFLite's calibrator records their range,
    but no interpreter exposes their values. They keep the converter's range.
    """
    unseen = [s.name for s in stats.values() if s.histogram.count == 0]
    if unseen:
        _log.info("%d tensor(s) are internal to fused ops and not visible to LiteRT; they keep "
                  "the converter's own range: %s", len(unseen), unseen[:8])
    kept = [stats[i] for i in sorted(stats) if stats[i].histogram.count]
    for s in kept:
        lo, hi = ranges[s.index]
        _adopt_extremes(s.histogram, lo, hi, s.name)
    return kept


def _adopt_extremes(h: Histogram, lo: float, hi: float, name: str) -> None:
    """Replaces the extremes by TFLite's calibrator's (same data, its rounding).

    They differ by float rounding, except where the calibrator logged a tensor
    after an in-place op (a residual ADD) overwrote it: then its range is the
    ADD output's and wider than the tensor's own. The counts keep the true
    values, so every method but `minmax` sees the tensor as it is. An extreme
    at or beyond `LEAKED_FILL` that the tensor never reached is a masked
    softmax's mask that such an op wrote over the attention scores (tf_keras
    adds -1e9): the tensor keeps its own extreme there, or its int8 grid would
    span 1e9 and its histogram's bins would swallow every score.
    """
    if lo <= -LEAKED_FILL < h.min:
        lo = h.min
    if hi >= LEAKED_FILL > h.max:
        hi = h.max
    tol = 1e-4 * max(abs(h.min), abs(h.max), 1e-30)
    if not (math.isclose(lo, h.min, abs_tol=tol) and math.isclose(hi, h.max, abs_tol=tol)):
        _log.debug(
            "Tensor %r takes [%g, %g]; TFLite's calibrator recorded [%g, %g] (the "
            "converter's range, kept as the extremes).", name, h.min, h.max, lo, hi)
    h.set_extremes(lo, hi)


def with_own_extremes(calibrated: bytes, stats: Sequence[TensorStats]) -> bytes:
    """`calibrated` with the ranges its statistics hold where they differ from the
    calibrator's (a leaked mask, see `_adopt_extremes`), so that `minmax` and the
    model's own ranges agree.

    Args:
        calibrated: The calibrated float model the statistics were collected on.
        stats: Their `TensorStats` (`collect`, `BackgroundCollect.result`).

    Returns:
        The model with those ranges, or `calibrated` itself (the same bytes) if none differ.
    """
    ranges = _tflite.calibrated_ranges(calibrated)
    own = {s.index: (s.histogram.min, s.histogram.max) for s in stats
           if (s.histogram.min, s.histogram.max) != ranges[s.index]}
    return _tflite.set_ranges(calibrated, own) if own else calibrated

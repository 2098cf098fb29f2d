"""`Calibration`: the calibrated float model plus one histogram per tensor.

A `Calibration` is computed once (`tfq8.calibrate`, or by
`tfq8.CalibrationCallback` during `fit`) and then turned into ranges by any
method, as often as wanted, without running the model again. It saves to a
single `.npz` file (plain arrays and a JSON header, never pickle) and merges
with another calibration of the same model.

Example:
    >>> calib = tfq8.calibrate(model, x_train[:500])
    >>> lo, hi = calib.ranges("kl")[calib.tensors[-1].index]  # the model's output
    >>> calib.save("stats.npz")
    >>> calib = tfq8.Calibration.load("stats.npz")
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import errno
import io
import json
import os
import secrets
import stat
from typing import Any, Mapping

import numpy as np

from tfq8 import _args, _tflite, ranges as _ranges
from tfq8.data import fixed_batch
from tfq8.errors import ArgumentTypeError
from tfq8.harness.interpreter import verify_model
from tfq8.masked_softmax import mask_fills
from tfq8.rewrite import rewrite_for_int8
from tfq8.stats.collect import TensorStats
from tfq8.stats.histogram import Histogram

FORMAT = "tfq8.calibration/1"


# Ops whose int8 output has a scale and zero point of its own (TFLite's int8
# spec), whatever range calibration gives it: 1/256 for LOGISTIC and SOFTMAX,
# 1/128 for TANH, 16/256 for LOG_SOFTMAX.
FIXED_SCALE_OPS = frozenset({"LOGISTIC", "TANH", "SOFTMAX", "LOG_SOFTMAX"})


@dataclasses.dataclass
class Calibration:
    """Statistics of every activation tensor of a model's TFLite graph.

    Attributes:
        model: The calibrated float `.tflite` flatbuffer (TFLite's calibrator's
            output, whose tensors carry the converter's own min/max).
        tensors: One `TensorStats` per calibrated tensor, by tensor index.
        num_samples: How many samples the statistics cover.
        fingerprint: SHA-256 of the model's weights when calibrated (used to
            refuse stale statistics), or None.
        samples: A few calibration samples (one array per model input), kept
            so that `method="auto"` can compare int8 with float; None if none.

    Example:
        >>> calib = tfq8.calibrate(model, x_train[:500])
        >>> calib                       # Calibration(9 tensors, 500 samples, model ... bytes)
        >>> [t.name for t in calib.tensors][:3]
        >>> blob = tfq8.convert(calibration=calib, method="mse")
    """

    model: bytes
    tensors: list[TensorStats]
    num_samples: int
    fingerprint: str | None = None
    samples: list[np.ndarray] | None = None

    def __post_init__(self):
        if not isinstance(self.model, (bytes, bytearray, memoryview)):
            raise TypeError("model must be the calibrated .tflite flatbuffer (bytes). Received: "
                            f"model of type {type(self.model).__name__}")
        if isinstance(self.tensors, tuple):  # taken as a list, as before the check
            self.tensors = list(self.tensors)
        if not isinstance(self.tensors, list) or not all(
                isinstance(t, TensorStats) for t in self.tensors):
            raise TypeError("tensors must be a list of tfq8.stats.collect.TensorStats. "
                            f"Received: {self.tensors!r:.200}")
        _args.integer("num_samples", self.num_samples)
        # Same tensors, so the statistics still apply; more of the graph quantizes to int8
        # (also for calibrations saved before the rewrite existed).
        try:
            model = rewrite_for_int8(self.model)
        except Exception:
            verify_model(self.model, arg="model")  # says what is wrong with the bytes
            raise
        if model is not self.model:  # the rewritten ops' outputs have new producers
            parsed = _tflite.read_model(model)
            ops = {int(o): _tflite.op_name(parsed, op)
                   for op in parsed.subgraphs[0].operators for o in op.outputs}
            self.tensors = [dataclasses.replace(t, producer=ops.get(t.index, t.producer))
                            for t in self.tensors]
            self.model = model
        self._by_name = {t.name: t for t in self.tensors}
        self._fills = mask_fills(self.model)  # masked softmax scores: (scores, fill)
        self.last_auto = None  # set by method="auto": what it measured
        self.last_bias_correction = None  # set by bias_correction=True: what it did
        self._ranges: dict[tuple, dict[int, tuple[float, float]]] = {}  # ranges() by method

    def __repr__(self) -> str:
        return (f"Calibration({len(self.tensors)} tensors, {self.num_samples} samples, "
                f"model {len(self.model)} bytes)")

    @property
    def sample_peaks(self) -> np.ndarray | None:
        """Peak |value| per kept sample and tensor, shape (samples, tensors).

        Columns follow `tensors`. None if the calibration kept no samples.
        """
        if self.samples is None or any(t.peaks is None for t in self.tensors):
            return None
        return np.stack([t.peaks for t in self.tensors], axis=1)

    def tensor(self, key: int | str) -> TensorStats:
        """A tensor's statistics by index or name.

        Raises:
            KeyError: If no calibrated tensor has that name or index.
            TypeError: If `key` is neither a name nor an integer index (a float or
                a bool would otherwise match the index it equals).

        Example:
            >>> t = calib.tensor(calib.tensors[1].name)   # or calib.tensor(t.index)
            >>> t.producer, t.histogram.min, t.histogram.max
        """
        if not is_tensor_key(key):
            what = ("a TensorStats (pass its .name or .index)" if isinstance(key, TensorStats)
                    else repr(key) + f" of type {type(key).__name__}")
            raise TypeError(f"A calibrated tensor is named by its name (str) or index (int). "
                            f"Received: {what}")
        if isinstance(key, str):
            if key in self._by_name:
                return self._by_name[key]
        else:
            for t in self.tensors:
                if t.index == key:
                    return t
        names = ", ".join(repr(t.name) for t in self.tensors[:8])
        raise KeyError(f"No calibrated tensor {key!r}. Calibrated tensors include: {names}")

    def ranges(self, method: str = "minmax", **options: Any) -> dict[int, tuple[float, float]]:
        """Tensor index -> (min, max) chosen by a per-tensor range method.

        The outputs of ops whose int8 scale TFLite fixes whatever the range
        (`FIXED_SCALE_OPS`: LOGISTIC, TANH, SOFTMAX, LOG_SOFTMAX) get their
        min/max without running the method: no range changes their grid.
        The masked scores of a masked softmax (`tfq8.masked_softmax.mask_fills`) get
        the range from their fill value to the method's upper end for the
        scores, so that no method clips the mask away.

        The methods are pure functions of the histograms, so each (method,
        options) runs once per calibration: `auto`, a loop over methods and
        `plot_ranges` reuse the result.

        Args:
            method: A name from `tfq8.ranges.available_methods()`.
            **options: Passed to the method (such as `percentile=99.9`).

        Returns:
            A new dict (the caller may change it).

        Raises:
            ValueError: For an unknown method or option, an option value the
                method refuses, or a registered method that returns no finite
                `(min, max)` (`tfq8.errors.ArgumentTypeError` for a method name
                that is not a string or an option that is not a number).

        Example:
            >>> kl = calib.ranges("kl")
            >>> p = calib.ranges("percentile", percentile=99.9)
            >>> out = calib.tensors[-1].index
            >>> kl[out], p[out]
        """
        fn = _ranges.get_method(method)
        _ranges.check_options(method, options)
        key = (method, tuple(sorted(options.items())))
        try:
            hash(key)
        except TypeError:  # a registered method's list or dict option: run, not cached
            return self._run_method(fn, options, method)
        if key not in self._ranges:
            self._ranges[key] = self._run_method(fn, options, method)
        return dict(self._ranges[key])

    def _run_method(self, fn: Any, options: Mapping[str, Any],
                    method: str = "") -> dict[int, tuple[float, float]]:
        todo = [t for t in self.tensors if t.producer not in FIXED_SCALE_OPS]
        # Tensors holding the same values (a RESHAPE's input and output, say) have equal
        # histograms, and a method is a pure function of the histogram: one run each.
        distinct = {histogram_key(t.histogram): t.histogram for t in todo}
        hists = list(distinct.values())
        workers = min(len(hists), os.cpu_count() or 1)
        if workers > 1:  # the methods are numpy-bound and release the GIL
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                found = list(pool.map(lambda h: fn(h, **options), hists))
        else:
            found = [fn(h, **options) for h in hists]
        for h, r in zip(hists, found):  # a registered method of one's own may return anything
            if not _is_range(r):
                raise ValueError(
                    f"Range method {method!r} must return a (min, max) pair of finite numbers "
                    f"with min <= max, spanning at most {_FLOAT32_MAX:.7g} (float32's largest "
                    f"value), 0 included. Received: {r!r} for tensor "
                    f"{next(t for t in todo if t.histogram is h).name!r}")
        by_key = dict(zip(distinct, found))
        chosen = {t.index: by_key[histogram_key(t.histogram)] for t in todo}
        chosen = {t.index: chosen.get(t.index, (float(t.histogram.min), float(t.histogram.max)))
                  for t in self.tensors}
        for out, (scores, fill) in self._fills.items():  # the scores' range, down to the fill
            if out in chosen and scores in chosen:
                chosen[out] = (fill, chosen[scores][1])
        return chosen

    def converter_ranges(self) -> dict[int, tuple[float, float]]:
        """The ranges TFLite's converter itself would use (its calibrator's).

        Tensor index -> (min, max), as `ranges` returns them.

        Example:
            >>> theirs, mine = calib.converter_ranges(), calib.ranges("kl")
            >>> {calib.tensor(i).name: (theirs[i], mine[i]) for i in mine if i in theirs}
        """
        return _tflite.calibrated_ranges(self.model)

    def merge(self, other: "Calibration") -> "Calibration":
        """Statistics over the samples of both calibrations (same model graph).

        The histograms, and so every per-tensor method's ranges, equal those of
        one calibration over all the samples. The kept samples are close: the
        merge keeps as many as the larger of the two kept, drawn from both in
        proportion to the samples each calibrated on (evenly spaced within
        each, whole batches for a model whose batch size is fixed), so `auto`
        (which scores on them) may still choose otherwise than after one
        calibration over all the data.

        Raises:
            ValueError: If the two describe different graphs, or the same graph
                with different weights (the merged model would carry only this
                calibration's weights).
            TypeError: If `other` is not a `Calibration`.

        Example:
            >>> calib = tfq8.calibrate(model, day1).merge(tfq8.calibrate(model, day2))
            >>> calib.num_samples == len(day1) + len(day2)
            True
        """
        if not isinstance(other, Calibration):
            raise TypeError(f"merge() takes another tfq8.Calibration. Received: {type(other).__name__}")
        mine = [(t.index, t.name) for t in self.tensors]
        theirs = [(t.index, t.name) for t in other.tensors]
        if mine != theirs:
            first = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b),
                         min(len(mine), len(theirs)))

            def show(ts: list[tuple[int, str]]) -> str:
                return f"tensor {ts[first][0]} {ts[first][1]!r}" if first < len(ts) else "none"

            raise ValueError(
                "Can only merge calibrations of the same TFLite graph (the same model, whose "
                f"layer names fix the tensor names); the tensors differ. This one has "
                f"{len(mine)} calibrated tensors, the other {len(theirs)}; the first that "
                f"differs: {show(mine)}, received {show(theirs)}.")
        if None not in (self.fingerprint, other.fingerprint) and (
                self.fingerprint != other.fingerprint):
            raise ValueError(
                "Can only merge calibrations of the same model: these two come from models "
                "with different weights (their weight fingerprints differ), so the merged "
                "statistics would describe neither. Calibrate the model once on all the data.")
        merged = []
        kept = [len(c.samples[0]) if c.samples else 0 for c in (self, other)]
        pick = _merged_picks(kept, [self.num_samples, other.num_samples],
                             _fixed_batch_of(self.model) or 1)
        for a, b in zip(self.tensors, other.tensors):
            h = a.histogram.copy().merge(b.histogram)
            peaks = [p for p in (a.peaks, b.peaks) if p is not None]  # one per kept sample
            merged.append(TensorStats(a.index, a.name, h, a.producer,
                                      np.concatenate(peaks)[pick] if peaks else None))
        # Keep the calibrator's ranges consistent with the merged extremes; tensors
        # internal to fused ops (no histogram) take the union of both calibrators'.
        ranges = {t.index: (t.histogram.min, t.histogram.max) for t in merged}
        mine, theirs = self.converter_ranges(), other.converter_ranges()
        for i in sorted(mine.keys() & theirs.keys() - ranges.keys()):
            ranges[i] = (min(mine[i][0], theirs[i][0]), max(mine[i][1], theirs[i][1]))
        model = _tflite.set_ranges(self.model, ranges)
        fingerprint = self.fingerprint if self.fingerprint == other.fingerprint else None
        samples = self.samples
        if self.samples is not None and other.samples is not None:
            samples = [np.concatenate([a, b])[pick] for a, b in zip(self.samples, other.samples)]
        return Calibration(model, merged, self.num_samples + other.num_samples, fingerprint,
                           samples or other.samples)

    # ------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> None:
        """Writes the calibration to an `.npz` file, atomically; the same
        calibration always gives the same bytes (no time stamps inside).

        An existing file is replaced whole or not at all; missing directories
        are created. The file holds plain arrays and a JSON header (the
        calibrated model, histograms, kept samples), never pickled objects.

        Args:
            path: Destination; `.npz` is the expected suffix.

        Raises:
            TypeError: If `path` is not a file path.
            ValueError: If `path` is empty, a directory, or under a file.
            OSError: If the file cannot be written (no permission, disk full).

        Example:
            >>> calib.save("stats.npz")
            >>> tfq8.Calibration.load("stats.npz").num_samples == calib.num_samples
            True
        """
        header = {
            "format": FORMAT,
            "num_samples": self.num_samples,
            "fingerprint": self.fingerprint,
            "tensors": [{"index": t.index, "name": t.name, "producer": t.producer}
                        for t in self.tensors],
            "num_kept_inputs": 0 if self.samples is None else len(self.samples),
        }
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
            "model": np.frombuffer(self.model, np.uint8),
        }
        for i, t in enumerate(self.tensors):
            for key, value in t.histogram.to_arrays().items():
                arrays[f"t{i}_{key}"] = value
            if t.peaks is not None:
                arrays[f"t{i}_peaks"] = t.peaks
        for k, a in enumerate(self.samples or []):
            arrays[f"sample{k}"] = a
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # its zip entries carry a fixed date, not the time
        atomic_write(path, buf.getvalue(), arg="path")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        """Reads a file written by `save`.

        Raises:
            ValueError: If the file is missing, unreadable or not a tfq8 calibration.
            TypeError: If `path` is not a file path.

        Example:
            >>> calib = tfq8.Calibration.load("stats.npz")
            >>> blob = tfq8.convert(model, calibration=calib, method="percentile")
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike). Received: path={path!r}")
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                head = f.read(6)
            if head == b"\x93NUMPY":
                raise ValueError("it holds one ndarray, not the .npz archive "
                                 "Calibration.save writes")
            if head[:2] != b"PK":  # np.load would call anything else pickled data
                raise ValueError("it is not an .npz archive (" + (
                    f"it starts with {head!r}" if head else "it is empty") + ")")
            loaded = np.load(path, allow_pickle=False)
            with loaded as z:
                if "header" not in z.files:
                    raise ValueError(f"it holds the arrays {sorted(z.files)[:8]}, and no header: "
                                     "not written by Calibration.save")
                header = json.loads(bytes(z["header"]).decode())
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    found = header.get("format") if isinstance(header, dict) else header
                    raise ValueError(f"format is {found!r}, expected {FORMAT!r}")
                model = bytes(z["model"])
                parsed = verify_model(model, arg="its model")  # truncated or foreign: here
                entries = header["tensors"]
                if not isinstance(entries, list) or not all(
                        isinstance(t, dict) and isinstance(t.get("index"), int)
                        and isinstance(t.get("name"), str) and isinstance(t.get("producer"), str)
                        for t in entries):
                    raise ValueError("its header's tensors are not a list of {index (int), name, "
                                     "producer}")
                tensors = []
                for i, t in enumerate(entries):
                    h = Histogram.from_arrays(
                        {k: z[f"t{i}_{k}"] for k in ("counts", "meta", "extremes")})
                    peaks = np.array(z[f"t{i}_peaks"]) if f"t{i}_peaks" in z.files else None
                    tensors.append(TensorStats(t["index"], t["name"], h, t["producer"], peaks))
                kept = header.get("num_kept_inputs", 0)
                if not isinstance(kept, int) or kept < 0:
                    raise ValueError(f"num_kept_inputs is {kept!r}, not a count")
                samples = [np.array(z[f"sample{k}"]) for k in range(kept)] or None
                if samples is not None:
                    _check_kept_samples(parsed, samples)
                num_samples = header["num_samples"]
                fingerprint = header.get("fingerprint")
                _check_contents(model, parsed, tensors, samples, num_samples, fingerprint)
        except FileNotFoundError:
            raise ValueError(f"Could not read a tfq8 calibration from {path!r}: no such file") from None
        except (PermissionError, IsADirectoryError) as e:
            raise ValueError(f"Could not read a tfq8 calibration from {path!r}: "
                             f"{e.strerror}") from None
        except Exception as e:  # noqa: BLE001 - any damage to the file: one clear error
            # np.load's archive says "KeyError: 'model is not a file in the archive'"
            key = str(e.args[0] if e.args else e).removesuffix(" is not a file in the archive")
            reason = (f"missing entry {key!r}" if isinstance(e, KeyError)
                      else str(e) or type(e).__name__)
            raise ValueError(
                f"Could not read a tfq8 calibration from {path!r} (damaged, truncated or not "
                f"written by Calibration.save): {reason}"
            ) from None
        return cls(model, tensors, num_samples, fingerprint, samples)


def _is_range(found: Any) -> bool:
    """Whether a range method returned a (min, max) pair of finite numbers, min <= max,
    that an int8 scale (a float32) can span (anything else fails later in the quantizer,
    or crashes it)."""
    if isinstance(found, np.ndarray) and found.shape == (2,):  # np.array([lo, hi]) too
        found = found.tolist()
    return isinstance(found, (tuple, list)) and len(found) == 2 and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        and np.isfinite(v) for v in found) and found[0] <= found[1] and _spans_float32(
            float(found[0]), float(found[1]))


# The widest range an int8 scale, a float32, can span (0 included): float32's largest value.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _spans_float32(lo: float, hi: float) -> bool:
    """Whether the int8 scale of [lo, hi] (with 0 in it) is finite as a float32."""
    return max(hi, 0.0) - min(lo, 0.0) <= _FLOAT32_MAX


def is_tensor_key(key: Any) -> bool:
    """Whether `key` can name a calibrated tensor: a name (str) or an integer index
    (not a bool or a float, which would match the index they equal)."""
    return not isinstance(key, bool) and isinstance(key, (str, int, np.integer))


def histogram_key(hist: Histogram) -> tuple:
    """A hashable key that two histograms share exactly when they are equal (`==`)
    down to the bits of their extremes (-0.0 and 0.0 differ), so a range method
    gives both the same range.

    Example:
        >>> histogram_key(a) == histogram_key(b)  # a == b, extremes bit for bit
        True
    """
    return (hist.max_bins, hist.exponent, hist.offset, hist.count, hist.zeros,
            np.array([hist.min, hist.max], np.float64).tobytes(), hist.counts.tobytes())


def _check_contents(model: bytes, parsed: Any, tensors: list[TensorStats],
                    samples: list[np.ndarray] | None, num_samples: Any, fingerprint: Any) -> None:
    """Refuses statistics that do not fit the calibrated model they came with.

    Such a file loads, but fails later, deep inside a range method or `auto`.
    """
    kept = 0 if samples is None else len(samples[0])
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not (
            max(kept, 1) <= num_samples):
        raise ValueError(f"num_samples is {num_samples!r}; expected a count of at least "
                         f"{max(kept, 1)} (the samples it keeps)")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ValueError(f"fingerprint is {fingerprint!r}; expected a hex digest or null")
    calibrated = _tflite.calibrated_ranges(model)
    names = [_tflite.tensor_name(t) for t in parsed.subgraphs[0].tensors]  # `model`, parsed
    seen = set()
    for t in tensors:
        if t.index not in calibrated or t.index in seen:
            raise ValueError(f"tensor {t.name!r} has index {t.index}, which is "
                             + ("listed twice" if t.index in seen else
                                "not a calibrated tensor of its model"))
        seen.add(t.index)
        if names[t.index] != t.name:
            raise ValueError(f"tensor {t.index} is named {t.name!r}; its model names it "
                             f"{names[t.index]!r}")
        if t.histogram.count == 0:
            raise ValueError(f"tensor {t.name!r} has an empty histogram")
        if t.peaks is not None and (t.peaks.shape != (kept,) or t.peaks.dtype.kind != "f"
                                    or not np.isfinite(t.peaks).all()):
            raise ValueError(f"tensor {t.name!r} has peaks of {t.peaks.dtype.name}"
                             f"{list(t.peaks.shape)}; expected {kept} finite values, one per "
                             "kept sample")


def _check_kept_samples(parsed: Any, samples: list[np.ndarray]) -> None:
    """Refuses kept samples that the calibrated model (parsed) cannot take as inputs."""
    sg = parsed.subgraphs[0]
    inputs = [sg.tensors[int(i)] for i in sg.inputs]
    if len(samples) != len(inputs) or len({len(a) for a in samples}) != 1:
        raise ValueError(f"its kept samples are {len(samples)} arrays of lengths "
                         f"{[len(a) for a in samples]}; the model has {len(inputs)} input(s)")
    for k, (a, t) in enumerate(zip(samples, inputs)):
        want = [int(d) for d in (t.shapeSignature if t.shapeSignature is not None else t.shape)]
        kind = _tflite.tensor_type_name(t.type).lower()
        if a.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want[1:], a.shape[1:])) or (
                a.dtype.name != kind):
            raise ValueError(f"kept sample {k} is {a.dtype.name}{list(a.shape)}; the model's "
                             f"input {k} takes {kind}{want}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ValueError(f"kept sample {k} holds NaN or Inf")


def _merged_picks(kept: list[int], seen: list[int], step: int) -> np.ndarray:
    """Which of two calibrations' kept samples (indices into both, concatenated) a
    merge keeps: as many as the larger of the two kept, shared in proportion to
    the samples each calibration `seen`, evenly spaced within each, in whole
    batches of `step`."""
    (ka, kb), cap = kept, max(kept)
    if ka == 0 or kb == 0:
        return np.arange(ka + kb)
    share = round(cap * seen[0] / max(sum(seen), 1) / step) * step
    take_a = min(ka, max(cap - kb, share))

    def evenly(n: int, take: int) -> np.ndarray:
        blocks = np.linspace(0, n // step - 1, take // step).round().astype(np.int64) * step
        return (blocks[:, None] + np.arange(step)).ravel()

    return np.concatenate([evenly(ka, take_a), ka + evenly(kb, cap - take_a)])


def _fixed_batch_of(model: bytes) -> int | None:
    """The batch size the calibrated model's inputs are fixed at, or None."""
    sg = _tflite.read_model(model).subgraphs[0]
    return fixed_batch([list(t.shapeSignature if t.shapeSignature is not None else t.shape)
                        for t in (sg.tensors[i] for i in sg.inputs)])


def atomic_write(path: str | os.PathLike, data: bytes, *, arg: str = "path") -> None:
    """Writes `data` to `path` via a temporary file and a rename.

    An existing file at `path` is replaced whole or left untouched, and keeps
    its permission bits; a new file gets the usual ones (0666 less the umask).
    A symbolic link at `path` stays a link: the file it points to is replaced.
    Something other than a regular file at `path` (`/dev/null`, a named pipe)
    is written to as it is, never replaced by a regular file.

    Args:
        path: Destination file.
        data: The bytes to write.
        arg: The caller's argument name, for error messages.

    Raises:
        ValueError: If `path` is empty, a directory, or under a file.
        TypeError: If `path` is not a string or path.
        OSError: If the file cannot be written (no permission, disk full);
            the message names `arg` and `path`.

    Example:
        >>> atomic_write("model_int8.tflite", blob, arg="output_path")
    """
    target = check_output_path(path, arg=arg)
    directory = os.path.dirname(target)
    made = _missing_directories(directory)  # removed again if the write fails
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file appeared there since the check
        raise ValueError(f"{arg} lies under {_first_file(directory)!r}, which is a file, not "
                         f"a directory. Received: {arg}={path!r}") from None
    except OSError as e:
        raise _write_error(e, arg, path) from None
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:  # a symbolic link loop, say
        raise _write_error(e, arg, path) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        # A device or pipe: renaming a file onto it would replace, say, /dev/null itself.
        try:
            with open(target, "wb") as f:
                f.write(data)
        except OSError as e:
            raise _write_error(e, arg, path) from None
        return
    mode = None if st is None else st.st_mode & 0o777  # an existing file keeps its permissions
    try:
        fd, tmp = _create_temp(directory)
    except OSError as e:
        _remove_empty(made)
        raise _write_error(e, arg, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _remove_empty(made)
        if isinstance(e, OSError):
            raise _write_error(e, arg, path) from None
        raise


def _missing_directories(directory: str) -> list[str]:
    """The directories `os.makedirs(directory)` would create, deepest first."""
    missing = []
    while directory and not os.path.exists(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return missing


def _remove_empty(directories: list[str]) -> None:
    """Removes the directories a failed write created (deepest first), while empty."""
    for d in directories:
        try:
            os.rmdir(d)
        except OSError:  # not empty (something else wrote there meanwhile), or gone
            return


def _write_error(e: OSError, arg: str, path: Any) -> OSError:
    """`e` restated for the user's path (not the hidden temporary file's)."""
    message = f"Cannot write {arg}={os.fspath(path)!r}: {e.strerror or e}; nothing was written"
    return type(e)(e.errno, message) if e.errno is not None else OSError(message)


def check_output_path(path: Any, *, arg: str = "path",
                      inputs: Mapping[str, Any] | None = None) -> str:
    """Checks that `path` can name an output file; returns its real path.

    Nothing is created: `atomic_write` makes missing directories when it writes.

    Args:
        path: The output file.
        arg: The argument's name, for error messages.
        inputs: Argument name -> a path the job reads or writes (the model file, say),
            which `path` must not overwrite. None values are skipped.

    Raises:
        ValueError: If `path` is empty, a directory, under a file, or one of
            `inputs`.
        TypeError: If `path` is not a string or path.

    Example:
        >>> check_output_path("out/model_int8.tflite", arg="output_path")
        '/.../out/model_int8.tflite'
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"{arg} must be a file path (str or os.PathLike). "
                        f"Received: {arg}={path!r}")
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{arg} must name a file. Received: {arg}=''")
    if "\0" in path:
        raise ValueError(f"{arg} must not contain a NUL character. Received: {arg}={path!r}")
    if path.endswith((os.sep, "/")):
        raise ValueError(f"{arg} ends in a path separator; expected a file path. "
                         f"Received: {arg}={path!r}")
    target = os.path.realpath(path)
    if os.path.islink(target):  # realpath stops at a link only when the links loop
        raise ValueError(f"{arg} is a symbolic link that loops and reaches no file. "
                         f"Received: {arg}={path!r}")
    if os.path.isdir(target):
        raise ValueError(f"{arg} is a directory; expected a file path inside it. "
                         f"Received: {arg}={path!r}")
    parent = _first_file(os.path.dirname(target))
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{arg} lies under {parent!r}, which is a file, not a directory. "
                         f"Received: {arg}={path!r}")
    if parent and not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"Cannot write {arg}={path!r}: the directory "
                              f"{parent!r} is not writable")
    for name, other in (inputs or {}).items():
        if isinstance(other, (str, os.PathLike)) and os.path.realpath(other) == target:
            raise ValueError(f"{arg} would overwrite {name}, which this job uses. Received: "
                             f"{arg}={path!r} and {name}={os.fspath(other)!r}")
    limit = _name_max(parent)
    if len(os.fsencode(os.path.basename(target))) > limit:
        raise ValueError(f"{arg} has a file name longer than the {limit} bytes the file "
                         f"system allows. Received: {arg}={path!r}")
    return target


def _create_temp(directory: str) -> tuple[int, str]:
    """A new hidden file in `directory`, created with mode 0666 as open() would
    (the kernel applies the umask; tempfile.mkstemp would give 0600)."""
    for _ in range(100):
        tmp = os.path.join(directory, f".tfq8-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not create a temporary file in {directory!r}")


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _first_file(directory: str) -> str:
    """The deepest existing ancestor of `directory` (a file if it cannot hold files)."""
    while directory and not os.path.exists(directory):
        directory = os.path.dirname(directory)
    return directory


def validate_overrides(calib: Calibration, overrides: Mapping[str | int, tuple[float, float]]
                       ) -> dict[int, tuple[float, float]]:
    """Tensor names/indices -> index-keyed ranges, checked."""
    out = {}
    for key, value in overrides.items():
        try:
            t = calib.tensor(key)
        except KeyError:
            raise ValueError(_unknown_tensor(calib, key)) from None
        except TypeError as e:
            raise TypeError(f"ranges keys: {e}") from None
        out[t.index] = range_pair(key, value)
    return out


def range_pair(key: str | int, value: Any) -> tuple[float, float]:
    """`ranges[key]` as a checked (min, max) of finite floats.

    Raises:
        ValueError: Naming `ranges[key]`, unless `value` is two finite numbers,
            min <= max, within float32's span (`tfq8.errors.ArgumentTypeError`
            if it is not numbers: a string, or a pair holding one).

    Example:
        >>> range_pair("logits", (-8, 8))
        (-8.0, 8.0)
    """
    pair = None
    if not isinstance(value, (str, bytes, Mapping)):
        try:
            pair = [v for v in value]
        except TypeError:
            pass
    wrong_type = pair is None or not all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in pair)
    if wrong_type or len(pair) != 2:
        raise (ArgumentTypeError if wrong_type else ValueError)(
            f"ranges[{key!r}] must be a (min, max) pair of numbers. Received: {value!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"ranges[{key!r}] must be finite with min <= max. Received: {value!r}")
    if not _spans_float32(lo, hi):  # its int8 scale, a float32, would be inf
        raise ValueError(f"ranges[{key!r}] must span at most {_FLOAT32_MAX:.7g} (float32's "
                         f"largest value), 0 included. Received: {value!r}")
    return lo, hi


def _unknown_tensor(calib: Calibration, key: str | int) -> str:
    """Why `ranges[key]` names no calibrated tensor, and what would."""
    names = [t.name for t in calib.tensors]
    outputs = {int(i) for i in _tflite.outputs_of(_tflite.read_model(calib.model))}
    close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
    hint = ((f"Did you mean {', '.join(map(repr, close))}? " if close else "")
            + "ranges= sets the calibrated activation tensors of the TFLite graph, by name or "
            "index (Calibration.tensors lists them), "
            f"such as {', '.join(map(repr, names[:4]))}; the model's outputs are "
            f"{[t.name for t in calib.tensors if t.index in outputs]}.")
    kinds = _tflite.tensor_types(calib.model)
    if isinstance(key, str) and key in kinds:
        if kinds[key] in ("INT8", "UINT8", "INT16"):
            why = (f"it is already quantized ({kinds[key]}): a range learned by quantization-"
                   "aware training (FakeQuant min/max), which tfq8 keeps")
        else:
            why = f"it is a weight, bias or {kinds[key]} tensor, not a calibrated activation"
        return f"ranges[{key!r}]: {why}. {hint}"
    return f"ranges[{key!r}]: no such tensor in the model's TFLite graph. {hint}"

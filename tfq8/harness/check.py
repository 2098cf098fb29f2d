"""`tfq8.check`: is the int8 model right? Accuracy, agreement and error per tensor.

How the figures are obtained:

* The int8 model and the float reference run in LiteRT on the same samples, in
  batches. Float data is quantized into each int8 input with that input's own
  scale and zero point; every output is dequantized with its own.
* `accuracy` / `reference_accuracy`: top-1 of output `output` against `labels`.
  `agreement`: fraction of samples where int8 and float top-1 agree. Top-1 is the
  argmax over the output's last axis, so an output with positions (a per-pixel
  softmax, a per-step sequence) is scored per pixel or step, as Keras does.
* Per output: SQNR = 10 log10(sum ref^2 / sum (int8 - ref)^2) in dB over all
  samples, cosine similarity, and max |int8 - ref| in float units.
* Per tensor: every int8 activation tensor is matched by name to the tensor of
  the calibrated float model it was quantized from (same graph). Each gets the
  same metrics (`sqnr_db`: error accumulated up to there) plus `range_sqnr_db`,
  the SQNR of the float tensor rounded and clipped to the tensor's own int8 grid
  (what its range alone costs), and `local_sqnr_db`, the SQNR of the error this
  op *adds*: noise-to-signal of its output minus the worst of its inputs', and
  never less than its range's (unless the op keeps its input's scale and zero
  point, as MAX_POOL_2D and RESHAPE do: then the range is inherited, not chosen
  here). Tensors are listed worst `local_sqnr_db` first,
  so the layer to blame comes first.
* Kernels: TFLite's builtin kernels by default, because they keep intermediate
  tensors readable; XNNPACK's int8 kernels (`backend="xnnpack"`, outputs only)
  can differ from them by one quantization step on a few values.

Example:
    >>> report = tfq8.check(tflite_model, reference=model, data=x_test, labels=y_test)
    >>> report.accuracy, report.reference_accuracy, report.agreement
    (0.912, 0.915, 0.987)
    >>> print(report)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from tfq8 import _args, _tflite
from tfq8.errors import ArgumentTypeError
from tfq8.data import (InputSpec, RepresentativeDataset, _is_tensor, labelled_samples,
                       representative_dataset)
from tfq8.harness.interpreter import ModelRunner, TensorIO, is_constant, read_model_bytes

_log = logging.getLogger("tfq8")

_CAP_DB = 120.0
# A tensor on a CONCATENATION's shared grid whose own values reach less SQNR than this on
# it gets a note under the table (the branch is squeezed by its siblings' range).
SHARED_GRID_NOTE_DB = 10.0
_CALIB_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class ErrorStats:
    """Error of int8 against float for one tensor or output, over all samples.

    Attributes:
        name: Tensor name.
        shape: Shape of one sample (batch dimension dropped).
        sqnr_db: 10 log10(signal power / error power); inf when exact.
        cosine: Cosine similarity of the flattened int8 and float values.
        max_abs_error: Largest |int8 - float|, in float units.
        index: Tensor index in the int8 model.
        op: Op writing the tensor (`INPUT` for model inputs).
        op_index: Index of that op (-1 for model inputs).
        range_sqnr_db: SQNR of the float tensor put on the tensor's own int8
            grid (rounding and clipping only); None for outputs.
        local_sqnr_db: SQNR of the error added at this tensor; None for outputs.
        inherited_range: The tensor has its producer's input's scale and zero
            point (MAX_POOL_2D, RESHAPE, ... keep them), so its range was not
            chosen for it: its grid error is not counted as added here.
        shares_grid_with: The output of the CONCATENATION this tensor feeds,
            whose scale and zero point it takes (TFLite's quantizer gives a
            concatenation's inputs its output's grid), or "".
    """

    name: str
    shape: tuple[int, ...]
    sqnr_db: float
    cosine: float
    max_abs_error: float
    index: int = -1
    op: str = ""
    op_index: int = -1
    range_sqnr_db: float | None = None
    local_sqnr_db: float | None = None
    inherited_range: bool = False
    shares_grid_with: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) if isinstance(v, float) else (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What `tfq8.check` found. `print(report)` shows a table; `to_dict()` is JSON-ready.

    Attributes:
        num_samples: Samples evaluated.
        accuracy: Top-1 accuracy of the int8 model (None without labels).
        reference_accuracy: Top-1 accuracy of the float reference (None
            without labels or reference).
        agreement: Fraction of samples (of pixels or steps, for an output with positions,
            such as a per-pixel softmax) whose int8 and float top-1 agree (None
            without reference, or when the data's y are regression targets:
            values that are not whole numbers).
        outputs: Per model output, int8 vs float (empty without reference).
        tensors: Per activation tensor, worst `local_sqnr_db` first (empty
            without a reference whose tensors match by name).
        reference: What the reference was (`"keras"`, `"calibration"`,
            `"tflite"` or `"none"`).

    Example:
        >>> report = tfq8.check(blob, reference=model, data=x_test, labels=y_test)
        >>> report.accuracy, report.reference_accuracy, report.agreement
        >>> print(report)   # per output, then per tensor, worst first
    """

    num_samples: int
    accuracy: float | None
    reference_accuracy: float | None
    agreement: float | None
    outputs: tuple[ErrorStats, ...]
    tensors: tuple[ErrorStats, ...]
    reference: str

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (non-finite floats become None), for `json.dumps`.

        Example:
            >>> report = tfq8.check(blob, reference=model, data=x_test)
            >>> sorted(report.to_dict())
            ['accuracy', 'agreement', 'num_samples', 'outputs', 'reference',
             'reference_accuracy', 'tensors']
            >>> json.dump(report.to_dict(), open("report.json", "w"))
        """
        return {
            "num_samples": self.num_samples,
            "accuracy": _json_float(self.accuracy),
            "reference_accuracy": _json_float(self.reference_accuracy),
            "agreement": _json_float(self.agreement),
            "reference": self.reference,
            "outputs": [o.to_dict() for o in self.outputs],
            "tensors": [t.to_dict() for t in self.tensors],
        }

    def __str__(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        lines = [f"tfq8 check: {self.num_samples} samples, reference: {self.reference}",
                 f"  accuracy int8 {pct(self.accuracy)}   float {pct(self.reference_accuracy)}"
                 f"   agreement {pct(self.agreement)}"]
        if self.outputs:
            lines.append("")
            lines.append(f"  {'SQNR dB':>8} {'cosine':>9} {'max|err|':>10}  output")
            for o in self.outputs:
                lines.append(f"  {_db(o.sqnr_db):>8} {o.cosine:>9.5f} {o.max_abs_error:>10.4g}  "
                             f"{o.name}")
        if self.tensors:
            lines.append("")
            lines.append("  per tensor, worst first (local = error added here; range = its int8 "
                         "grid alone, * = its input's grid; SQNR = accumulated)")
            width = max(len(t.op) for t in self.tensors)
            lines.append(f"  {'op#':>4} {'op':<{width}} {'local':>6} {'range':>6} {'SQNR':>6} "
                         f"{'cosine':>8} {'max|err|':>9}  tensor")
            for t in self.tensors:
                lines.append(
                    f"  {t.op_index:>4} {t.op:<{width}} {_db(t.local_sqnr_db):>6} "
                    f"{_db(t.range_sqnr_db) + ('*' if t.inherited_range else ''):>6} {_db(t.sqnr_db):>6} "
                    f"{t.cosine:>8.5f} {t.max_abs_error:>9.4g}  {t.name}")
            squeezed = [t for t in self.tensors if t.shares_grid_with
                        and t.range_sqnr_db is not None and t.range_sqnr_db < SHARED_GRID_NOTE_DB]
            for t in squeezed:
                lines.append(
                    f"  note: {t.name} takes the grid of the CONCATENATION output "
                    f"{t.shares_grid_with} (TFLite's quantizer gives a concatenation's inputs its "
                    f"output's scale), on which its own values reach {_db(t.range_sqnr_db)} dB: "
                    "scale the concatenated branches to similar ranges.")
        return "\n".join(lines)


def check(
    tflite_model: bytes | str | os.PathLike,
    reference: Any = None,
    data: Any = None,
    labels: Any = None,
    *,
    output: int | str = 0,
    num_samples: int | None = None,
    per_tensor: bool = True,
    batch_size: int | None = None,
    backend: str = "builtin",
    num_threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Checks an int8 `.tflite` against its float reference on data.

    See the module docstring for how each figure is computed. Writes no file;
    warns (logger `"tfq8"`) where the data clip at the int8 input's range or
    use few of its levels, where `tflite_model` is a float model, and where
    the per-tensor table cannot be made.

    Args:
        tflite_model: The int8 model, bytes or a `.tflite` path (verified first).
        reference: The float model: a Keras model or `.keras`/`.h5`/SavedModel
            path (converted to the calibrated float TFLite graph tfq8 quantizes,
            so tensors match by name; a tfmot QAT model to its float TFLite
            graph, FakeQuant simulated as in Keras), a `tfq8.Calibration` (its
            calibrated model), a float `.tflite` (bytes or path), or None.
        data: Samples, any kind `tfq8.representative_dataset` accepts, in float
            units (they are quantized for the int8 model's inputs here). Data of
            `(x, y[, w])` items (a tuple of arrays, a `tf.data.Dataset`, a
            generator, a `keras.utils.PyDataset`) also supplies the labels; for
            several outputs, with `y` a dict by output name or a list in the
            model's order (as `model.fit` takes them), those of `output`.
        labels: Class indices `[N]` or one-hot `[N, C]` (`[N, H, W]` or one-hot
            `[N, H, W, C]` for a per-pixel output, likewise per step), or None; for several
            outputs also a dict of them by output name (those of `output` count).
        output: The output `labels` and top-1 refer to: its index in the Keras
            model's order, or its name (a Keras output name when `reference` is
            a Keras model, or the int8 model's signature name). Without a Keras
            reference, tf_keras models' outputs are in order of their names.
        num_samples: Use at most this many samples.
        per_tensor: Compute the per-tensor table (needs builtin or reference
            kernels: XNNPACK hides intermediate tensors).
        batch_size: Samples per invoke (default: automatic).
        backend: `"builtin"` (default), `"reference"` or `"xnnpack"`.
        num_threads: Kernel threads (default: all CPUs).
        progress: Called with (samples done, total) after each batch.

    Returns:
        A `CheckReport`.

    Raises:
        ValueError: On a malformed model (`InvalidModelError`), data that does
            not fit the model's inputs, labels of the wrong length or range.
        TypeError: On arguments of the wrong type.

    Example:
        >>> report = tfq8.check("model_int8.tflite", reference=model,
        ...                     data=x_test, labels=y_test)
        >>> report.tensors[0].name          # the layer to blame first
    """
    from tfq8.models import is_tflite_source, load_reference  # noqa: PLC0415 (imports Keras)

    if data is None:
        raise ValueError("check() needs data: samples like the model's inputs. Received: data=None")
    threads = _args.integer("num_threads", num_threads, optional=True) or os.cpu_count() or 1
    per_tensor = _args.boolean("per_tensor", per_tensor)
    _output_kind(output)  # now; its name or index is checked once the outputs are known
    if progress is not None and not callable(progress):
        raise ArgumentTypeError("progress must be a callable taking (samples done, total), "
                                f"or None. Received: progress={progress!r}")
    want_tensors = per_tensor and backend != "xnnpack"
    if per_tensor and not want_tensors:
        _log.warning("The per-tensor table needs the builtin or reference kernels (XNNPACK "
                     "hides intermediate tensors): skipped with the xnnpack backend.")
    q = ModelRunner(tflite_model, backend=backend, num_threads=threads,
                    preserve_all_tensors=want_tensors, batch_size=batch_size)
    if not any(_tflite.tensor_type_name(t.type) in ("INT8", "UINT8", "INT16")
               for t in q.parsed.subgraphs[0].tensors):
        _log.warning("tflite_model has no quantized tensor: it is a float model, so check() "
                     "compares float with float. Pass the int8 model tfq8.convert() wrote.")
    handle = load_reference(reference)
    if handle is None and is_tflite_source(reference):
        reference = read_model_bytes(reference, arg="reference")  # read once, here
    # A Keras reference tells which input a list's arrays are (Keras order), as convert() reads it.
    # A float .tflite reference tells it by its signature's order (`models.specs_from_tflite`).
    specs = _with_positions(q.input_specs(), handle.specs if handle is not None
                            else _tflite_reference_specs(reference))
    found = None
    if labels is None:  # (x, y) data, as model.evaluate takes it, carries its labels
        rep, found = labelled_samples(data, specs=specs, num_samples=num_samples)
    else:
        rep = representative_dataset(data, specs=specs, num_samples=num_samples)
    n = len(rep)
    if labels is not None and not isinstance(labels, dict):  # (a dict: once output is known)
        labels = _labels_taken(labels, data, num_samples)
        count = _length(labels) if isinstance(labels, (np.ndarray, list, tuple)) or _is_tensor(
            labels) else None
        if count is not None:
            _check_label_count(count, n)  # now, before the reference is converted
    _warn_off_scale(q.inputs, rep.inputs)
    ref_blob, kind, keras_names = _reference_model(handle if handle is not None else reference, rep)
    f, aliases = None, {}
    if ref_blob is not None:
        f = ModelRunner(ref_blob, backend=backend, num_threads=threads,
                        preserve_all_tensors=want_tensors, batch_size=batch_size, arg="reference")
        if len(f.inputs) != len(q.inputs) or len(f.outputs) != len(q.outputs):
            raise ValueError(
                f"reference must have the int8 model's {len(q.inputs)} input(s) and "
                f"{len(q.outputs)} output(s). Received: a model with {len(f.inputs)} input(s) "
                f"and {len(f.outputs)} output(s)")
        if keras_names:
            keys = {t.index: t.key for t in q.outputs}
            q.outputs, f.outputs = _named(q.outputs, keras_names), _named(f.outputs, keras_names)
            aliases = {keys[t.index]: k for k, t in enumerate(q.outputs)}  # signature names too
    out_k = _output_index(q, output, aliases)
    if isinstance(labels, dict):  # several outputs' labels, as model.fit takes y: output's
        keys = sorted(labels, key=str)
        labels = _targets_of(labels, q.outputs[out_k], out_k, aliases, warn=False)
        if labels is None:
            raise ValueError(f"labels is a dict by output name without the labels of output "
                             f"{q.outputs[out_k].key!r}: pass output= to name the output "
                             f"they are for. Received: labels with keys {keys}")
        labels = _labels_taken(labels, data, num_samples)
    y = _labels(labels, n, q.outputs[out_k]) if labels is not None else None
    regression = False
    if isinstance(found, dict):  # several outputs' targets: those of `output`
        found = _targets_of(found, q.outputs[out_k], out_k, aliases)
    if found is not None:
        y = _labels_in_data(found, n, q.outputs[out_k])
        found = np.asarray(found)
        regression = (y is None and np.issubdtype(found.dtype, np.floating)
                      and not np.array_equal(found, np.round(found)))
    q.fit_batch_to(rep.inputs)
    f_inputs = _reorder(rep.inputs, q.inputs, f.inputs) if f is not None else None
    if f is not None:  # both step through the same batches
        f.fit_batch_to(f_inputs)
        fixed = {r.fixed_batch for r in (q, f) if r.fixed_batch}
        if len(fixed) > 1:
            raise ValueError(f"reference must take the int8 model's batch size "
                             f"{q.fixed_batch}. Received: a reference with batch size "
                             f"fixed at {f.fixed_batch}")
        q.batch_size = f.batch_size = fixed.pop() if fixed else min(q.batch_size, f.batch_size)
    out_map = _match(q.outputs, f.outputs) if f is not None else None
    for k, j in enumerate(out_map or []):
        ours, theirs = q.outputs[k], f.outputs[j]
        if -1 not in ours.signature[1:] + theirs.signature[1:] and (
                ours.shape[1:] != theirs.shape[1:]):
            raise ValueError(
                f"reference must have the int8 model's outputs. Received: a reference whose "
                f"output {theirs.key!r} has shape {(None,) + theirs.shape[1:]} where the "
                f"int8 model's {ours.key!r} has {(None,) + ours.shape[1:]} (is it the float "
                "model this int8 model came from?)")
    pairs = _tensor_pairs(q, f) if f is not None and want_tensors else []
    if f is not None and want_tensors and not pairs:
        _log.warning("No tensor of the reference matches the int8 model's by name; "
                     "per-tensor errors are not available.")

    q_out, f_out = [], []
    o_acc = [_Accum() for _ in q.outputs]
    t_acc = [_Accum(track_range=True) for _ in pairs]
    steps = zip(q.batches(rep.inputs), f.batches(f_inputs)) if f is not None else (
        (b, None) for b in q.batches(rep.inputs))
    for (start, stop), _ in steps:
        q_out.append(q.output(out_k))
        if f is not None:
            for k, j in enumerate(out_map):
                a, r = q.output(k), f.output(j)
                o_acc[k].update(a, r)
                if k == out_k:
                    f_out.append(r)
            for (qt, ft, _), acc in zip(pairs, t_acc):
                acc.update(qt.dequantize(q.tensor(qt.index)), f.tensor(ft), grid=qt)
        if progress is not None:
            progress(stop, n)

    q_values = np.concatenate(q_out)
    f_values = np.concatenate(f_out) if f is not None else None
    threshold = _threshold(f_values if f_values is not None else q_values)  # one for both
    pred = top1(q_values, threshold)
    ref_pred = top1(f_values, threshold) if f_values is not None else None
    if y is not None:
        y = _per_position(y, pred.shape[1], q.outputs[out_k])
    accuracy = float(np.mean(pred == y)) if y is not None else None
    ref_accuracy = float(np.mean(ref_pred == y)) if y is not None and ref_pred is not None else None
    agreement = float(np.mean(pred == ref_pred)) if ref_pred is not None else None
    if regression and agreement is not None:  # top-1 of a regression output means nothing
        _log.info("The data's y are regression targets, so the output is not a classifier: "
                  "no agreement either (see outputs for its SQNR and max|err|).")
        agreement = None
    outputs = tuple(
        acc.stats(t.key, t.shape[1:], index=t.index) for t, acc in zip(q.outputs, o_acc)
    ) if f is not None else ()
    tensors = _rank(q, pairs, t_acc)
    return CheckReport(n, accuracy, ref_accuracy, agreement, outputs, tensors, kind)


# --------------------------------------------------------------------- accumulation
class _Accum:
    """Running sums for SQNR, cosine and max |error| (float64)."""

    def __init__(self, track_range: bool = False):
        self.ss_ref = self.ss_err = self.ss_q = self.dot = self.ss_grid = 0.0
        self.max_abs = 0.0
        self.track_range = track_range

    def update(self, q: np.ndarray, ref: np.ndarray, grid: TensorIO | None = None) -> None:
        # float32 arrays and BLAS dot products (sums accumulate to float64 here):
        # the figures are dB and cosines, far coarser than float32's rounding.
        q = np.ascontiguousarray(q, np.float32).ravel()
        ref = np.ascontiguousarray(ref, np.float32).ravel()
        if not q.size:
            return
        err = q - ref
        with np.errstate(over="ignore"):
            sums = [np.dot(ref, ref), np.dot(err, err), np.dot(q, q), np.dot(q, ref)]
        if not np.all(np.isfinite(sums)):  # float32 overflows beyond 3.4e38 (values over 1e19)
            ref, q = ref.astype(np.float64), q.astype(np.float64)
            err = q - ref
            sums = [np.dot(ref, ref), np.dot(err, err), np.dot(q, q), np.dot(q, ref)]
        self.ss_ref += float(sums[0])
        self.ss_err += float(sums[1])
        self.ss_q += float(sums[2])
        self.dot += float(sums[3])
        self.max_abs = max(self.max_abs, float(err.max()), -float(err.min()))
        if grid is not None and self.track_range:
            scale, zp = np.float32(grid.scales[0]), np.float32(grid.zero_points[0])
            info = np.iinfo(grid.dtype)
            v = ref / scale
            v += zp
            np.rint(v, out=v)
            np.clip(v, info.min, info.max, out=v)
            v -= zp
            v *= scale
            v -= ref
            with np.errstate(over="ignore"):
                grid_err = np.dot(v, v)
            self.ss_grid += float(grid_err if np.isfinite(grid_err) else
                                  np.dot(v.astype(np.float64), v.astype(np.float64)))

    @staticmethod
    def _sqnr(signal: float, noise: float) -> float:
        if noise <= 0:
            return math.inf
        if signal <= 0 or not math.isfinite(noise):  # an all-zero reference with errors
            return -math.inf
        return 10.0 * math.log10(signal / noise)

    def nsr(self) -> float:
        return self.ss_err / self.ss_ref if self.ss_ref > 0 else (math.inf if self.ss_err else 0.0)

    def grid_nsr(self) -> float:
        return self.ss_grid / self.ss_ref if self.ss_ref > 0 else (math.inf if self.ss_grid else 0.0)

    def stats(self, name: str, shape: Sequence[int], **extra: Any) -> ErrorStats:
        denom = math.sqrt(self.ss_q * self.ss_ref)
        cosine = self.dot / denom if denom > 0 else (1.0 if self.ss_err == 0 else 0.0)
        return ErrorStats(name, tuple(int(d) for d in shape), self._sqnr(self.ss_ref, self.ss_err),
                          float(cosine), self.max_abs, **extra)


def _rank(q: ModelRunner, pairs: list, accs: list[_Accum]) -> tuple[ErrorStats, ...]:
    if not pairs:
        return ()
    sg = q.parsed.subgraphs[0]
    producer, concat_of = {}, {}
    for k, op in enumerate(sg.operators):
        name = _tflite.op_name(q.parsed, op)
        for o in op.outputs:
            producer[int(o)] = (k, name, [int(i) for i in op.inputs])
        if name == "CONCATENATION":
            concat_of.update((int(i), int(op.outputs[0])) for i in op.inputs)
    nsr = {qt.index: acc.nsr() for (qt, _, _), acc in zip(pairs, accs)}
    by_index = {qt.index: qt for qt, _, _ in pairs}

    def shared(qt: TensorIO) -> str:
        out = by_index.get(concat_of.get(qt.index, -1))
        return out.name if out is not None and _same_grid(out, qt) else ""

    rows = []
    for (qt, _, shape), acc in zip(pairs, accs):
        op_index, op, ins = producer.get(qt.index, (-1, "INPUT", []))
        nsr_in = max((nsr[i] for i in ins if i in nsr), default=0.0)
        inherited = any(i in by_index and _same_grid(by_index[i], qt) for i in ins)
        added = max(nsr[qt.index] - nsr_in, 0.0 if inherited else acc.grid_nsr())
        local = _Accum._sqnr(1.0, added)
        rows.append(acc.stats(qt.name, shape, index=qt.index, op=op, op_index=op_index,
                              range_sqnr_db=_Accum._sqnr(1.0, acc.grid_nsr()),
                              local_sqnr_db=local, inherited_range=inherited,
                              shares_grid_with=shared(qt)))
    # Worst first; near-ties (within 0.05 dB) go to the earlier op, where the error enters.
    # A tensor whose float values are all zero has no SQNR to rank by (any error is -inf
    # dB): it goes last.
    silent = {qt.index for (qt, _, _), acc in zip(pairs, accs) if acc.ss_ref == 0}
    rows.sort(key=lambda r: (r.index in silent, round(r.local_sqnr_db, 1), r.op_index))
    return tuple(rows)


def _same_grid(a: TensorIO, b: TensorIO) -> bool:
    return (a.dtype == b.dtype and np.array_equal(a.zero_points, b.zero_points)
            and np.allclose(a.scales, b.scales, rtol=1e-6, atol=0))


# --------------------------------------------------------------------- helpers
def _warn_off_scale(inputs: Sequence[TensorIO], arrays: Sequence[np.ndarray]) -> None:
    """Warns where the data do not fit an integer input's grid: many values clipped, or
    so few levels used that the data look scaled otherwise than the calibration data."""
    for t, a in zip(inputs, arrays):
        if not t.quantized or len(t.scales) != 1 or not a.size:
            continue
        scale, zero = float(t.scales[0]), int(t.zero_points[0])
        info = np.iinfo(t.dtype)
        lo, hi = (info.min - zero) * scale, (info.max - zero) * scale
        clipped = float(np.mean((a < lo - scale) | (a > hi + scale)))
        levels = (float(a.max()) - float(a.min())) / scale
        if clipped > 0.01 or levels < 4:
            _log.warning(
                "Input %r: the data span [%g, %g]; the int8 model's input grid spans [%g, %g] "
                "(%.1f%% of the values clipped, %.0f of its 256 levels used). Were the data "
                "scaled as the calibration data were (0-1 against 0-255, say)?", t.key,
                float(a.min()), float(a.max()), lo, hi, 100 * clipped, min(levels, 255))


def _length(a: Any) -> int | None:
    try:
        return len(a)
    except TypeError:
        return None


def _data_length(data: Any) -> int | None:
    """How many samples array data holds (an array, a tensor, or a dict of them by input
    name); None for lists, streams and anything else, whose length says less."""
    if isinstance(data, dict) and data:
        data = next(iter(data.values()))
    return int(data.shape[0]) if hasattr(data, "shape") and len(data.shape) else None


def _tflite_reference_specs(reference: Any) -> list[InputSpec] | None:
    """The input specs of a float `.tflite` reference (its bytes), or None."""
    from tfq8.models import specs_from_tflite  # noqa: PLC0415

    if not isinstance(reference, bytes):
        return None
    try:
        return specs_from_tflite(reference, keep_batch=True, by_signature=True)
    except Exception:  # noqa: BLE001 - not a model: ModelRunner reports it below
        return None




def _with_positions(specs: list[InputSpec], keras_specs: list[InputSpec] | None
                    ) -> list[InputSpec]:
    """`specs` (the int8 model's) with each input's Keras position, where the names match."""
    if not keras_specs:
        return specs
    position = {s.name: s.position for s in keras_specs}
    if sorted(position) != sorted(s.name for s in specs):
        return specs
    return [dataclasses.replace(s, position=position[s.name]) for s in specs]


def _reference_model(reference: Any, rep: RepresentativeDataset
                     ) -> tuple[bytes | None, str, list[str] | None]:
    """(float .tflite, kind of reference, the Keras model's output names or None).

    A Keras model or model path arrives loaded, as the `ModelHandle` `load_reference` made.
    """
    from tfq8.calibration import Calibration  # noqa: PLC0415
    from tfq8.models import ModelHandle  # noqa: PLC0415
    from tfq8.qat import is_qat  # noqa: PLC0415

    if reference is None:
        return None, "none", None
    if isinstance(reference, Calibration):
        return reference.model, "calibration", None
    if isinstance(reference, bytes):  # a .tflite, read by check(); ModelRunner verifies it
        return reference, "tflite", None
    if isinstance(reference, ModelHandle):
        handle = reference
        if is_qat(handle):
            # The QAT float model as Keras runs it (FakeQuant simulated in float). Its
            # calibrated graph would not do: the converter has already made it int8
            # wherever QAT annotated it, so int8 would be compared with itself.
            return handle.to_float_tflite(), "keras", _output_names(handle)
        first = rep.take(min(len(rep), _CALIB_SAMPLES))
        names = [s.name for s in rep.specs or []]
        by_name = sorted(names) == sorted(s.name for s in handle.specs)
        try:  # by name where the two agree: no order to guess
            sample = representative_dataset(
                dict(zip(names, first.inputs)) if by_name and len(names) > 1 else first.inputs,
                specs=handle.specs)
        except ValueError as e:
            raise ValueError(
                f"reference does not take the inputs the int8 model takes (is it the float "
                f"model this int8 model came from?): {e}") from None
        step = sample.batch
        if step > 1:  # whole batches of its fixed size (only the float graph is used)
            repeat = np.arange(max(step, len(sample) // step * step)) % len(sample)
            sample = RepresentativeDataset([a[repeat] for a in sample.inputs], sample.specs)
        handle.check_inputs(sample.inputs)
        return handle.calibrated(sample), "keras", _output_names(handle)
    raise TypeError(
        "reference must be a Keras model, a .keras/.h5/SavedModel path, a float .tflite (bytes "
        f"or path), a tfq8.Calibration or None. Received: {type(reference).__name__}")


def _output_names(handle: Any) -> list[str] | None:
    """The Keras model's output names, if it has distinct ones."""
    from tfq8.int8_metrics import output_names  # noqa: PLC0415 (imports Keras)

    model = getattr(handle, "keras_model", None)
    names = output_names(model) if model is not None else None
    return names if names and len(set(names)) == len(names) else None


def _named(outputs: list[TensorIO], names: list[str]) -> list[TensorIO]:
    """The outputs in the Keras model's order, keyed by its output names.

    Keras 3 models' TFLite outputs are `output_0`, `output_1`, ... (already in
    order); tf_keras models' carry the output names themselves, listed by name.
    """
    if len(names) != len(outputs):
        return outputs
    keys = [t.key for t in outputs]
    if keys == [f"output_{k}" for k in range(len(keys))]:
        return [dataclasses.replace(t, key=name) for t, name in zip(outputs, names)]
    if sorted(keys) == sorted(names):
        return sorted(outputs, key=lambda t: names.index(t.key))
    return outputs


def _match(ours: Sequence[TensorIO], theirs: Sequence[TensorIO]) -> list[int]:
    """For each of `ours`, the index in `theirs` with the same name (else same position)."""
    names = [t.key for t in theirs]
    if sorted(names) == sorted(t.key for t in ours) and len(set(names)) == len(names):
        return [names.index(t.key) for t in ours]
    return list(range(len(ours)))


def _reorder(arrays: Sequence[np.ndarray], ours: Sequence[TensorIO],
             theirs: Sequence[TensorIO]) -> list[np.ndarray]:
    """`arrays` in our input order -> the reference's input order."""
    m = _match(ours, theirs)
    out: list[np.ndarray] = [None] * len(arrays)  # type: ignore[list-item]
    for k, j in enumerate(m):
        out[j] = arrays[k]
    return out


def _tensor_pairs(q: ModelRunner, f: ModelRunner) -> list[tuple[TensorIO, int, tuple[int, ...]]]:
    """(int8 tensor, float tensor index, per-sample shape) for tensors matched by name."""
    def activations(r: ModelRunner) -> dict[str, tuple[int, Any]]:
        out = {}
        for i, t in enumerate(r.parsed.subgraphs[0].tensors):
            if not is_constant(t, r.parsed.buffers):
                out.setdefault(_tflite.tensor_name(t), (i, t))
        return out

    fq = activations(f)
    details = {d["index"]: d for d in q.interpreter.get_tensor_details()}
    pairs = []
    for name, (i, t) in activations(q).items():
        if name not in fq or i not in details:
            continue
        j, ft = fq[name]
        if _tflite.tensor_type_name(ft.type) != "FLOAT32":
            continue
        shape_q = tuple(int(d) for d in (t.shape if t.shape is not None else ()))[1:]
        shape_f = tuple(int(d) for d in (ft.shape if ft.shape is not None else ()))[1:]
        tio = TensorIO.from_details(details[i])
        if shape_q != shape_f or not tio.quantized or len(tio.scales) != 1:
            continue
        pairs.append((tio, j, shape_q))
    return pairs


def _output_kind(output: Any) -> None:
    if not isinstance(output, str) and (
            isinstance(output, bool) or not isinstance(output, (int, np.integer))):
        raise TypeError(f"output must be an output index or name. Received: {type(output).__name__}")


def _output_index(q: ModelRunner, output: int | str, aliases: dict[str, int]) -> int:
    names = [t.key for t in q.outputs]
    if isinstance(output, str):
        for k, t in enumerate(q.outputs):
            if output in (t.name, t.key):
                return k
        if output in aliases:
            return aliases[output]
        raise ValueError(f"output must name one of the model's outputs {names}. "
                         f"Received: output={output!r}")
    _output_kind(output)
    if not 0 <= output < len(q.outputs):
        raise ValueError(f"output must be an index below {len(q.outputs)} (outputs {names}). "
                         f"Received: output={output}")
    return int(output)


def _labels_taken(labels: Any, data: Any, num_samples: int | None) -> Any:
    """The labels of the samples `num_samples` takes of `data` (all of them without it)."""
    if num_samples is None:
        return labels
    total = _data_length(data)
    if total is not None and _length(labels) not in (None, total):
        raise ValueError(f"labels must have one entry per sample of data ({total}). "
                         f"Received: labels of length {_length(labels)}")
    try:
        return labels[:num_samples]
    except (TypeError, KeyError, ValueError):
        return labels  # not a sequence: _labels says what it should be


def _check_label_count(count: int, n: int) -> None:
    if count < n:
        raise ValueError(f"labels must have one entry per sample ({n}). Received: labels of "
                         f"length {count}")
    if count > n:
        raise ValueError(f"labels must have one entry per sample ({n} samples used). Received: "
                         f"labels of length {count}; pass as many labels as samples")


def _labels(labels: Any, n: int, out: TensorIO) -> np.ndarray:
    try:
        y = np.asarray(labels)
    except Exception:  # noqa: BLE001
        raise TypeError(f"labels must be an array of class indices. Received: "
                        f"{type(labels).__name__}") from None
    if y.ndim == 0 or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise TypeError(f"labels must be an array of class indices or one-hot rows. Received: "
                        f"{y.dtype} array of shape {y.shape}")
    _check_label_count(len(y), n)
    classes = out.shape[-1] if out.shape else 1
    positions = _positions(out)
    if positions:  # a class per pixel or step: [N, H, W], or one-hot [N, H, W, C]
        if y.ndim == len(out.shape) and y.shape[-1] == classes > 1:
            y = np.argmax(y, axis=-1)
        elif y.ndim == len(out.shape) and y.shape[-1] == 1:
            y = y[..., 0]
    elif y.ndim == 2 and y.shape[1] == classes and classes > 1:
        y = np.argmax(y, axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != (1 + len(positions) if positions else 1):
        raise ValueError(f"labels must be class indices [N] or one-hot [N, {classes}]"
                         + (f" (per position of output {out.key!r}: [N, "
                            f"{', '.join(map(str, positions))}] or one-hot)" if positions else "")
                         + f". Received: shape {y.shape}")
    if np.issubdtype(y.dtype, np.complexfloating):
        raise TypeError(f"labels must be an array of class indices or one-hot rows. Received: "
                        f"{y.dtype} array of shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError("labels must be finite class indices. Received: NaN or Inf values")
    if np.issubdtype(y.dtype, np.floating) and not np.array_equal(y, np.round(y)):
        raise ValueError("labels must be integral class indices. Received: non-integral values")
    top = max(classes, 2)
    if y.min() < 0 or y.max() >= top:  # before the cast to int64, which large floats overflow
        raise ValueError(f"labels must lie in 0..{top - 1} for output {out.key!r}. "
                         f"Received: values {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def _targets_of(found: dict, out: TensorIO, k: int, aliases: dict[str, int], *,
                warn: bool = True) -> Any:
    """The y of (x, {name: y, ...}) or (x, [y0, y1, ...]) data for output `out` (index `k`
    in the Keras model's order), or None (logged if `warn`) if it has none."""
    names = [out.key, out.name] + [a for a, j in aliases.items() if j == k]
    for key in names if all(isinstance(key, str) for key in found) else [k]:
        if key in found:
            return found[key]
    if warn:
        _log.warning("The data's y hold targets for outputs %s, none for output %r: no accuracy. "
                     "Pass output= (tfq8 check: --label-output) to name the output they are for, "
                     "or labels= (--labels).",
                     sorted(found, key=str), out.key)
    return None


def _labels_in_data(found: np.ndarray, n: int, out: TensorIO) -> np.ndarray | None:
    """The y of (x, y) data as class labels, or None (logged) if they are not class labels:
    regression targets, say, which the data may carry for model.fit."""
    classes = out.shape[-1] if out.shape else 1
    y = np.asarray(found)
    one_hot = (y.ndim == 2 and y.shape[1] == classes and classes > 1
               and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))
    positions = _positions(out)
    if positions:  # a class per pixel or step
        one_hot = (y.ndim == len(out.shape) and y.shape[-1] == classes > 1
                   and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=-1) == 1))
    integral = (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_ or (
        np.issubdtype(y.dtype, np.floating) and np.array_equal(y, np.round(y)))) and (
        y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1) if not positions
        else y.ndim in (1 + len(positions), len(out.shape)))  # float 0./1. targets too
    if not (one_hot or integral):
        _log.info("The data's y (%s of shape %s) are not class indices or one-hot rows for "
                  "output %r: no accuracy. Pass labels= to score them.", y.dtype, y.shape, out.key)
        return None
    try:
        return _labels(y, n, out)
    except (ValueError, TypeError) as e:
        _log.info("The data's y are not labels of output %r (%s): no accuracy.", out.key, e)
        return None


def _positions(out: TensorIO) -> tuple[int, ...]:
    """The axes between batch and classes of an output scored per pixel or step (a per-pixel
    softmax's H and W), or () for a classifier (also one shaped [N, 1, 1, C])."""
    positions = tuple(out.shape[1:-1]) if len(out.shape) > 2 else ()
    return positions if any(d != 1 for d in positions) else ()


def _per_position(y: np.ndarray, positions: int, out: TensorIO) -> np.ndarray:
    """Labels as [N, positions], like `top1`'s classes: one per sample for a classifier, one
    per pixel or step for an output with several positions."""
    y = y.reshape(len(y), -1)
    if y.shape[1] != positions:
        raise ValueError(f"labels must give one class per sample and position of output "
                         f"{out.key!r} ({positions} per sample). Received: {y.shape[1]} per "
                         "sample")
    return y


def _threshold(values: np.ndarray) -> float:
    """A single unit's decision threshold: 0.5 for probabilities, 0 for logits. Decided on
    the float outputs where there are any, so int8 and float are cut at the same point."""
    return 0.5 if values.size and values.min() >= 0 and values.max() <= 1 else 0.0


def top1(values: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class per sample and position, shape [N, positions]: argmax over the last axis (a
    single unit is thresholded), so a per-pixel or per-step output gets one class per pixel
    or step, as Keras' accuracy counts them (`check` and the callback's int8 metrics both
    use it). A classifier has one position. `threshold` may be None where every output
    has several classes."""
    v = values.reshape(len(values), -1) if values.ndim < 2 else values
    top = (np.argmax(v, axis=-1) if v.shape[-1] > 1
           else (v[..., 0] > threshold).astype(np.int64))
    return top.reshape(len(values), -1)


def _json_float(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _db(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if v == math.inf else f"{v:.1f}"

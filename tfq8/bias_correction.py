"""Bias correction: each int8 convolution's and dense layer's output centred on float's.

Rounding weights and activations shifts the mean of a convolution's or dense
layer's output a little in every output channel. A channel's weight rounding
errors do not average out over its inputs, and a ReLU passes only the upper
half of the noise it receives, so the shifts add up along the graph. Ranges
cannot remove them; a bias can. `correct_biases` runs the int8 model and the
float model on calibration samples and moves each op's int32 bias by minus the
mean difference of its output, channel by channel.

The ops are corrected one after another, in the order the graph runs them, each
measured with the ones before it already corrected (the empirical bias
correction of Nagel et al., "Data-Free Quantization Through Weight Equalization
and Bias Correction", 2019). Correcting them all from one run does not work: an
op's shift includes what it inherits from the ops before it, so they are
corrected twice. On MLPerf Tiny ResNet-8 that lost 5.0 dB of output SQNR where
one op after another gained 0.9 dB.

Only positions where the float output lies inside the op's int8 grid count: an
output clipped by a fused ReLU or ReLU6, or by its range, is an error no bias
shift should chase.

It is opt-in (`tfq8.convert(..., bias_correction=True)`): on the benchmark suite
it raises output SQNR and top-1 agreement with float, but top-1 accuracy against
labels only moves toward the float model's, which is not always up (see
`benchmarks/README.md`, "Bias correction").

Example:
    >>> calib = tfq8.calibrate(model, x_train[:500])
    >>> blob = tfq8.convert(calibration=calib, bias_correction=True)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import numpy as np

from tfq8 import _tflite

_log = logging.getLogger("tfq8")

# Builtin op -> index of its bias among the op's inputs.
BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
# Bytes of float outputs kept per sample are budgeted as bit masks (1/8 byte a value)
# plus the float64 sums per channel; the samples used are capped to fit this budget.
MASK_BUDGET_BYTES = 256 << 20
MIN_SAMPLES = 8
# Values per channel an op's mean difference is taken over: a convolution with many
# output positions per sample is measured on fewer samples (whole batches). On
# ResNet-8 (first convolutions on 8 samples instead of 256) test-set SQNR was the
# same (25.02 against 25.04 dB) in 0.9 s instead of 2.0 s.
MIN_OBSERVATIONS = 8192
# One thread: LiteRT's kernels on two threads took 7x longer on MobileNetV3-Small's
# small tensors (20.7 s against 2.9 s; ResNet-8 1.2 s against 0.9 s), and with one
# the biases do not depend on the machine's core count (with two, float sums
# differed in the last bits and moved 19 of MobileNetV3-Small's 9,745 bias values).


@dataclasses.dataclass
class BiasCorrectionReport:
    """What `correct_biases` did.

    Attributes:
        ops: Ops whose bias was examined (name of each op's output tensor).
        changed: Bias values moved, over all ops.
        samples: Calibration samples used.
        sqnr_before: Output SQNR (dB) over those samples before correction
            (NaN when no bias value moved: nothing was scored).
        sqnr_after: The same after correction.
        kept: Whether the corrected model was returned (it is only when its
            SQNR on the samples is not lower).
        excluded: Indices of the samples left out (`exclude`).
    """

    ops: list[str]
    changed: int
    samples: int
    sqnr_before: float = float("nan")
    sqnr_after: float = float("nan")
    kept: bool = False
    excluded: list[int] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """One line for the log.

        Example:
            >>> report.summary()
            'bias correction: 170 bias values of 4 ops moved; output SQNR 36.06 -> 39.31 dB ...'
        """
        if not self.changed:
            return (f"bias correction: no bias value of {len(self.ops)} op(s) moved on "
                    f"{self.samples} calibration sample(s)")
        verdict = "kept" if self.kept else "not kept (no better)"
        left_out = (f" ({len(self.excluded)} corrupted-looking sample(s) left out)"
                    if self.excluded else "")
        return (f"bias correction: {self.changed} bias value(s) of {len(self.ops)} op(s) moved; "
                f"output SQNR {self.sqnr_before:.2f} -> {self.sqnr_after:.2f} dB on "
                f"{self.samples} calibration sample(s){left_out}, {verdict}")


@dataclasses.dataclass
class _Target:
    output: int  # its output tensor (int8 model)
    reference: int  # the same tensor in the float model
    scale: float
    zero_point: int
    bias: int  # bias tensor index
    bias_scales: np.ndarray


def correct_biases(int8_model: bytes, float_model: bytes, samples: Sequence[np.ndarray], *,
                   exclude: Sequence[int] = ()) -> tuple[bytes, BiasCorrectionReport]:
    """Moves the int32 biases of `int8_model` so its op outputs' means match float's.

    Args:
        int8_model: A quantized `.tflite` (bytes) made from `float_model`.
        float_model: The float `.tflite` it was quantized from (tensor names shared).
        samples: Float calibration samples, one array per model input, in the
            models' input order.
        exclude: Indices of samples to leave out, such as corrupted frames
            (`tfq8.convert` passes those `auto` finds: a frame of saturated
            noise would shift the means and decide the score).

    Returns:
        `(model, report)`: the corrected model if its output SQNR against the
        float model on `samples` is not lower than `int8_model`'s, else
        `int8_model` unchanged; and a `BiasCorrectionReport`.

    Raises:
        ValueError: If `samples` is empty.

    Example:
        >>> fixed, report = correct_biases(blob, calib.model, calib.samples)
        >>> print(report.summary())
    """
    from tfq8.harness.interpreter import ModelRunner, run_outputs  # noqa: PLC0415 (cycle)
    from tfq8.ranges.auto import error_energy, signal_energy, total_sqnr_db  # noqa: PLC0415

    samples = [np.asarray(a) for a in samples]
    if not samples or len(samples[0]) == 0:
        raise ValueError("samples: expected at least one calibration sample per model input; "
                         "received none")
    exclude = sorted({int(i) for i in exclude})
    if exclude:
        keep = np.setdiff1d(np.arange(len(samples[0])), exclude)
        if keep.size == 0:
            raise ValueError(f"exclude: leaves none of the {len(samples[0])} samples. "
                             f"Received: {len(exclude)} indices")
        samples = [a[keep] for a in samples]
    parsed = _tflite.read_model(int8_model)
    floats = ModelRunner(float_model, preserve_all_tensors=True, num_threads=1)
    floats.fit_batch_to(samples)
    targets = _targets(parsed, floats)
    sizes = _sizes(floats, targets, samples)
    n = _sample_count(sizes, len(samples[0]))
    samples = [a[:n] for a in samples]
    report = BiasCorrectionReport([_tflite.tensor_name(parsed.subgraphs[0].tensors[t.output])
                                   for t in targets], 0, n, excluded=exclude)
    if not targets:
        return int8_model, report
    masks, sums, counts = _float_side(floats, targets, samples)
    sg = parsed.subgraphs[0]
    out = bytearray(int8_model)  # biases are changed in place in the serialized model
    views = _tflite.buffer_views(out, [sg.tensors[t.bias].buffer for t in targets])
    runner = ModelRunner(int8_model, preserve_all_tensors=True, num_threads=1,
                         batch_size=floats.batch_size)
    step = runner.fixed_batch or runner.batch_size
    for k, t in enumerate(targets):
        view = views.get(sg.tensors[t.bias].buffer)
        if view is None:
            continue
        # Enough whole batches for `MIN_OBSERVATIONS` values per channel.
        per_sample = max(1, sizes[k] // int(sg.tensors[t.output].shape[-1]))
        used = min(len(masks[k]), math.ceil(math.ceil(MIN_OBSERVATIONS / per_sample) / step))
        runner = runner.with_constants(out)
        q_sum = np.zeros_like(sums[k][0])
        for b, _ in enumerate(runner.batches([a[:used * step] for a in samples])):
            q = (runner.tensor(t.output).astype(np.float64) - t.zero_point) * t.scale
            q = q.reshape(-1, q.shape[-1])
            mask = np.unpackbits(masks[k][b], count=q.size).reshape(q.shape).astype(bool)
            q_sum += np.where(mask, q, 0.0).sum(axis=0)
        f_sum, count = sum(sums[k][:used]), sum(counts[k][:used])
        mean = np.where(count > 0, (q_sum - f_sum) / np.maximum(count, 1), 0.0)
        delta = np.round(-mean / t.bias_scales).astype(np.int64)
        if np.any(delta):
            info = np.iinfo(np.int32)
            bias = np.frombuffer(view.tobytes(), dtype="<i4").astype(np.int64)
            view[:] = np.frombuffer(np.clip(bias + delta, info.min, info.max).astype("<i4")
                                    .tobytes(), dtype=np.uint8)
            report.changed += int(np.count_nonzero(delta))
    if not report.changed:
        return int8_model, report
    corrected = bytes(out)
    # Scored as `auto` scores: output SQNR with energies summed over the samples,
    # averaged over the model's outputs.
    reference = run_outputs(float_model, samples, step)
    signal = signal_energy(reference)

    def sqnr(model: bytes) -> float:
        return total_sqnr_db(signal, error_energy(run_outputs(model, samples, step), reference))

    report.sqnr_before, report.sqnr_after = sqnr(int8_model), sqnr(corrected)
    report.kept = report.sqnr_after >= report.sqnr_before
    return (corrected if report.kept else int8_model), report


def _targets(parsed: "_tflite.schema.ModelT", floats: object) -> list[_Target]:
    """The ops of subgraph 0, in run order, whose int32 bias can move alone."""
    sg = parsed.subgraphs[0]
    fsg = floats.parsed.subgraphs[0]  # type: ignore[attr-defined]
    by_name = {}
    for i, t in enumerate(fsg.tensors):
        by_name.setdefault(_tflite.tensor_name(t), (i, t))
    uses: dict[int, int] = {}
    buffer_uses: dict[int, int] = {}
    # An op feeding a model output of another type (float32 or uint8) hands its name to
    # the DEQUANTIZE or QUANTIZE the quantizer adds there ('out:0' becomes 'out:01'):
    # its float twin is found by that op's output instead.
    casts: dict[int, int] = {}
    for g in parsed.subgraphs:
        for op in g.operators or []:
            for i in op.inputs if op.inputs is not None else []:
                if g is sg and i >= 0:
                    uses[i] = uses.get(i, 0) + 1
            if (g is sg and _tflite.op_name(parsed, op) in ("DEQUANTIZE", "QUANTIZE")
                    and op.inputs is not None and len(op.inputs) == 1
                    and op.outputs is not None and len(op.outputs) == 1):
                casts.setdefault(int(op.inputs[0]), int(op.outputs[0]))
        for t in g.tensors or []:
            buffer_uses[t.buffer] = buffer_uses.get(t.buffer, 0) + 1
    out = []
    for k, op in enumerate(sg.operators or []):
        slot = BIAS_INPUT.get(_tflite.op_name(parsed, op))
        inputs = list(op.inputs) if op.inputs is not None else []
        if slot is None or len(inputs) <= slot or inputs[slot] < 0 or len(op.outputs) != 1:
            continue
        bias_t, out_t = sg.tensors[inputs[slot]], sg.tensors[op.outputs[0]]
        bq, oq = bias_t.quantization, out_t.quantization
        if (_tflite.tensor_type_name(bias_t.type) != "INT32"
                or _tflite.tensor_type_name(out_t.type) != "INT8"
                or uses.get(inputs[slot], 0) != 1 or buffer_uses.get(bias_t.buffer, 0) != 1
                or bq is None or bq.scale is None or oq is None or oq.scale is None
                or len(oq.scale) != 1 or bias_t.shape is None or len(bias_t.shape) != 1):
            continue
        found = by_name.get(_tflite.tensor_name(out_t))
        if found is None and op.outputs[0] in casts:
            found = by_name.get(_tflite.tensor_name(sg.tensors[casts[op.outputs[0]]]))
        if found is None or _tflite.tensor_type_name(found[1].type) != "FLOAT32":
            continue
        if list(found[1].shape)[1:] != list(out_t.shape)[1:] or out_t.shape[-1] != bias_t.shape[0]:
            continue
        scales = np.asarray(bq.scale, np.float64)
        if scales.size not in (1, bias_t.shape[0]) or not np.all(scales > 0):
            continue
        data = parsed.buffers[bias_t.buffer].data
        if data is None or len(data) != 4 * bias_t.shape[0]:
            continue
        out.append(_Target(op.outputs[0], found[0], float(oq.scale[0]),
                           int(oq.zeroPoint[0]), inputs[slot], scales))
    return out


def _sizes(floats: object, targets: list[_Target], samples: list[np.ndarray]) -> list[int]:
    """Values of each target's output per sample. Dynamic height and width are stored
    as 1 in the flatbuffer, so a model with them is measured on one sample."""
    fsg = floats.parsed.subgraphs[0]  # type: ignore[attr-defined]
    sizes = [int(np.prod(fsg.tensors[t.reference].shape[1:])) for t in targets]
    if targets and any(-1 in t.signature[1:] for t in floats.inputs):  # type: ignore[attr-defined]
        for _ in floats.batches([a[:1] for a in samples]):  # type: ignore[attr-defined]
            sizes = [int(floats.tensor(t.reference).size)  # type: ignore[attr-defined]
                     for t in targets]
    return sizes


def _sample_count(sizes: list[int], n: int) -> int:
    """Samples whose float output masks fit `MASK_BUDGET_BYTES` (at least `MIN_SAMPLES`)."""
    per_sample = sum(sizes) / 8
    fit = int(MASK_BUDGET_BYTES // max(per_sample, 1.0))
    return max(1, min(n, max(MIN_SAMPLES, fit)))


def _float_side(floats: object, targets: list[_Target], samples: list[np.ndarray]
                ) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Per target and batch: a packed mask of the positions inside its int8 grid,
    and the float output's sum and count per channel over them."""
    masks: list[list[np.ndarray]] = [[] for _ in targets]
    sums: list[list[np.ndarray]] = [[] for _ in targets]
    counts: list[list[np.ndarray]] = [[] for _ in targets]
    for _ in floats.batches(samples):  # type: ignore[attr-defined]
        for k, t in enumerate(targets):
            f = floats.tensor(t.reference).astype(np.float64)  # type: ignore[attr-defined]
            f = f.reshape(-1, f.shape[-1])
            lo, hi = _tflite.grid_range("INT8", t.scale, t.zero_point)
            inside = (f > lo + t.scale / 2) & (f < hi - t.scale / 2)
            masks[k].append(np.packbits(inside, axis=None))
            sums[k].append(np.where(inside, f, 0.0).sum(axis=0))
            counts[k].append(inside.sum(axis=0))
    return masks, sums, counts


__all__ = ["BiasCorrectionReport", "correct_biases"]

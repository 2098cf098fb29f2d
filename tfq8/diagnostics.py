"""Which activation tensors are hostile to int8, from a calibration's histograms.

A tensor whose largest `|x|` sits far above the bulk of its values leaves most
of them a sliver of the int8 grid. For every activation tensor of a
`Calibration`, `diagnose` records its range, the `outlier_percentile` of its
non-zero `|x|` and their ratio (`TensorDiagnostics`), and judges it hostile
when the ratio exceeds `outlier_ratio`, or when its range grew by more than
`range_growth` since its first record while the ratio at least doubled. The
figures are pure functions of the histograms; `tfq8.CalibrationCallback` keeps
the history across epochs and warns once per hostile tensor.

Example:
    >>> history = {}
    >>> hostile = diagnose(tfq8.calibrate(model, x_train[:256]), model, epoch=1,
    ...                    history=history, outlier_ratio=8.0, outlier_percentile=99.9,
    ...                    range_growth=4.0)
    >>> {name: records[-1].outlier_ratio for name, records in history.items()}
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from tfq8 import _tflite
from tfq8.calibration import Calibration
from tfq8.models import sublayers
from tfq8.stats.histogram import Histogram

__all__ = ["SUGGESTION", "TensorDiagnostics", "diagnose"]

SUGGESTION = (
    "Bound it during training: a clipped activation (ReLU6, keras.layers.ReLU(max_value=...)), "
    "clipping (keras.ops.clip), a BatchNormalization before the activation, or weight decay; "
    "or let tfq8 clip its range (method='mse', 'kl' or 'percentile')."
)


@dataclasses.dataclass(frozen=True)
class TensorDiagnostics:
    """Quantization-relevant figures of one activation tensor at one calibration.

    Attributes:
        epoch: The 1-based epoch after which the statistics were taken.
        tensor: Tensor name in the TFLite graph.
        layer: The Keras layer (or output) it belongs to, if known.
        producer: The TFLite op writing it (such as `CONV_2D`), or `INPUT`.
        min: Smallest value seen.
        max: Largest value seen.
        abs_max: `max(|min|, |max|)`.
        percentile_abs: The `outlier_percentile` of the non-zero `|x|`.
        outlier_ratio: `abs_max / percentile_abs` (1 for well-behaved tensors; a
            ratio r leaves the bulk of the values about 1/r of the int8 grid).
        hostile: Whether `diagnose` judged the tensor hostile to int8.
    """

    epoch: int
    tensor: str
    layer: str | None
    producer: str
    min: float
    max: float
    abs_max: float
    percentile_abs: float
    outlier_ratio: float
    hostile: bool = False


def diagnose(calib: Calibration, model: Any, *, epoch: int,
             history: dict[str, list[TensorDiagnostics]], outlier_ratio: float,
             outlier_percentile: float, range_growth: float) -> dict[str, str]:
    """Records every calibrated tensor's figures at `epoch` and says which are hostile to int8.

    Args:
        calib: The `Calibration` taken after `epoch`.
        model: The Keras model calibrated (its layer names tell a tensor's layer).
        epoch: The 1-based epoch after which `calib` was taken.
        history: Tensor name -> its records so far, oldest first; one
            `TensorDiagnostics` per tensor is appended.
        outlier_ratio: A tensor whose `max|x|` exceeds this multiple of its
            `outlier_percentile` of the non-zero `|x|` is hostile.
        outlier_percentile: The percentile of the non-zero `|x|` used above.
        range_growth: Also hostile: a tensor whose `max|x|` grew by more than this
            factor since its first record while its outlier ratio at least doubled.

    Returns:
        Tensor name -> why it is hostile, for the hostile tensors of `calib`
        (model inputs are never judged).

    Example:
        >>> history = {}
        >>> hostile = diagnose(calib, model, epoch=1, history=history, outlier_ratio=8.0,
        ...                    outlier_percentile=99.9, range_growth=4.0)
        >>> history[calib.tensors[1].name][-1].outlier_ratio   # 1 for a well-behaved tensor
    """
    layers = {layer.name for layer in sublayers(model)}
    outputs = _output_tensor_names(calib.model)
    q = outlier_percentile / 100.0
    hostile: dict[str, str] = {}
    for t in calib.tensors:
        h = t.histogram
        abs_max = max(abs(h.min), abs(h.max))
        p = _abs_quantile(h, q)
        # p = 0: (nearly) no non-zero values, such as a dead ReLU; exact in int8.
        ratio = abs_max / p if p > 0 else 1.0
        layer = outputs.get(t.index) or _layer_of(t.name, layers, getattr(model, "name", None))
        records = history.setdefault(t.name, [])
        reasons = []
        if t.producer != "INPUT":
            if ratio > outlier_ratio:
                reasons.append(
                    f"max|x| = {abs_max:.4g} is {ratio:.1f}x its {outlier_percentile:g}th "
                    f"percentile of |x| ({p:.4g}), so most values use about 1/{ratio:.0f} of "
                    "the int8 grid")
            if records:
                first = records[0]
                growth = abs_max / first.abs_max if first.abs_max > 0 else 1.0
                if growth > range_growth and ratio >= 2.0 * first.outlier_ratio:
                    reasons.append(
                        f"its range grew {growth:.1f}x since epoch {first.epoch} and faster than "
                        f"the bulk of its values (outlier ratio {first.outlier_ratio:.1f} -> "
                        f"{ratio:.1f})")
        record = TensorDiagnostics(epoch, t.name, layer, t.producer, float(h.min),
                                   float(h.max), float(abs_max), float(p), float(ratio),
                                   bool(reasons))
        records.append(record)
        if reasons:
            hostile.setdefault(t.name, "; ".join(reasons))
    return hostile


def _layer_of(tensor: str, layers: set[str], model_name: str | None = None) -> str | None:
    """The Keras layer a TFLite tensor name belongs to, if recognisable.

    A fused op's name lists its parts separated by ';', the final op first (for
    example `seq/re_lu_1/Relu;seq/batch_normalization_1/...`). Keras 3's export
    traces the model a second time, so its name scopes carry a `_1` suffix the
    layer names lack (layer `dense` -> scope `dense_1`); tf_keras's do not. The
    model's own scope (the first component) tells which is the case.
    """
    parts = [p.split("/") for p in tensor.split(";")]
    suffixed = bool(model_name) and parts[0][0] != model_name and re.sub(
        r"_\d+$", "", parts[0][0]) == model_name
    for components in parts:
        for component in reversed(components[1:-1] or components[:-1]):
            candidates = [re.sub(r"_\d+$", "", component), component] if suffixed else [component]
            for name in candidates:
                if name in layers:
                    return name
    return None


def _output_tensor_names(tflite_model: bytes) -> dict[int, str]:
    """Graph output tensor index -> 'output <name>' (their tensor names say nothing),
    from the model's one signature (read in place: no interpreter, no object-API copy)."""
    root = _tflite.schema.Model.GetRootAs(tflite_model, 0)
    if root.SignatureDefsLength() != 1:
        return {}
    sig = root.SignatureDefs(0)
    outputs = (sig.Outputs(k) for k in range(sig.OutputsLength()))
    return {int(o.TensorIndex()): f"output {(o.Name() or b'').decode()!r}" for o in outputs}


def _abs_quantile(h: Histogram, q: float) -> float:
    """Quantile `q` of the non-zero |x| of a histogram (values uniform per bin)."""
    if h.count == 0:
        return 0.0
    edges, counts = h.density(drop_zeros=True)
    lo = np.abs(edges[:-1])
    hi = np.abs(edges[1:])
    a, b = np.minimum(lo, hi), np.maximum(lo, hi)
    order = np.argsort(a, kind="stable")
    a, b, c = a[order], b[order], np.clip(counts[order], 0, None)
    total = c.sum()
    if total <= 0:
        return 0.0
    cum = np.cumsum(c)
    i = int(np.searchsorted(cum, q * total, side="left"))
    i = min(i, len(c) - 1)
    before = cum[i] - c[i]
    frac = (q * total - before) / c[i] if c[i] > 0 else 1.0
    return float(a[i] + min(max(frac, 0.0), 1.0) * (b[i] - a[i]))

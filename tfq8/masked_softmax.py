"""Masked softmaxes: a moderate fill for the masked attention scores.

Keras masks attention scores before their SOFTMAX with a value so negative that
the masked keys get no weight, and TFLite's int8 grid for the masked scores then
spans that value: every real score rounds to one code (the converter's own model
too). The masks the graph holds, each read by SOFTMAX alone:

* `SELECT(mask, scores, -2.4e38)`: Keras 3's `MultiHeadAttention` with an
  `attention_mask` or `use_causal_mask=True` (-0.7 times float32's largest).
* `SELECT(padding, scores - 1e9, scores)`: Keras 3's `Attention` with a mask.
* `scores - 1e9 * CAST(padding)`: tf_keras' `Attention` with a mask.
* `scores + (1 - CAST(mask)) * -1e9`: tf_keras' `MultiHeadAttention` with a
  boolean `attention_mask` or the masks of its inputs (`Embedding(mask_zero=True)`).
* `scores + causal`, a constant of 0s and -1e9s: tf_keras' `use_causal_mask=True`.

Each becomes `SELECT(mask, scores, lo - ln(512 * keys))` (a SELECT_V2 on the
boolean mask, or the constant's 0s, where it was an ADD or a SUB), with `lo`
the least score the calibrator saw: the masked keys of a row then take at most
1/512 of the softmax together (half its int8 step), and the grid spans the
scores and that one value. `Calibration.ranges` gives the output the range from
the fill to the scores' upper end, whatever the method (`mask_fills`). The ops
that computed only the mask are dropped.

A float mask (tf_keras' `MultiHeadAttention` with a float `attention_mask`
input, `scores + (1 - mask) * -1e9`) stays as it is: a mask value between 0 and
1, or above 1, weighs the scores in a way no moderate fill reproduces.

Tensor indices stay as they were (new tensors are appended; a dropped op's
tensors stay, unread), so statistics collected on the calibrated model still apply.

Example:
    >>> mask = masked_scores(parsed, sg, op)   # op: what a SOFTMAX reads
    >>> if mask is not None:
    ...     fill(mask, parsed, sg, op)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfq8 import _graph, _tflite

__all__ = ["MASKING_OPS", "Mask", "fill", "mask_fills", "masked_scores"]

MASKING_OPS = ("SELECT", "SELECT_V2", "ADD", "SUB")
"""The ops whose output may be a softmax's masked scores."""

_HUGE = 1e9  # a mask at or below -_HUGE stands for minus infinity
_FILL = "fill"  # the name ending of a moderate fill's constant
_SELECTS = ("SELECT", "SELECT_V2")
_LAYOUT = {"TRANSPOSE", "RESHAPE"}  # ops that move the masked scores about unchanged


@dataclasses.dataclass
class Mask:
    """How an op masks a softmax's scores: as a SELECT with the fill at input
    `fill_at` (1 or 2) and the scores at the other.

    Attributes:
        scores: The scores tensor.
        fill_at: The SELECT input (1 or 2) that takes the fill.
        condition: The boolean tensor to select on, the values of a new boolean
            constant, or None for the SELECT's own condition.
        fill_shape: The fill constant's shape.
        feeders: The ops that computed the mask alone, the last first.
    """

    scores: int
    fill_at: int
    condition: int | np.ndarray | None = None
    fill_shape: tuple[int, ...] = (1,)
    feeders: tuple = ()


def masked_scores(parsed, sg, op) -> Mask | None:
    """How `op` masks the scores of the SOFTMAX that alone reads it (through a TRANSPOSE
    or a RESHAPE, maybe), or None if it does not (or its scores have no calibrated
    range, or the rewrite would change its shape)."""
    out = sg.tensors[op.outputs[0]]
    if _softmax_input(parsed, sg, op.outputs[0]) is None or not _graph.has_range(out):
        return None
    name = _tflite.op_name(parsed, op)
    mask = _selected(parsed, sg, op) if name in _SELECTS else _added(parsed, sg, op, name)
    if mask is None or not _moderate(sg.tensors[mask.scores]):
        return None
    if name == "SELECT" or mask.condition is None and (
            mask.fill_shape == _shape(sg.tensors[op.inputs[mask.fill_at]])):
        return mask  # the fill takes the place (and the shape) of a SELECT's input
    condition = op.inputs[0] if mask.condition is None else mask.condition
    shapes = [_shape(sg.tensors[t]) if isinstance(t, (int, np.integer)) else t.shape
              for t in (condition, mask.scores)]
    if None in shapes or _shape(out) is None:
        return None
    try:  # the SELECT_V2 must give the op's output shape
        return mask if np.broadcast_shapes(*shapes, mask.fill_shape) == _shape(out) else None
    except ValueError:
        return None


def fill(mask: Mask, parsed, sg, op) -> None:
    """Masks the scores with `lo - ln(512 * keys)` instead, as `mask` says; drops the
    ops that computed the old mask alone.

    Masked scores then sit ln(512 * keys) below the least score the calibrator saw,
    so all the masked keys of a row together take at most 1/512 of the softmax,
    half its int8 output step.
    """
    chain = _softmax_input(parsed, sg, op.outputs[0])
    rows = sg.tensors[chain[-1]].shape  # SOFTMAX's input: a row of keys each
    keys = int(rows[-1]) if rows is not None and len(rows) else 1
    lo = float(sg.tensors[mask.scores].quantization.min[0])
    value = lo - float(np.log(512.0 * max(keys, 1)))
    const = _graph.constant(parsed, sg, op, np.full(mask.fill_shape, value, np.float32), _FILL,
                            shape=mask.fill_shape)
    if mask.condition is None:  # a SELECT already: the fill replaces the mask
        op.inputs[mask.fill_at] = const
    else:
        condition = mask.condition
        if isinstance(condition, np.ndarray):
            condition = _graph.constant(parsed, sg, op, condition, "keep", bool, condition.shape)
        values = [const, mask.scores][::1 if mask.fill_at == 1 else -1]
        _graph.become(parsed, op, "SELECT_V2", [condition, *values],
                      _tflite.schema.SelectV2OptionsT())
    for t in chain:
        if _graph.has_range(sg.tensors[t]):
            sg.tensors[t].quantization.min = np.array([value], np.float32)
    outputs = {int(t) for t in sg.outputs}
    for feeder in mask.feeders:  # the last first: each may leave the one before unread
        if feeder in sg.operators and not any(
                int(t) in outputs or _graph.readers(sg, t) for t in feeder.outputs):
            sg.operators.remove(feeder)


def mask_fills(model: bytes) -> dict[int, tuple[int, float]]:
    """Output tensor -> (scores tensor, fill value) of each SELECT whose masked scores
    `fill` filled with a moderate value (subgraph 0).

    Their int8 range must reach the fill: `Calibration.ranges` gives them
    (fill, the scores' upper end).
    """
    if not _graph.uses_any(model, _SELECTS):
        return {}
    parsed = _tflite.read_model(model)
    sg = parsed.subgraphs[0]
    found = {}
    for op in sg.operators:
        if _tflite.op_name(parsed, op) not in _SELECTS:
            continue
        for k in (1, 2):
            const = sg.tensors[op.inputs[k]]
            values = _graph.float_values(parsed, const)
            if _tflite.tensor_name(const).endswith(f"/tfq8_{_FILL}") and values is not None:
                chain = _softmax_input(parsed, sg, op.outputs[0]) or [int(op.outputs[0])]
                found.update({t: (int(op.inputs[3 - k]), float(values[0])) for t in chain})
    return found


def _softmax_input(parsed, sg, tensor) -> list[int] | None:
    """`tensor`, and the outputs of the TRANSPOSEs and RESHAPEs that alone read it and
    each other, up to the input of the SOFTMAX(es) that alone read the last; or None."""
    chain = [int(tensor)]
    while True:
        readers = _graph.readers(sg, chain[-1])
        names = {_tflite.op_name(parsed, o) for o in readers}
        if names == {"SOFTMAX"}:
            return chain
        if len(readers) != 1 or not names <= _LAYOUT or int(chain[-1]) in sg.outputs:
            return None
        chain.append(int(readers[0].outputs[0]))


# ------------------------------------------------------------------ the masks
def _selected(parsed, sg, op) -> Mask | None:
    """`SELECT(c, scores, huge)`, or `SELECT(c, scores - huge, scores)` (either order)."""
    for k in (1, 2):
        masked, scores = op.inputs[k], int(op.inputs[3 - k])
        values = _graph.float_values(parsed, sg.tensors[masked])
        if values is not None and float(values.max()) <= -_HUGE:
            return Mask(scores, k, fill_shape=_shape(sg.tensors[masked]) or ())
        shift = _producer(parsed, sg, masked, "SUB")
        if (shift is not None and int(shift.inputs[0]) == scores
                and _scalar(parsed, sg, shift.inputs[1]) >= _HUGE):
            # SELECT (not V2) takes its values in one shape: the fill's is the mask's
            v2 = _tflite.op_name(parsed, op) == "SELECT_V2"
            shape = (1,) if v2 else _shape(sg.tensors[masked])
            return None if shape is None else Mask(scores, k, fill_shape=shape, feeders=(shift,))
    return None


def _added(parsed, sg, op, name: str) -> Mask | None:
    """`scores - huge * indicator`, `scores + -huge * indicator` (either order), or
    `scores + causal` (a constant of 0s and -1e9 or less; `scores - causal`, of 1e9)."""
    if not _plain(op):
        return None
    sign = {"ADD": -1.0, "SUB": 1.0}[name]
    orders = [(0, 1), (1, 0)] if name == "ADD" else [(0, 1)]
    for s, m in ((int(op.inputs[a]), op.inputs[b]) for a, b in orders):
        values = _graph.float_values(parsed, sg.tensors[m])
        if values is not None:
            shape, penalty = _shape(sg.tensors[m]), sign * values
            if (shape is not None and penalty.max() >= _HUGE
                    and np.all((penalty == 0) | (penalty >= _HUGE))):
                return Mask(s, 2, (penalty == 0).reshape(shape))
            continue
        times = _producer(parsed, sg, m, "MUL")
        if times is None:
            continue
        for i, c in ((times.inputs[0], times.inputs[1]), (times.inputs[1], times.inputs[0])):
            found = _indicator(parsed, sg, i)
            if found is not None and sign * _scalar(parsed, sg, c) >= _HUGE:
                mask, ones_where_true, feeders = found
                return Mask(s, 1 if ones_where_true else 2, mask, feeders=(times, *feeders))
    return None


def _indicator(parsed, sg, tensor) -> tuple[int, bool, tuple] | None:
    """(b, whether `tensor` is 1 where b is True, the ops computing it) if `tensor` holds
    1s and 0s of a boolean tensor b: `CAST(b)`, `SELECT(b, 1, 0)`, `1 - indicator`."""
    op = _graph.producer(sg, tensor)
    name = None if op is None else _tflite.op_name(parsed, op)
    types = _tflite.schema.TensorType
    if name == "CAST" and sg.tensors[op.inputs[0]].type == types.BOOL:
        return int(op.inputs[0]), True, (op,)
    if name in _SELECTS:
        ends = [_scalar(parsed, sg, t) for t in op.inputs[1:]]
        if ends in ([1.0, 0.0], [0.0, 1.0]):
            return int(op.inputs[0]), ends[0] == 1.0, (op,)
    if name == "SUB" and _plain(op) and _scalar(parsed, sg, op.inputs[0]) == 1.0:
        found = _indicator(parsed, sg, op.inputs[1])
        if found is not None:
            return found[0], not found[1], (op, *found[2])
    return None


# ------------------------------------------------------------------ tensors
def _producer(parsed, sg, tensor, name: str):
    """The `name` op (with no fused activation) that writes `tensor`, or None."""
    op = _graph.producer(sg, tensor)
    return op if op is not None and _tflite.op_name(parsed, op) == name and _plain(op) else None


def _plain(op) -> bool:
    """Whether `op` (an ADD, a SUB, a MUL) has no fused activation."""
    fused = getattr(op.builtinOptions, "fusedActivationFunction", None)
    return fused in (None, _tflite.schema.ActivationFunctionType.NONE)


def _scalar(parsed, sg, tensor) -> float:
    """The value of a one-element float constant, or NaN for any other tensor."""
    values = _graph.float_values(parsed, sg.tensors[tensor])
    return float(values[0]) if values is not None and values.size == 1 else float("nan")


def _shape(tensor) -> tuple[int, ...] | None:
    return None if tensor.shape is None else tuple(int(d) for d in tensor.shape)


def _moderate(scores) -> bool:
    """Whether calibrated scores lie well inside +-1e9 (a mask then stands for minus
    infinity, and their least value is known: no leaked mask, see `tfq8.stats.collect`)."""
    if not _graph.has_range(scores):
        return False
    q = scores.quantization
    return -_HUGE / 2 < float(q.min[0]) <= float(q.max[0]) < _HUGE / 2

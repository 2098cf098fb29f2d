"""One range for the tensors that TFLite's quantizer must put on one int8 grid.

SELECT, SELECT_V2, CONCATENATION, MAXIMUM, MINIMUM and PACK compute on one
int8 grid: their value inputs and their output need the same scale and zero
point (the quantizer's "same scale constraint"). TFLite's quantizer gives them
one by requantizing an input (a QUANTIZE op) or by moving its producer's grid,
but it does not requantize a tensor of fixed scale, the output of a TANH,
LOGISTIC or SOFTMAX, that two or more such ops read on grids of their own:
there it fails ("quantization parameters violate the same scale constraint"),
and TFLite's own converter fails with it. A Keras `SimpleRNN` reading a mask
(`Embedding(mask_zero=True)`, `Masking`) is such a model: at each step its
TANH output feeds two SELECT_V2, one choosing between the new and the old
state, the other between the new and the old output. (A masked `LSTM` or `GRU`
computes its new state with MUL or ADD, whose outputs the quantizer can
requantize, and converts.)

Where the quantizer refuses a model so, tfq8 ties ranges and quantizes again:

* The float activations those ops connect (their value inputs and outputs)
  form groups, by union-find over tensors, so that ops reading one another's
  outputs, as a recurrent layer's steps do, make one group. Ops of one value
  input that keep their output on its grid (RESHAPE, TRANSPOSE, slices, pads,
  MAX_POOL_2D, ...: `GRID_KEEPING_OPS`) carry a group on: a SimpleRNN's
  `return_sequences` output reaches the SELECT_V2 of a masked pooling through
  a TRANSPOSE, and the quantizer refuses the model unless both sides share
  one range.
* Every tensor of a group gets one range, the union of theirs (min of mins,
  max of maxes), so that no value of any of them is clipped. The quantizer
  then requantizes a fixed-scale output once, onto the group's grid.
* Ranges fixed by the caller (`ranges=`, or learned by quantization-aware
  training) are kept: a group holding one takes it, and the tensors around it
  follow, as they must to share its grid. A group holding several different
  fixed ranges takes their union, and a warning names the fixed ranges that
  widens.

A model the quantizer accepts is quantized with its ranges as they are, since
there the quantizer chose the shared grids itself: every method gives the same
model as without the tie, and `minmax` still gives the converter's own
wherever the converter succeeds (models with SELECT_V2 from `ops.where` or
from `tfq8.rewrite` included). When a model needs a tie, every group whose
ranges differ is tied: the quantizer's message does not reliably name the op
at fault (in a SimpleRNN it names the first step's SELECT_V2 with the last
step's scales).

Example:
    >>> quantize = Quantizer(calib.model, fixed=overrides, per_channel=True)
    >>> blob, used = quantize(ranges)   # used: the ranges after any tie
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Iterable, Mapping, Sequence

from tfq8 import _tflite
from tfq8.errors import UnsupportedOpError

_log = logging.getLogger("tfq8")

__all__ = ["GRID_KEEPING_OPS", "SHARED_GRID_OPS", "Quantizer", "shared_grid_groups",
           "tie_ranges"]

SHARED_GRID_OPS = ("SELECT", "SELECT_V2", "CONCATENATION", "MAXIMUM", "MINIMUM", "PACK")
"""Ops of two or more value inputs that share one grid with their output, each seen to make
TFLite's quantizer fail (TF 2.21) where a TANH, LOGISTIC or SOFTMAX output feeds two of them."""

GRID_KEEPING_OPS = ("RESHAPE", "EXPAND_DIMS", "TRANSPOSE", "BROADCAST_TO", "TILE",
                    "STRIDED_SLICE", "SLICE", "GATHER", "SPLIT", "SPLIT_V", "UNPACK",
                    "PAD", "PADV2", "MIRROR_PAD", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
                    "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "REDUCE_MAX", "REDUCE_MIN",
                    "MAX_POOL_2D", "AVERAGE_POOL_2D")
"""Ops of one value input whose output the quantizer keeps on the input's grid. Alone they
never fail; between two groups of `SHARED_GRID_OPS` they make one, and the quantizer was seen
to fail on a tie that left each of them out (TF 2.21; not REVERSE_V2, SUM or MEAN)."""

Range = tuple[float, float]


def shared_grid_groups(calibrated: bytes) -> list[tuple[int, ...]]:
    """Groups of calibrated tensors of subgraph 0 that `SHARED_GRID_OPS` put on one grid,
    joined through `GRID_KEEPING_OPS`.

    Only tensors carrying a calibrated range take part: float activations, not
    constants (the quantizer puts those on the op's grid itself) nor a SELECT's
    boolean condition. Groups of `GRID_KEEPING_OPS` alone are left out: the
    quantizer was not seen to fail on them.

    Args:
        calibrated: A calibrated float `.tflite` flatbuffer.

    Returns:
        Each group of two or more tensor indices, sorted, in order of their
        first tensor.
    """
    ranged = set(_tflite.calibrated_ranges(calibrated))
    parsed = _tflite.read_model(calibrated)
    parent: dict[int, int] = {}

    def find(t: int) -> int:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]  # path halving
            t = parent[t]
        return t

    shared: set[int] = set()  # tensors of SHARED_GRID_OPS
    for op in parsed.subgraphs[0].operators:
        name = _tflite.op_name(parsed, op)
        if name not in SHARED_GRID_OPS and name not in GRID_KEEPING_OPS:
            continue
        tensors = [int(t) for t in (*op.inputs, *op.outputs) if int(t) in ranged]
        if name in SHARED_GRID_OPS:
            shared.update(tensors)
        for t in tensors:
            a, b = find(tensors[0]), find(t)
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for t in sorted(parent):
        groups.setdefault(find(t), []).append(t)
    return [tuple(g) for g in groups.values() if len(g) > 1 and shared.intersection(g)]


def tie_ranges(ranges: Mapping[int, Range], groups: Iterable[Sequence[int]],
               fixed: Collection[int] = ()) -> dict[int, Range]:
    """`ranges` with every tensor of a group given the group's one range.

    Args:
        ranges: Tensor index -> (min, max), for every tensor of `groups` at least.
        groups: Tensor indices that must share a range (`shared_grid_groups`).
        fixed: Tensors whose range the caller fixed: a group holding any takes
            the union of theirs alone.

    Returns:
        A new dict: the group's union (of its fixed ranges, if any) for each
        tensor of a group, the range in `ranges` for the rest.

    Example:
        >>> tie_ranges({0: (-1.0, 1.0), 1: (-0.5, 2.0), 2: (0.0, 0.5)}, [(0, 1)])
        {0: (-1.0, 2.0), 1: (-1.0, 2.0), 2: (0.0, 0.5)}
        >>> tie_ranges({0: (-1.0, 1.0), 1: (-0.5, 2.0)}, [(0, 1)], fixed={1})
        {0: (-0.5, 2.0), 1: (-0.5, 2.0)}
    """
    tied = dict(ranges)
    for group in groups:
        source = [t for t in group if t in fixed] or list(group)
        span = (min(ranges[t][0] for t in source), max(ranges[t][1] for t in source))
        tied.update((t, span) for t in group)
    return tied


class Quantizer:
    """Quantizes a calibrated model with given ranges, tying the shared grids if the
    quantizer refuses them (see the module's description).

    The ranges are patched into the model's bytes (`_tflite.RangeWriter`); the
    groups are found, and the tie logged, on the first refusal only.

    Args:
        calibrated: The calibrated float `.tflite` flatbuffer.
        fixed: Tensors whose range the caller fixed (see `tie_ranges`).
        **quant: `_tflite.quantize`'s options (`per_channel`, `input_type`,
            `output_type`).

    Example:
        >>> quantize = Quantizer(calib.model, fixed=overrides, per_channel=True)
        >>> blob, used = quantize(ranges)   # used: the ranges after any tie
    """

    def __init__(self, calibrated: bytes, *, fixed: Collection[int] = (), **quant: Any):
        self.writer = _tflite.RangeWriter(calibrated)
        self.fixed = frozenset(fixed)
        self.quant = quant
        self._groups: list[tuple[int, ...]] | None = None
        self._told = False

    def __call__(self, ranges: Mapping[int, Range]) -> tuple[bytes, dict[int, Range]]:
        """The int8 model for `ranges` and the ranges it was quantized with: `ranges`
        itself unless the quantizer refused them, else `ranges` with the groups tied.

        Raises:
            UnsupportedOpError: If the quantizer refuses the model, tied or not.
        """
        try:
            return _tflite.quantize(self.writer.write(ranges), **self.quant), dict(ranges)
        except _tflite.SameScaleError as refused:
            if self._groups is None:
                self._groups = shared_grid_groups(self.writer.base)
            before = _tflite.calibrated_ranges(self.writer.base)
            before.update(ranges)
            tied = tie_ranges(before, self._groups, self.fixed)
            changed = {t: r for t, r in tied.items() if r != before[t]}
            if not changed:
                raise
            used = {**ranges, **changed}
            try:
                blob = _tflite.quantize(self.writer.write(used), **self.quant)
            except _tflite.SameScaleError as still:
                raise UnsupportedOpError(
                    f"{still} tfq8 had given each group of tensors that "
                    f"{', '.join(SHARED_GRID_OPS)} ops put on one grid one range, and the "
                    "quantizer refused the model all the same.") from None
            self._tell(refused, before, tied)
            return blob, used

    def _tell(self, refused: _tflite.SameScaleError, before: Mapping[int, Range],
              tied: Mapping[int, Range]) -> None:
        """Logs the first tie: what the quantizer refused and which tensors changed, and
        warns about fixed ranges it widened."""
        if self._told:
            return
        self._told = True
        names = _tflite.tensor_names(self.writer.base)
        groups = [g for g in self._groups or () if any(tied[t] != before[t] for t in g)]
        _log.info("TFLite's quantizer refused the ranges (the same scale constraint of %s); "
                  "tfq8 gave each group of tensors it puts on one int8 grid one range: %s.",
                  refused.op, "; ".join(
                      f"{len(g)} tensors ({names[g[0]]!r}, ...) -> ({tied[g[0]][0]:g}, "
                      f"{tied[g[0]][1]:g})" for g in groups))
        for g in groups:
            fixed = [t for t in g if t in self.fixed]
            for t in fixed:
                if tied[t] != before[t]:
                    _log.warning(
                        "ranges[%r] = (%g, %g) became (%g, %g): TFLite's quantizer puts this "
                        "tensor on one int8 grid with %s, whose range was set too, so each "
                        "takes the union of the ranges set for them.", names[t], *before[t],
                        *tied[t], ", ".join(repr(names[u]) for u in fixed if u != t))

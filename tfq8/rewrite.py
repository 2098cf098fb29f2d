"""Graph rewrites that let TFLite's quantizer make more ops integer, and masked
softmaxes accurate.

TFLite's quantizer leaves a few float ops in float even when asked for a
full-integer model, and TFLite's own converter does so silently: its "int8"
model then holds `DEQUANTIZE -> op -> QUANTIZE`. tfq8 rewrites such ops, in
the calibrated float model and before quantizing, into equivalent ops the
quantizer does make int8:

* `NEG(x)` -> `MUL(x, -1.0)`. Keras' `LayerNormalization` (and so every
  attention block) computes `-mean` with NEG. The constant -1 is exact on the
  int8 grid (its one-value range [-1, 0] puts it at -128 with scale 1/255 and
  zero point 127), and the output keeps the range the calibrator recorded for
  NEG's output.
* `SQUARE(x)` -> `MUL(x, x)`. Keras' `GroupNormalization` and
  `UnitNormalization` (and `ops.square`) compute variances and norms with
  SQUARE; int8 MUL takes the same tensor twice, and the output keeps the range
  recorded for SQUARE's output.
* `ZEROS_LIKE(x)` -> `MUL(x, 0.0)`. A Keras recurrent layer reading a mask
  starts from `zeros_like` of its first state and selects between them with
  SELECT_V2, and both stay float otherwise.
* `NOT_EQUAL(x, y)` of float tensors -> `LOGICAL_OR(LESS(x, y), GREATER(x, y))`.
  Keras' `Masking` layer finds its padding with NOT_EQUAL, which the quantizer
  leaves float, while it makes LESS and GREATER int8 (the same comparison on
  the same int8 values; the new tensors are boolean and need no range).
* `CAST(mask)` of a boolean tensor to float -> `SELECT_V2(mask, 1.0, 0.0)`.
  Keras masking (`Embedding(mask_zero=True)`, `Masking`) turns its mask into
  float with CAST before a pooling or an average, and so does
  `ops.cast(x > 0, "float32")`; the quantizer leaves a CAST float but makes
  SELECT_V2 int8, and 0 and 1 are exact on the output's grid ([0, 1] as
  recorded for CAST's output).
* `CAST(x)` of a float tensor to bool -> `LOGICAL_OR(LESS(x, 0.0), GREATER(x, 0.0))`,
  as for NOT_EQUAL. Keras' `MultiHeadAttention` and `Attention` cast a float
  mask (an `attention_mask` model input of 1s and 0s, say) to bool so, and so
  does `ops.where` with a float condition. 0.0 is exact on any int8 grid.
* `ONE_HOT(i, depth, on, off)` with float values ->
  `SELECT_V2(ONE_HOT(i, depth, true, false), on, off)`. `keras.ops.one_hot`
  (and `CategoryEncoding(output_mode="one_hot")`) lower to a float ONE_HOT. The
  quantizer makes it int8 but quantizes `on` and `off` each on its own grid,
  not on the output's, and the kernel copies their codes as they are: 0.0 is
  code 0 on its one-value grid but 0.502 on the output's [0, 1] grid (zero
  point -128), so every "0" of TFLite's own int8 one-hot reads as 0.5. With a
  boolean ONE_HOT (the new tensor needs no range) the quantizer puts `on` and
  `off` on the output's grid, as for any SELECT_V2.
* The masks of a masked softmax (`SELECT(mask, scores, -2.4e38)`, `scores +
  (1 - mask) * -1e9` and the like) -> `SELECT(mask, scores, lo - ln(512 * keys))`,
  with `lo` the least score the calibrator saw (`tfq8.masked_softmax`). TFLite's
  int8 grid spans a mask of -1e9, and every real score then rounds to one code,
  in the converter's model too.

After quantizing, `int8_islands` closes the float islands of ops that TFLite
runs in int8 but its quantizer leaves float: `DEQUANTIZE -> ELU -> QUANTIZE`
becomes one int8 ELU (a lookup table built from its input's and output's
grids, which the two tensors already have), and likewise a SPLIT the quantizer
left float on one grid.

Tensor indices stay as they were (new tensors are appended), so statistics
collected on the calibrated model still apply. `Calibration` applies the
rewrites to its model, so calibrations saved before them benefit too.

Example:
    >>> calibrated = rewrite_for_int8(calibrated)   # before _tflite.quantize
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import numpy as np

from tfq8 import _graph, _tflite, masked_softmax

_log = logging.getLogger("tfq8")

__all__ = ["int8_islands", "rewrite_for_int8"]

_REWRITTEN = ("NEG", "SQUARE", "ZEROS_LIKE", "NOT_EQUAL", "CAST", "ONE_HOT")
# The MUL each becomes: by a new constant (its value and name), or by its own input (None).
_MUL_BY = {"NEG": (-1.0, "minus_one"), "ZEROS_LIKE": (0.0, "zero"), "SQUARE": None}


def rewrite_for_int8(model: bytes) -> bytes:
    """`model` with the ops of subgraph 0 that TFLite's quantizer leaves float
    rewritten as ops it makes int8 (see the module's list).

    Args:
        model: A float (calibrated) `.tflite` flatbuffer.

    Returns:
        The rewritten model, or `model` itself (the same bytes) without such ops.
    """
    names = _REWRITTEN + (masked_softmax.MASKING_OPS if _graph.uses_any(model, ("SOFTMAX",))
                          else ())
    if not _graph.uses_any(model, names):  # a quick look first: most models have none
        return model
    parsed = _tflite.read_model(model)
    sg = parsed.subgraphs[0]
    found = [(op, name, _rewriter(parsed, sg, op, name)) for op, name in
             ((op, _tflite.op_name(parsed, op)) for op in sg.operators) if name in names]
    found = [(op, name, how) for op, name, how in found if how is not None]
    if not found:
        return model
    for op, _, (rewrite, _) in found:
        rewrite(parsed, sg, op)
    done: dict[str, int] = {}
    for _, name, (_, what) in (f for f in found if f[0] in sg.operators):  # (not dropped since)
        key = f"{name} op(s) {what}"
        done[key] = done.get(key, 0) + 1
    _log.info("Rewrote %s, which TFLite quantizes to int8.",
              " and ".join(f"{k} {key}" for key, k in done.items()))
    return _tflite.write_model(parsed)


# Ops TFLite runs in int8 (LiteRT's kernels take int8 at the op's version 1) that its
# quantizer leaves float -> (the index of their value input, whether their int8 kernel
# needs the outputs on the input's grid). The quantizer leaves ELU float always, and now
# and then (one run in six) one SPLIT of an unrolled LSTM in a model that also has a
# WHILE loop, between a DEQUANTIZE and QUANTIZEs onto the same grid.
_INT8_KERNELS = {"ELU": (0, False), "SPLIT": (1, True)}


def int8_islands(model: bytes) -> bytes:
    """`model` (quantized) with each `DEQUANTIZE -> op -> QUANTIZE` of an op in
    `_INT8_KERNELS` (a QUANTIZE on each output) replaced by the op itself on the
    int8 tensors, in every subgraph (a loop's body too).

    Args:
        model: A quantized `.tflite` flatbuffer.

    Returns:
        The model without those islands, or `model` itself (the same bytes).
    """
    if not _graph.uses_any(model, _INT8_KERNELS):
        return model
    parsed = _tflite.read_model(model)
    closed = [name for sg in parsed.subgraphs for name in _close_islands(parsed, sg)]
    if not closed:
        return model
    _graph.drop_unused(parsed)
    _log.info("Ran %d op(s) in int8 that the quantizer left float (%s).", len(closed),
              ", ".join(sorted(set(closed))))
    return _tflite.write_model(parsed)


def _close_islands(parsed, sg) -> list[str]:
    """Closes the islands of subgraph `sg` (see `int8_islands`); the names of their ops."""
    names = [_tflite.op_name(parsed, op) for op in sg.operators]
    producer = {int(t): k for k, op in enumerate(sg.operators) for t in op.outputs}
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(sg.operators):
        for t in op.inputs:
            readers.setdefault(int(t), []).append(k)
    outputs = {int(t) for t in sg.outputs}
    int8 = _tflite.schema.TensorType.INT8
    dropped: set[int] = set()
    closed = []
    for k, op in enumerate(sg.operators):
        if names[k] not in _INT8_KERNELS:
            continue
        value, keeps_grid = _INT8_KERNELS[names[k]]
        before, after = int(op.inputs[value]), [int(t) for t in op.outputs]
        d, q = producer.get(before), [readers.get(t, []) for t in after]
        if (d is None or names[d] != "DEQUANTIZE" or readers.get(before) != [k]
                or any(len(r) > 1 or r and names[r[0]] != "QUANTIZE" for r in q)
                or not any(q) or {before, *after} & outputs):
            continue  # (an output nothing reads, as a first step's forget gate, may stay so)
        source = int(sg.operators[d].inputs[0])
        targets = [int(sg.operators[r[0]].outputs[0]) if r else source for r in q]
        if (any(sg.tensors[t].type != int8 for t in (source, *targets))
                or keeps_grid and not all(_graph.same_grid(sg.tensors[t], sg.tensors[source])
                                          for t in targets)):
            continue
        op.inputs[value] = source
        for j, (t, target) in enumerate(zip(after, targets)):
            if target in outputs and target != source:
                op.outputs[j] = target  # a model output (its name, its place in the signature)
                continue
            _graph.set_int8(sg.tensors[t], sg.tensors[target])  # the op's own, on target's grid
            for reader in sg.operators:
                reader.inputs = np.array([t if int(i) == target != source else int(i)
                                          for i in reader.inputs], np.int32)
        dropped.update((d, *(r[0] for r in q if r)))
        closed.append(names[k])
    sg.operators = [op for k, op in enumerate(sg.operators) if k not in dropped]
    return closed


_Rewrite = Callable[[Any, Any, Any], None]


def _rewriter(parsed, sg, op, name: str) -> tuple[_Rewrite, str] | None:
    """How to rewrite `op` (a `name` op) and what that does, or None if it stays."""
    types = _tflite.schema.TensorType
    if name in masked_softmax.MASKING_OPS:
        mask = masked_softmax.masked_scores(parsed, sg, op)
        return None if mask is None else (functools.partial(masked_softmax.fill, mask),
                                          "filling masked scores with a moderate value")
    source, result = sg.tensors[op.inputs[0]].type, sg.tensors[op.outputs[0]].type
    if name in _MUL_BY and source == types.FLOAT32:
        factor = _MUL_BY[name]
        return _as_mul, "as MUL of x by x" if factor is None else f"as MUL by {factor[0]:g}"
    if name == "NOT_EQUAL" and source == types.FLOAT32:
        return _not_equal_as_less_or_greater, "as LESS or GREATER"
    if name == "CAST" and (source, result) == (types.BOOL, types.FLOAT32):
        return _bool_as_select, "of a boolean mask as SELECT_V2 of 1 and 0"
    if name == "CAST" and (source, result) == (types.FLOAT32, types.BOOL):
        return _float_as_bool, "to bool as LESS or GREATER than 0"
    if name == "ONE_HOT" and result == types.FLOAT32:
        return _as_select_of_bool_one_hot, "as SELECT_V2 of a boolean ONE_HOT"
    return None


# ------------------------------------------------------------------ rewrites
def _as_mul(parsed, sg, op) -> None:
    """NEG, SQUARE, ZEROS_LIKE -> MUL by a constant or by the input itself."""
    factor = _MUL_BY[_tflite.op_name(parsed, op)]
    second = op.inputs[0] if factor is None else _graph.constant(parsed, sg, op, *factor)
    options = _tflite.schema.MulOptionsT()
    options.fusedActivationFunction = _tflite.schema.ActivationFunctionType.NONE
    _graph.become(parsed, op, "MUL", [op.inputs[0], second], options)


def _bool_as_select(parsed, sg, op) -> None:
    """CAST(mask) to float -> SELECT_V2(mask, 1.0, 0.0)."""
    inputs = [op.inputs[0], _graph.constant(parsed, sg, op, 1.0, "one"),
              _graph.constant(parsed, sg, op, 0.0, "zero")]
    _graph.become(parsed, op, "SELECT_V2", inputs, _tflite.schema.SelectV2OptionsT())


def _not_equal_as_less_or_greater(parsed, sg, op) -> None:
    _as_less_or_greater(parsed, sg, op, op.inputs)


def _float_as_bool(parsed, sg, op) -> None:
    """CAST(x) to bool -> x != 0."""
    zero = _graph.constant(parsed, sg, op, 0.0, "zero")
    _as_less_or_greater(parsed, sg, op, [op.inputs[0], zero])


def _as_less_or_greater(parsed, sg, op, inputs) -> None:
    """`op` -> `LOGICAL_OR(LESS(x, y), GREATER(x, y))` of `inputs` x and y."""
    schema = _tflite.schema
    halves = [_graph.new_op(parsed, "LESS", inputs, _graph.bool_like(sg, op, "less"),
                            schema.LessOptionsT()),
              _graph.new_op(parsed, "GREATER", inputs, _graph.bool_like(sg, op, "greater"),
                            schema.GreaterOptionsT())]
    position = sg.operators.index(op)
    sg.operators[position:position] = halves
    _graph.become(parsed, op, "LOGICAL_OR", [h.outputs[0] for h in halves],
                  schema.LogicalOrOptionsT())


def _as_select_of_bool_one_hot(parsed, sg, op) -> None:
    """`ONE_HOT(i, depth, on, off)` -> `SELECT_V2(ONE_HOT(i, depth, true, false), on, off)`."""
    mask = _graph.bool_like(sg, op, "mask")
    one_hot = _tflite.schema.OperatorT()
    one_hot.opcodeIndex = op.opcodeIndex
    one_hot.inputs = np.array([op.inputs[0], op.inputs[1],
                               _graph.constant(parsed, sg, op, True, "true", bool, ()),
                               _graph.constant(parsed, sg, op, False, "false", bool, ())], np.int32)
    one_hot.outputs = np.array([mask], np.int32)
    one_hot.builtinOptionsType, one_hot.builtinOptions = op.builtinOptionsType, op.builtinOptions
    sg.operators.insert(sg.operators.index(op), one_hot)
    _graph.become(parsed, op, "SELECT_V2", [mask, op.inputs[2], op.inputs[3]],
            _tflite.schema.SelectV2OptionsT())

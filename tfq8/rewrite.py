"""Graph rewrites that let TFLite's quantizer make more ops integer.

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

Tensor indices stay as they were (new tensors are appended), so statistics
collected on the calibrated model still apply. `Calibration` applies the
rewrites to its model, so calibrations saved before them benefit too.

Example:
    >>> calibrated = rewrite_for_int8(calibrated)   # before _tflite.quantize
"""

from __future__ import annotations

import logging

import numpy as np

from tfq8 import _tflite

_log = logging.getLogger("tfq8")

__all__ = ["rewrite_for_int8"]

_REWRITTEN = ("NEG", "SQUARE", "CAST", "ZEROS_LIKE", "NOT_EQUAL", "ONE_HOT")
# The MUL each becomes: by a new constant (its value and name), or by its own input (None).
_MUL_BY = {"NEG": (-1.0, "minus_one"), "ZEROS_LIKE": (0.0, "zero"), "SQUARE": None}


def rewrite_for_int8(model: bytes) -> bytes:
    """`model` with every float `NEG`, `SQUARE` and `ZEROS_LIKE` of subgraph 0
    written as a `MUL`, every float `NOT_EQUAL` as `LESS` or `GREATER`, every
    `CAST` of a boolean tensor to float as a `SELECT_V2` (of a float one to bool
    as `LESS` or `GREATER` than 0), and every float `ONE_HOT` as a `SELECT_V2`
    of a boolean one.

    Args:
        model: A float (calibrated) `.tflite` flatbuffer.

    Returns:
        The rewritten model, or `model` itself (the same bytes) without such ops.
    """
    schema = _tflite.schema
    codes = {getattr(schema.BuiltinOperator, name) for name in _REWRITTEN}
    root = schema.Model.GetRootAs(model, 0)  # a quick look first: most models have none
    if not any(max(root.OperatorCodes(k).BuiltinCode(), root.OperatorCodes(k).DeprecatedBuiltinCode())
               in codes for k in range(root.OperatorCodesLength())):
        return model
    parsed = _tflite.read_model(model)
    sg = parsed.subgraphs[0]
    found = [(op, _tflite.op_name(parsed, op)) for op in sg.operators]
    found = [(op, name) for op, name in found if name in _REWRITTEN and _rewritable(sg, op, name)]
    if not found:
        return model
    for op, name in found:
        if name == "NOT_EQUAL":
            _as_less_or_greater(parsed, sg, op, op.inputs)
            continue
        if name == "CAST" and sg.tensors[op.inputs[0]].type == schema.TensorType.FLOAT32:
            _as_less_or_greater(parsed, sg, op, [op.inputs[0], _constant(parsed, sg, op, 0.0, "zero")])
            continue
        if name == "ONE_HOT":
            _as_select_of_bool_one_hot(parsed, sg, op)
            continue
        if name == "CAST":
            inputs = [op.inputs[0], _constant(parsed, sg, op, 1.0, "one"),
                      _constant(parsed, sg, op, 0.0, "zero")]
            code, options = schema.BuiltinOperator.SELECT_V2, schema.SelectV2OptionsT()
            op.builtinOptionsType = schema.BuiltinOptions.SelectV2Options
        else:
            factor = _MUL_BY[name]
            inputs = [op.inputs[0], op.inputs[0] if factor is None
                      else _constant(parsed, sg, op, *factor)]
            code, options = schema.BuiltinOperator.MUL, schema.MulOptionsT()
            options.fusedActivationFunction = schema.ActivationFunctionType.NONE
            op.builtinOptionsType = schema.BuiltinOptions.MulOptions
        op.inputs = np.array(inputs, np.int32)
        op.opcodeIndex = _opcode(parsed, code)
        op.builtinOptions = options
    counts = {n: sum(1 for _, m in found if m == n) for n in _REWRITTEN}
    how = {"NOT_EQUAL": "as LESS or GREATER", "ZEROS_LIKE": "as MUL by 0", "NEG": "as MUL by -1", "SQUARE": "as MUL of x by x",
           "CAST": "of a boolean mask as SELECT_V2 of 1 and 0 (to bool: as LESS or GREATER than 0)",
           "ONE_HOT": "as SELECT_V2 of a boolean ONE_HOT"}
    _log.info("Rewrote %s, which TFLite quantizes to int8.",
              " and ".join(f"{k} {n} op(s) {how[n]}" for n, k in counts.items() if k))
    return _tflite.write_model(parsed)


def _rewritable(sg, op, name: str) -> bool:
    """NEG, SQUARE, ZEROS_LIKE and NOT_EQUAL of a float tensor; CAST of a boolean one
    to float or of a float one to bool; ONE_HOT to float."""
    schema = _tflite.schema
    if name == "ONE_HOT":
        return sg.tensors[op.outputs[0]].type == schema.TensorType.FLOAT32
    source = sg.tensors[op.inputs[0]].type
    if name == "CAST":
        return {source, sg.tensors[op.outputs[0]].type} == {schema.TensorType.BOOL,
                                                             schema.TensorType.FLOAT32}
    return source == schema.TensorType.FLOAT32


def _as_less_or_greater(parsed, sg, op, inputs) -> None:
    """Writes `op` (`NOT_EQUAL(x, y)`, or `CAST(x)` to bool with `inputs` x and 0) as
    `LOGICAL_OR(LESS(x, y), GREATER(x, y))` in place."""
    schema = _tflite.schema
    out = sg.tensors[op.outputs[0]]
    halves = []
    for builtin, options, kind, what in (
            (schema.BuiltinOperator.LESS, schema.LessOptionsT(), schema.BuiltinOptions.LessOptions,
             "less"),
            (schema.BuiltinOperator.GREATER, schema.GreaterOptionsT(),
             schema.BuiltinOptions.GreaterOptions, "greater")):
        half = schema.TensorT()
        half.shape = None if out.shape is None else np.array(out.shape, np.int32)
        half.shapeSignature = (None if out.shapeSignature is None
                               else np.array(out.shapeSignature, np.int32))
        half.type = schema.TensorType.BOOL
        half.buffer = 0
        half.name = (_tflite.tensor_name(out) + f"/tfq8_{what}").encode()
        sg.tensors.append(half)
        compare = schema.OperatorT()
        compare.opcodeIndex = _opcode(parsed, builtin)
        compare.inputs = np.array(inputs, np.int32)
        compare.outputs = np.array([len(sg.tensors) - 1], np.int32)
        compare.builtinOptionsType, compare.builtinOptions = kind, options
        halves.append(compare)
    position = sg.operators.index(op)
    sg.operators[position:position] = halves
    op.inputs = np.array([h.outputs[0] for h in halves], np.int32)
    op.opcodeIndex = _opcode(parsed, schema.BuiltinOperator.LOGICAL_OR)
    op.builtinOptionsType = schema.BuiltinOptions.LogicalOrOptions
    op.builtinOptions = schema.LogicalOrOptionsT()


def _as_select_of_bool_one_hot(parsed, sg, op) -> None:
    """Writes `ONE_HOT(i, depth, on, off)` as `SELECT_V2(ONE_HOT(i, depth, true, false), on, off)`
    in place."""
    schema = _tflite.schema
    out = sg.tensors[op.outputs[0]]
    mask = schema.TensorT()
    mask.shape = None if out.shape is None else np.array(out.shape, np.int32)
    mask.shapeSignature = (None if out.shapeSignature is None
                           else np.array(out.shapeSignature, np.int32))
    mask.type = schema.TensorType.BOOL
    mask.buffer = 0
    mask.name = (_tflite.tensor_name(out) + "/tfq8_mask").encode()
    sg.tensors.append(mask)
    mask_index = len(sg.tensors) - 1
    one_hot = schema.OperatorT()
    one_hot.opcodeIndex = op.opcodeIndex
    one_hot.inputs = np.array([op.inputs[0], op.inputs[1],
                               _constant(parsed, sg, op, True, "true", bool, ()),
                               _constant(parsed, sg, op, False, "false", bool, ())], np.int32)
    one_hot.outputs = np.array([mask_index], np.int32)
    one_hot.builtinOptionsType, one_hot.builtinOptions = op.builtinOptionsType, op.builtinOptions
    sg.operators.insert(sg.operators.index(op), one_hot)
    op.inputs = np.array([mask_index, op.inputs[2], op.inputs[3]], np.int32)
    op.opcodeIndex = _opcode(parsed, schema.BuiltinOperator.SELECT_V2)
    op.builtinOptionsType = schema.BuiltinOptions.SelectV2Options
    op.builtinOptions = schema.SelectV2OptionsT()


def _constant(parsed, sg, op, value: float, what: str, dtype=np.float32, shape=(1,)) -> int:
    """Index of a new constant `value` (float, or `dtype` bool) of one element for `op`
    (`shape` () for a scalar, as ONE_HOT wants)."""
    schema = _tflite.schema
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.array([value], dtype).tobytes(), np.uint8)
    parsed.buffers.append(buffer)
    const = schema.TensorT()
    const.shape = np.array(shape, np.int32)
    const.type = schema.TensorType.BOOL if dtype is bool else schema.TensorType.FLOAT32
    const.buffer = len(parsed.buffers) - 1
    const.name = (_tflite.tensor_name(sg.tensors[op.outputs[0]]) + f"/tfq8_{what}").encode()
    sg.tensors.append(const)
    return len(sg.tensors) - 1


def _opcode(parsed, builtin: int) -> int:
    """Index of the operator code for `builtin`, added if the model has none."""
    for k, code in enumerate(parsed.operatorCodes):
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == builtin:
            return k
    code = _tflite.schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    parsed.operatorCodes.append(code)
    return len(parsed.operatorCodes) - 1

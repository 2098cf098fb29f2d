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

Tensor indices stay as they were (new constants are appended), so statistics
collected on the calibrated model still apply. `Calibration` applies the
rewrites to its model, so calibrations saved before them benefit too.

Example:
    >>> calibrated = neg_as_mul(calibrated)      # before _tflite.quantize
"""

from __future__ import annotations

import logging

import numpy as np

from tfq8 import _tflite

_log = logging.getLogger("tfq8")

__all__ = ["neg_as_mul"]


def neg_as_mul(model: bytes) -> bytes:
    """`model` with every float `NEG` of subgraph 0 replaced by `MUL(x, -1.0)`.

    Args:
        model: A float (calibrated) `.tflite` flatbuffer.

    Returns:
        The rewritten model, or `model` itself (the same bytes) without a float NEG.
    """
    schema = _tflite.schema
    root = schema.Model.GetRootAs(model, 0)  # a quick look first: most models have no NEG
    if not any(max(root.OperatorCodes(k).BuiltinCode(), root.OperatorCodes(k).DeprecatedBuiltinCode())
               == schema.BuiltinOperator.NEG for k in range(root.OperatorCodesLength())):
        return model
    parsed = _tflite.read_model(model)
    sg = parsed.subgraphs[0]
    negs = [op for op in sg.operators
            if _tflite.op_name(parsed, op) == "NEG"
            and sg.tensors[op.inputs[0]].type == schema.TensorType.FLOAT32]
    if not negs:
        return model
    mul = _opcode(parsed, schema.BuiltinOperator.MUL)
    minus_one = np.array([-1.0], np.float32)
    for op in negs:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(minus_one.tobytes(), np.uint8)
        parsed.buffers.append(buffer)
        const = schema.TensorT()
        const.shape = np.array([1], np.int32)
        const.type = schema.TensorType.FLOAT32
        const.buffer = len(parsed.buffers) - 1
        const.name = (_tflite.tensor_name(sg.tensors[op.outputs[0]]) + "/tfq8_minus_one").encode()
        sg.tensors.append(const)
        options = schema.MulOptionsT()
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        op.opcodeIndex = mul
        op.inputs = np.array([op.inputs[0], len(sg.tensors) - 1], np.int32)
        op.builtinOptionsType = schema.BuiltinOptions.MulOptions
        op.builtinOptions = options
    _log.info("%d NEG op(s) (such as LayerNormalization's) written as MUL by -1, which "
              "TFLite quantizes to int8.", len(negs))
    return _tflite.write_model(parsed)


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

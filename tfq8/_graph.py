"""Editing TFLite flatbuffers in place: new ops, tensors and constants (object API).

The pieces `tfq8.rewrite` and `tfq8.loops` build their graph edits from. Each
works on a parsed model (`_tflite.read_model`) and appends: tensor and buffer
indices already in the model stay valid.

Example:
    >>> parsed = _tflite.read_model(model)
    >>> sg = parsed.subgraphs[0]
    >>> zero = constant(parsed, sg, op, 0.0, "zero")
    >>> become(parsed, op, "MUL", [op.inputs[0], zero], _tflite.schema.MulOptionsT())
"""

from __future__ import annotations

import numpy as np

from tfq8 import _tflite


def become(parsed, op, builtin: str, inputs, options) -> None:
    """Turns `op` in place into a `builtin` op on `inputs` (its outputs stay)."""
    schema = _tflite.schema
    op.inputs = np.array(inputs, np.int32)
    op.opcodeIndex = opcode(parsed, getattr(schema.BuiltinOperator, builtin))
    op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
    op.builtinOptions = options


def new_op(parsed, builtin: str, inputs, output: int, options):
    """A new `builtin` op on `inputs` writing tensor `output`."""
    new = _tflite.schema.OperatorT()
    new.outputs = np.array([output], np.int32)
    become(parsed, new, builtin, inputs, options)
    return new


def bool_like(sg, op, what: str) -> int:
    """Index of a new boolean tensor shaped like `op`'s output (no buffer, no range)."""
    return tensor_like(sg, sg.tensors[op.outputs[0]], what, _tflite.schema.TensorType.BOOL)


def tensor_like(sg, like, what: str, tensor_type: int) -> int:
    """Index of a new `tensor_type` tensor shaped like tensor `like` (no buffer, no range)."""
    tensor = _tflite.schema.TensorT()
    tensor.shape = None if like.shape is None else np.array(like.shape, np.int32)
    tensor.shapeSignature = (None if like.shapeSignature is None
                             else np.array(like.shapeSignature, np.int32))
    tensor.type = tensor_type
    tensor.buffer = 0
    tensor.name = (_tflite.tensor_name(like) + f"/tfq8_{what}").encode()
    sg.tensors.append(tensor)
    return len(sg.tensors) - 1


def constant(parsed, sg, op, value, what: str, dtype=np.float32, shape=(1,)) -> int:
    """Index of a new constant `value` (`dtype` float32, bool or int32) for `op`, of
    `shape` (one element by default; () for a scalar, as ONE_HOT wants)."""
    schema = _tflite.schema
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.asarray(value, dtype).reshape(shape).tobytes(), np.uint8)
    parsed.buffers.append(buffer)
    const = schema.TensorT()
    const.shape = np.array(shape, np.int32)
    const.type = {np.dtype(bool): schema.TensorType.BOOL, np.dtype(np.int32): schema.TensorType.INT32,
                  np.dtype(np.float32): schema.TensorType.FLOAT32}[np.dtype(dtype)]
    const.buffer = len(parsed.buffers) - 1
    const.name = (_tflite.tensor_name(sg.tensors[op.outputs[0]]) + f"/tfq8_{what}").encode()
    sg.tensors.append(const)
    return len(sg.tensors) - 1


def readers(sg, tensor) -> list:
    """The ops of subgraph `sg` that read tensor index `tensor`."""
    return [op for op in sg.operators if int(tensor) in {int(t) for t in op.inputs}]


def producer(sg, tensor):
    """The op of subgraph `sg` that writes tensor index `tensor`, or None."""
    return next((op for op in sg.operators if int(tensor) in {int(t) for t in op.outputs}), None)


def float_values(parsed, tensor) -> np.ndarray | None:
    """The values of a float32 constant `tensor` (flat), or None if it holds no data."""
    data = parsed.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or not len(data) or tensor.type != _tflite.schema.TensorType.FLOAT32:
        return None
    return np.frombuffer(bytes(np.asarray(data, np.uint8)), np.float32)


def uses_any(model: bytes, names: tuple[str, ...]) -> bool:
    """Whether `model` has an operator code for any of the builtin ops `names` (no parsing)."""
    schema = _tflite.schema
    codes = {getattr(schema.BuiltinOperator, name) for name in names}
    root = schema.Model.GetRootAs(model, 0)
    return any(max(root.OperatorCodes(k).BuiltinCode(), root.OperatorCodes(k).DeprecatedBuiltinCode())
               in codes for k in range(root.OperatorCodesLength()))


def opcode(parsed, builtin: int) -> int:
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


def has_range(tensor) -> bool:
    """Whether `tensor` carries a recorded float range (the calibrator's min/max)."""
    q = tensor.quantization
    return q is not None and q.min is not None and len(q.min) > 0


def same_grid(tensor, grid) -> bool:
    """Whether `tensor` is of `grid`'s type, on its one scale and zero point."""
    q, g = tensor.quantization, grid.quantization
    return (tensor.type == grid.type and q is not None and q.scale is not None
            and len(q.scale) == 1 and float(q.scale[0]) == float(g.scale[0])
            and int(q.zeroPoint[0]) == int(g.zeroPoint[0]))


def set_int8(tensor, grid) -> None:
    """Makes `tensor` int8 on `grid`'s (an int8 tensor's) scale and zero point."""
    q = _tflite.schema.QuantizationParametersT()
    q.scale = np.array(grid.quantization.scale, np.float32)
    q.zeroPoint = np.array(grid.quantization.zeroPoint, np.int64)
    tensor.type, tensor.quantization = _tflite.schema.TensorType.INT8, q


def drop_unused(parsed) -> None:
    """Removes the tensors that no op, subgraph input or output refers to, in every
    subgraph (renumbering the rest, in the signatures too), then the buffers that no
    tensor or metadata refers to, and lists the operator codes in the order ops first
    use them, without unused ones: what is left depends on the graph alone, not on what
    a quantizer made and an edit dropped (TFLite's quantizer is not deterministic)."""
    codes = list(dict.fromkeys(int(op.opcodeIndex) for sg in parsed.subgraphs
                               for op in sg.operators))
    if codes != list(range(len(parsed.operatorCodes))):
        new_code = {old: k for k, old in enumerate(codes)}
        parsed.operatorCodes = [parsed.operatorCodes[k] for k in codes]
        for sg in parsed.subgraphs:
            for op in sg.operators:
                op.opcodeIndex = new_code[int(op.opcodeIndex)]
    for s, sg in enumerate(parsed.subgraphs):
        lists = [op.inputs for op in sg.operators] + [op.outputs for op in sg.operators] + [
            op.intermediates for op in sg.operators if op.intermediates is not None] + [
            sg.inputs, sg.outputs]
        used = sorted({int(t) for ts in lists for t in ts if int(t) >= 0})
        if len(used) == len(sg.tensors):
            continue
        new = {old: k for k, old in enumerate(used)}

        def renumber(ts) -> np.ndarray:
            return np.array([new[int(t)] if int(t) >= 0 else -1 for t in ts], np.int32)

        for op in sg.operators:
            op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
            if op.intermediates is not None:
                op.intermediates = renumber(op.intermediates)
        sg.inputs, sg.outputs = renumber(sg.inputs), renumber(sg.outputs)
        sg.tensors = [sg.tensors[i] for i in used]
        for signature in parsed.signatureDefs or []:  # by name, its inputs and outputs
            if signature.subgraphIndex == s:
                for t in [*(signature.inputs or []), *(signature.outputs or [])]:
                    t.tensorIndex = new[int(t.tensorIndex)]
    listed = [] if parsed.metadataBuffer is None else [int(k) for k in parsed.metadataBuffer]
    referenced = sorted({0, *listed} | {t.buffer for sg in parsed.subgraphs for t in sg.tensors}
                        | {m.buffer for m in parsed.metadata or []})
    if len(referenced) == len(parsed.buffers):
        return
    new = {old: k for k, old in enumerate(referenced)}
    parsed.buffers = [parsed.buffers[k] for k in referenced]
    for sg in parsed.subgraphs:
        for t in sg.tensors:
            t.buffer = new[t.buffer]
    for m in parsed.metadata or []:
        m.buffer = new[m.buffer]
    if parsed.metadataBuffer is not None:
        parsed.metadataBuffer = np.array([new[k] for k in listed], np.int32)

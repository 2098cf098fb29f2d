"""WHILE loops (recurrent layers that are not unrolled): calibrated without a crash,
carried in int8.

A Keras `LSTM`, `GRU` or `SimpleRNN` that is not unrolled becomes, with a
fixed batch size, a TFLite WHILE op whose body subgraph runs one time step.
TFLite handles such loops badly in two ways, and tfq8 fixes both:

1. **The calibrator crashes the process** (a segmentation fault, tensorflow
   issue 75140, since TF 2.14) on a body that returns one of its loop
   variables unchanged, as every Keras recurrent loop does with its input
   sequence: the WHILE kernel then shares that output with its input, and the
   calibrator reads the shared tensor's freed buffer.
   `split_loop_passthroughs` gives each such output a tensor of its own (a
   RESHAPE to the same shape, -1 for a dynamic time axis) before the
   calibrator runs; the quantizer folds that RESHAPE away again, and where it
   keeps one (a dynamic shape), `int8_loops` removes it.
2. **The quantizer leaves the loop float.** It quantizes the ops inside the
   body but carries every float loop variable (the state, the output
   sequence, the input sequence) across iterations in float:
   `DEQUANTIZE -> WHILE -> QUANTIZE` outside, `QUANTIZE` at the top of the body
   and `DEQUANTIZE` at its end, each time step. `int8_loops` carries those
   variables in int8 instead: on the grid the body writes them with where the
   value entering the loop is exact on it (a recurrent layer's state starts at
   zeros), so that what leaves the loop is what the body wrote, as in the
   float loop; else on the grid the body reads them with. Where the body reads
   a variable on another grid than it writes it (an LSTM's state: the range
   of the states steps start from is not that of those they end with), a
   requantizing QUANTIZE stays, at the top of the body or at its end. The
   same arithmetic, with a full-integer model, but for TFLite's int8-to-int8
   QUANTIZE, which rounds a few values one step off where the float loop's
   float-to-int8 QUANTIZE rounds exactly; and for a loop whose entering value
   is on a grid of its own (a `tf.while_loop` of a layer's output) and which
   writes on another, the value leaving it is requantized once more.

The body's own tensors keep the ranges TFLite's calibrator recorded over all
time steps (tfq8's statistics cover subgraph 0), but for its accumulators
(`loop_states`): one int8 grid serves every step, and an LSTM's cell state,
which grows step by step, spans at its last steps a range that leaves its
first steps a few codes. `auto` tries narrower ranges for each
(`scale_loop_states`) and keeps one where the model's output is measurably
closer to float.

Example:
    >>> blob = int8_loops(_tflite.quantize(calibrated))
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import numpy as np

from tfq8 import _graph, _tflite

_log = logging.getLogger("tfq8")

__all__ = ["LoopState", "int8_loops", "loop_states", "scale_loop_states",
           "split_loop_passthroughs"]

# Ops that only move values (int8 in, the same grid out): after a loop, TFLite's
# quantizer may leave one on a loop's float output, before its QUANTIZE.
_MOVES = ("STRIDED_SLICE", "SLICE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE",
          "GATHER", "REVERSE_V2")


def split_loop_passthroughs(model: bytes) -> bytes:
    """`model` with each loop variable that a WHILE body returns unchanged written
    by a RESHAPE to its own shape, so the body's output is a tensor of its own.

    A shape with one dynamic dimension (the time axis of `keras.Input((None, 8))`)
    is written with -1 there; the calibrator crashes on those too.

    Args:
        model: A float `.tflite` flatbuffer.

    Returns:
        The model with the copies, or `model` itself (the same bytes) without
        such loops.
    """
    if not _graph.uses_any(model, ("WHILE",)):
        return model
    schema = _tflite.schema
    parsed = _tflite.read_model(model)
    split = 0
    for body, _ in _loops(parsed):
        for k, (given, returned) in enumerate(zip(body.inputs, body.outputs)):
            tensor = body.tensors[given]
            shape = _reshape_target(tensor)
            if given != returned or shape is None:
                continue
            options = schema.ReshapeOptionsT()
            options.newShape = shape
            copy = _graph.tensor_like(body, tensor, "passthrough", tensor.type)
            reshape = _graph.new_op(parsed, "RESHAPE", [given, given], copy, options)
            reshape.inputs[1] = _graph.constant(parsed, body, reshape, shape, "shape",
                                                np.int32, (len(shape),))
            body.operators.append(reshape)
            body.outputs[k] = copy
            split += 1
    if not split:
        return model
    _log.debug("Gave %d loop variable(s) that a WHILE body passes through a tensor of their "
               "own, as TFLite's calibrator crashes on them otherwise.", split)
    return _tflite.write_model(parsed)


# Ops through which a loop variable accumulates (an LSTM's cell state: c * f + i * g),
# and those that pick its value (a masked step keeps the state it was given).
_ACCUMULATE = ("ADD", "SUB", "MUL")
_PICK = ("SELECT", "SELECT_V2")


@dataclasses.dataclass(frozen=True)
class LoopState:
    """A float variable that a WHILE loop's body carries forward through additions and
    multiplications alone, such as an LSTM's cell state (`loop_states`).

    Attributes:
        name: Name of the body tensor that returns it.
        body: Index of the body subgraph.
        tensors: The body tensors on those paths, from the value a step reads to the
            one it returns, both included (tensor indices in `body`).
    """

    name: str
    body: int
    tensors: tuple[int, ...]


def loop_states(calibrated: bytes) -> list[LoopState]:
    """The accumulators of a calibrated model's WHILE loops (subgraph 0's, not nested).

    A loop variable is one when the body computes the value it returns from the
    value it was given through ADD, SUB and MUL ops and ops that only move or pick
    values (a masked step's SELECT), and every tensor on the way carries a
    recorded float range. Its range is that of its largest step;
    `scale_loop_states` narrows it.

    Args:
        calibrated: A calibrated float `.tflite` flatbuffer.

    Returns:
        One `LoopState` per accumulator, in loop and variable order; empty for a
        model without loops.

    Example:
        >>> [s.name for s in loop_states(calib.model)]   # a Keras 3 LSTM
        ['sequential_1/sequential_1/lstm_1/while/lstm_cell_1/add']
    """
    if not _graph.uses_any(calibrated, ("WHILE",)):
        return []
    parsed = _tflite.read_model(calibrated)
    chain = set(_ACCUMULATE + _PICK + _MOVES)
    states = []
    for body, (_, op) in _loops(parsed):
        index = int(op.builtinOptions.bodySubgraphIndex)
        for given, returned in zip(body.inputs, body.outputs):
            given, returned = int(given), int(returned)
            ahead, behind = {given}, {returned}
            for found, step in ((ahead, _readers_outputs), (behind, _producer_inputs)):
                todo = list(found)
                while todo:
                    for t in step(parsed, body, todo.pop(), chain):
                        if t not in found:
                            found.add(t)
                            todo.append(t)
            path = ahead & behind
            if (returned != given and returned in path
                    and all(_recorded(body.tensors[t]) for t in path)
                    and any(_tflite.op_name(parsed, _graph.producer(body, t)) in _ACCUMULATE
                            for t in path if t != given)):
                states.append(LoopState(_tflite.tensor_name(body.tensors[returned]), index,
                                        tuple(sorted(path))))
    return states


def scale_loop_states(calibrated: bytes, scales: Mapping[LoopState, float]) -> bytes:
    """`calibrated` with the recorded range of each loop state's tensors multiplied by
    its scale (0.5: half as wide, around zero).

    Args:
        calibrated: The calibrated float `.tflite` flatbuffer the states were found in.
        scales: `LoopState` -> factor in (0, 1].

    Returns:
        The edited flatbuffer, or `calibrated` itself when `scales` is empty.
    """
    model = calibrated
    for state, scale in scales.items():  # patched in place: the layout stays, so do offsets
        recorded = _tflite.calibrated_ranges(calibrated, state.body)
        model = _tflite.RangeWriter(model, state.body).write(
            {t: (recorded[t][0] * scale, recorded[t][1] * scale) for t in state.tensors})
    return model


def _recorded(tensor) -> bool:
    """A float tensor with one recorded min/max (what `RangeWriter` patches)."""
    return (tensor.type == _tflite.schema.TensorType.FLOAT32 and _graph.has_range(tensor)
            and len(tensor.quantization.min) == 1)


def _readers_outputs(parsed, sg, tensor: int, kinds) -> list[int]:
    return [int(t) for op in _graph.readers(sg, tensor) if _tflite.op_name(parsed, op) in kinds
            for t in op.outputs]


def _producer_inputs(parsed, sg, tensor: int, kinds) -> list[int]:
    op = _graph.producer(sg, tensor)
    if op is None or _tflite.op_name(parsed, op) not in kinds:
        return []
    return [int(t) for t in op.inputs if t >= 0]


def int8_loops(model: bytes) -> bytes:
    """`model` (quantized) with its WHILE loops' float variables carried in int8.

    A variable moves to int8 when the body reads it only through QUANTIZE ops
    (or not at all) and writes it through a DEQUANTIZE (or passes it through),
    the loop condition does not read it, the value entering the loop is an
    int8 tensor behind a DEQUANTIZE, a float constant or an earlier loop's
    int8 variable, and what leaves the loop is read only by QUANTIZE ops,
    later loops, or ops that only move values (`_MOVES`) into QUANTIZE ops.
    Other variables, and loops whose WHILE op is in a body itself, stay as
    they are (a later loop's float variable reading an int8 one gets a
    DEQUANTIZE). A RESHAPE of `split_loop_passthroughs` that the quantizer
    kept is removed first.

    Args:
        model: A quantized `.tflite` flatbuffer.

    Returns:
        The model with int8 loop variables, or `model` itself (the same bytes)
        if no variable qualifies and no such RESHAPE is left.
    """
    if not _graph.uses_any(model, ("WHILE",)):
        return model
    parsed = _tflite.read_model(model)
    joined = _join_passthroughs(parsed)
    carried = 0
    for body, (sg, op) in _loops(parsed):
        cond = parsed.subgraphs[op.builtinOptions.condSubgraphIndex]
        loop = _Loop(parsed, sg, op, body, cond)
        for j in range(len(op.inputs)):
            grid = loop.int8_grid(j)
            if grid is not None:
                loop.carry_in_int8(j, grid)
                carried += 1
    if not carried and not joined:
        return model
    _float_inputs(parsed)
    for sg in parsed.subgraphs:
        _drop_unread(parsed, sg, ("QUANTIZE", "DEQUANTIZE"))
    _graph.drop_unused(parsed)
    _log.info("Carried %d loop variable(s) of WHILE loops in int8 (TFLite's quantizer "
              "leaves them float).", carried)
    return _tflite.write_model(parsed)


def _join_passthroughs(parsed) -> int:
    """Undoes `split_loop_passthroughs` where the quantizer kept its RESHAPE (to a dynamic
    shape, such as a time axis of any length), quantized or not: the body returns the
    variable it was given again. Returns how many."""
    joined = 0
    for body, _ in _loops(parsed):
        for k, (given, returned) in enumerate(zip(body.inputs, body.outputs)):
            copy = _through(parsed, body, returned, "DEQUANTIZE")
            reshape = _graph.producer(body, copy)
            if (reshape is not None and _tflite.op_name(parsed, reshape) == "RESHAPE"
                    and _tflite.tensor_name(body.tensors[copy]).endswith("/tfq8_passthrough")
                    and _through(parsed, body, reshape.inputs[0], "QUANTIZE") == int(given)):
                body.outputs[k] = given
                body.operators.remove(reshape)
                joined += 1
    return joined


def _through(parsed, sg, tensor, kind: str) -> int:
    """The input of `tensor`'s producer where that is a `kind` op, else `tensor`."""
    op = _graph.producer(sg, tensor)
    found = op is not None and _tflite.op_name(parsed, op) == kind
    return int(op.inputs[0]) if found else int(tensor)


def _loops(parsed) -> list:
    """(body subgraph, (subgraph, WHILE op)) for each WHILE op of subgraph 0 whose body
    no other WHILE op shares."""
    found = [(parsed.subgraphs[int(op.builtinOptions.bodySubgraphIndex)], (sg, op))
             for sg in parsed.subgraphs[:1] for op in sg.operators
             if _tflite.op_name(parsed, op) == "WHILE"]
    shared = [id(body) for body, _ in found]
    return [(body, where) for body, where in found if shared.count(id(body)) == 1]


class _Loop:
    """One WHILE op with its body and condition subgraphs, and who reads what."""

    def __init__(self, parsed, sg, op, body, cond) -> None:
        self.parsed, self.sg, self.op, self.body, self.cond = parsed, sg, op, body, cond
        self.float32 = _tflite.schema.TensorType.FLOAT32
        self.int8 = _tflite.schema.TensorType.INT8

    def name(self, op) -> str:
        return _tflite.op_name(self.parsed, op)

    def int8_grid(self, j: int):
        """The int8 grid (a tensor carrying it) to carry variable `j` on, or None."""
        sg, body, op = self.sg, self.body, self.op
        given, returned = int(body.inputs[j]), int(body.outputs[j])
        if sg.tensors[op.outputs[j]].type != self.float32 or _graph.readers(self.cond,
                                                                    self.cond.inputs[j]):
            return None
        reads = _graph.readers(body, given)
        if any(self.name(r) != "QUANTIZE" or body.tensors[r.outputs[0]].type != self.int8
               for r in reads):
            return None
        grids = [body.tensors[r.outputs[0]] for r in reads]
        written = None
        if returned != given:
            write = _graph.producer(body, returned)
            if (write is None or self.name(write) != "DEQUANTIZE" or _graph.readers(body, returned)
                    or returned in body.outputs[:j] or returned in body.outputs[j + 1:]):
                return None
            written = body.tensors[write.inputs[0]]
            grids.append(written)
        entering = _graph.producer(sg, op.inputs[j])
        start = None  # the grid of the value entering the loop, None for a constant
        if entering is not None and self.name(entering) == "DEQUANTIZE":
            start = sg.tensors[entering.inputs[0]]
        elif sg.tensors[op.inputs[j]].type == self.int8:  # an earlier loop's, carried in int8
            start = sg.tensors[op.inputs[j]]
        elif (entering is not None
              or _graph.float_values(self.parsed, sg.tensors[op.inputs[j]]) is None):
            return None
        leaving = int(op.outputs[j])
        if leaving in sg.outputs or not all(
                self.name(r) in ("QUANTIZE", "WHILE") or self._moves_to_quantize(r, leaving)
                for r in _graph.readers(sg, leaving)):
            return None  # (a later loop that stays float gets a DEQUANTIZE: _float_inputs)
        if written is not None and (_graph.same_grid(start, written) if start is not None
                                    else _exact_on(self._values(int(op.inputs[j])), written)):
            return written  # what leaves the loop is what the body wrote, as in the float loop
        return grids[0] if grids else start

    def carry_in_int8(self, j: int, grid) -> None:
        """Makes variable `j` int8 on `grid`'s scale and zero point, everywhere."""
        sg, body, op = self.sg, self.body, self.op
        given, returned = int(body.inputs[j]), int(body.outputs[j])
        for tensor in (body.tensors[given], self.cond.tensors[self.cond.inputs[j]],
                       sg.tensors[op.outputs[j]]):
            _graph.set_int8(tensor, grid)
        for r in _graph.readers(body, given):  # QUANTIZE on entry: gone where the grids agree
            _replace_if_same_grid(body, r, given)
        if returned != given:  # DEQUANTIZE on exit: a requantize, or gone
            write = _graph.producer(body, returned)
            if _graph.same_grid(body.tensors[write.inputs[0]], grid):
                body.outputs[j] = write.inputs[0]
            else:
                _graph.become(self.parsed, write, "QUANTIZE", [write.inputs[0]],
                              _tflite.schema.QuantizeOptionsT())
                _graph.set_int8(body.tensors[returned], grid)
                source = _tflite.tensor_name(body.tensors[write.inputs[0]])
                body.tensors[returned].name = (  # not the quantizer's "tfl.dequantize<n>"
                    source + "/tfq8_requantized").encode()
        entering = _graph.producer(sg, op.inputs[j])
        if sg.tensors[op.inputs[j]].type == self.int8:  # an earlier loop's output
            source = int(op.inputs[j])
        elif entering is not None:  # a DEQUANTIZE: its int8 input
            source = int(entering.inputs[0])
        else:
            source = self._quantized_constant(int(op.inputs[j]), grid)
        op.inputs[j] = source if _graph.same_grid(sg.tensors[source], grid) else self._requantized(
            source, grid)
        for r in _graph.readers(sg, int(op.outputs[j])):  # after the loop: QUANTIZE, WHILE, a slice
            if self.name(r) == "QUANTIZE":
                _replace_if_same_grid(sg, r, int(op.outputs[j]))
            elif self.name(r) in _MOVES:  # now on the int8 values, and on their grid
                moved = int(r.outputs[0])
                _graph.set_int8(sg.tensors[moved], grid)
                for q in _graph.readers(sg, moved):
                    _replace_if_same_grid(sg, q, moved)

    def _moves_to_quantize(self, op, tensor: int) -> bool:
        """Whether `op` only moves `tensor`'s values (a slice, say) into QUANTIZE ops."""
        moved = int(op.outputs[0])
        return (self.name(op) in _MOVES and int(op.inputs[0]) == tensor
                and tensor not in [int(t) for t in op.inputs[1:]] and moved not in self.sg.outputs
                and all(self.name(q) == "QUANTIZE" for q in _graph.readers(self.sg, moved)))

    def _requantized(self, source: int, grid) -> int:
        """A new tensor: `source` requantized to `grid` by a QUANTIZE before the loop."""
        sg = self.sg
        target = _graph.tensor_like(sg, sg.tensors[source], "requantized", self.int8)
        _graph.set_int8(sg.tensors[target], grid)
        quantize = _graph.new_op(self.parsed, "QUANTIZE", [source], target,
                                 _tflite.schema.QuantizeOptionsT())
        sg.operators.insert(sg.operators.index(self.op), quantize)
        return target

    def _values(self, const: int) -> np.ndarray:
        """The values of float constant `const` of the loop's subgraph."""
        return _graph.float_values(self.parsed, self.sg.tensors[const])

    def _quantized_constant(self, const: int, grid) -> int:
        """A new int8 constant: float constant `const` on `grid`."""
        sg, parsed = self.sg, self.parsed
        tensor = sg.tensors[const]
        codes = np.clip(np.round(_steps(self._values(const), grid)), -128, 127).astype(np.int8)
        target = _graph.tensor_like(sg, tensor, "int8", self.int8)
        _graph.set_int8(sg.tensors[target], grid)
        buffer = _tflite.schema.BufferT()
        buffer.data = np.frombuffer(codes.tobytes(), np.uint8)
        parsed.buffers.append(buffer)
        sg.tensors[target].buffer = len(parsed.buffers) - 1
        return target


def _float_inputs(parsed) -> None:
    """Puts a DEQUANTIZE before each WHILE input that is int8 now (an earlier loop's
    output) where the loop variable stayed float."""
    sg, schema = parsed.subgraphs[0], _tflite.schema
    for op in [op for op in sg.operators if _tflite.op_name(parsed, op) == "WHILE"]:
        body = parsed.subgraphs[op.builtinOptions.bodySubgraphIndex]
        for j, t in enumerate(op.inputs):
            if (sg.tensors[t].type == schema.TensorType.INT8
                    and body.tensors[body.inputs[j]].type == schema.TensorType.FLOAT32):
                value = _graph.tensor_like(sg, sg.tensors[t], "float", schema.TensorType.FLOAT32)
                sg.operators.insert(sg.operators.index(op), _graph.new_op(
                    parsed, "DEQUANTIZE", [int(t)], value, schema.DequantizeOptionsT()))
                op.inputs[j] = value


def _steps(values: np.ndarray, grid) -> np.ndarray:
    """`values` in steps of `grid`'s scale from its zero point: their int8 codes, unrounded."""
    return values / float(grid.quantization.scale[0]) + int(grid.quantization.zeroPoint[0])


def _exact_on(values: np.ndarray, grid) -> bool:
    """Whether `grid` holds each of `values` exactly (zeros, on any grid)."""
    steps = _steps(values, grid)
    return bool(np.array_equal(steps, np.round(steps)) and np.all((steps >= -128) & (steps <= 127)))


def _replace_if_same_grid(sg, quantize, tensor: int) -> None:
    """Has `quantize`'s readers read `tensor` (int8 now) itself where the grids agree;
    else `quantize` stays, requantizing."""
    out = int(quantize.outputs[0])
    if not _graph.same_grid(sg.tensors[out], sg.tensors[tensor]) or out in sg.outputs:
        return
    for op in sg.operators:
        op.inputs = np.array([tensor if int(t) == out else int(t) for t in op.inputs], np.int32)


def _drop_unread(parsed, sg, kinds: tuple[str, ...]) -> None:
    """Removes ops of `kinds` whose outputs nothing reads, until none is left."""
    while True:
        read = {int(t) for op in sg.operators for t in op.inputs} | {int(t) for t in sg.outputs}
        keep = [op for op in sg.operators if _tflite.op_name(parsed, op) not in kinds
                or any(int(t) in read for t in op.outputs)]
        if len(keep) == len(sg.operators):
            return
        sg.operators = keep


def _reshape_target(tensor) -> list[int] | None:
    """The RESHAPE shape that gives `tensor` back unchanged: its shape, with -1 for its one
    dynamic dimension (the time axis of `keras.Input((None, 8))`); None for a tensor without
    a shape or with several dynamic dimensions."""
    if tensor.shape is None:
        return None
    shape = [int(v) for v in (tensor.shape if tensor.shapeSignature is None
                              else tensor.shapeSignature)]
    return shape if shape.count(-1) <= 1 and min(shape, default=0) >= -1 else None

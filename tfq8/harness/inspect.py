"""Ops and dtypes of a `.tflite` model, and a checked full-integer verdict.

An op is *integer* when none of its non-constant inputs or outputs is a float
tensor. A model is *full-integer* when every op is integer and every model input
and output is integer, or float converted at the model's edge: read by a
QUANTIZE, written by a DEQUANTIZE (what a model converted with float32 I/O has;
those ops are reported as such). A float model is never full-integer, also one
with no ops, whose float inputs pass through to its outputs.

Example:
    >>> info = tfq8.inspect(open("model_int8.tflite", "rb").read())
    >>> info.full_integer, [op.name for op in info.float_ops]
    (True, [])
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tfq8 import _tflite
from tfq8.harness.interpreter import load_verified

_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor: index, name, shape, dtype name, and quantization if any.

    `shape` is the stored shape; `shape_signature` has -1 for the dimensions
    that may change (batch, or height and width of `keras.Input((None, None, 3))`),
    where `shape` holds a placeholder such as 1.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    constant: bool = False
    shape_signature: tuple[int, ...] = ()

    @property
    def range(self) -> tuple[float, float] | None:
        """The float range its int8 / uint8 grid spans, `(min, max)`; None unless one
        scale quantizes it (per-channel weights and float tensors have none)."""
        if len(self.scale) != 1 or len(self.zero_point) != 1:
            return None
        return _tflite.grid_range(self.dtype, self.scale[0], self.zero_point[0])

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "shape": list(self.shape),
                "shape_signature": list(self.shape_signature or self.shape),
                "dtype": self.dtype, "scale": list(self.scale),
                "zero_point": list(self.zero_point), "range": self.range,
                "constant": self.constant}


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator with its input and output tensors."""

    index: int
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    subgraph: int = 0

    @property
    def is_integer(self) -> bool:
        """No float activation among its inputs and outputs."""
        return not any(t.dtype in _FLOAT_TYPES and not t.constant
                       for t in self.inputs + self.outputs)

    @property
    def kind(self) -> str:
        """`"integer"`, `"hybrid"` (float activations, integer weights) or `"float"`."""
        if self.is_integer:
            return "integer"
        if any(t.constant and t.dtype not in _FLOAT_TYPES and t.dtype != "INT32"
               for t in self.inputs):
            return "hybrid"
        return "float"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "kind": self.kind,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    def where(self) -> str:
        """`op #3`, or `op #3 of subgraph 2` (a loop's body)."""
        return f"op #{self.index}" + (f" of subgraph {self.subgraph}" if self.subgraph else "")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `inspect` found.

    `ops` are those of the main graph (subgraph 0); `subgraph_ops` those of the
    other subgraphs, which a WHILE or IF op runs (the body of a recurrent layer's loop).
    """

    ops: tuple[OpInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    size_bytes: int
    subgraph_ops: tuple[OpInfo, ...] = ()

    @property
    def float_ops(self) -> tuple[OpInfo, ...]:
        """Ops computing in float, in any subgraph, excluding QUANTIZE/DEQUANTIZE at
        float model I/O."""
        io = {t.index for t in self.inputs + self.outputs}
        out = []
        for op in self.ops:
            if op.is_integer:
                continue
            if op.name in _BOUNDARY_OPS and any(t.index in io for t in op.inputs + op.outputs):
                continue
            out.append(op)
        return tuple(out) + tuple(op for op in self.subgraph_ops if not op.is_integer)

    @property
    def culprits(self) -> tuple[OpInfo, ...]:
        """The float ops to name: `float_ops` without QUANTIZE and DEQUANTIZE (which
        only wrap the others), or all of them where there is nothing else."""
        return tuple(op for op in self.float_ops if op.name not in _BOUNDARY_OPS) or self.float_ops

    @property
    def float_io(self) -> tuple[TensorInfo, ...]:
        """Float model inputs and outputs that no op converts, where the model does not
        convert float I/O at its edge either.

        A QUANTIZE reading a float input, a DEQUANTIZE writing a float output, is the edge
        of an integer graph with float I/O (`input_type="float32"`,
        `output_type="float32"`); where one does, the model's other float inputs
        (outputs) are float as asked: unused, or passed through. Where none does, a float
        input or output that no op touches is float that nothing asked for: a float model
        with no ops (its inputs are its outputs), or an input that no op reads, which
        TFLite's quantizer leaves float32 in an int8 model. A tensor that a float op reads
        or writes is not listed: the op is in `float_ops`.
        """
        converted_in = {t.index for op in self.ops if op.name == "QUANTIZE" for t in op.inputs}
        converted_out = {t.index for op in self.ops if op.name == "DEQUANTIZE"
                         for t in op.outputs}
        in_float_ops = {t.index for op in self.float_ops if not op.subgraph
                        for t in op.inputs + op.outputs}
        found: dict[int, TensorInfo] = {}
        for tensors, converted in ((self.inputs, converted_in), (self.outputs, converted_out)):
            if any(t.index in converted for t in tensors):
                continue  # float I/O asked for on this side
            for t in tensors:
                if t.dtype in _FLOAT_TYPES and t.index not in in_float_ops:
                    found.setdefault(t.index, t)
        return tuple(found.values())

    @property
    def full_integer(self) -> bool:
        """True if every op computes in integers and the model's inputs and outputs are
        integer, or float that QUANTIZE and DEQUANTIZE convert at its edge (float32 I/O
        asked for): neither `float_ops` nor `float_io`. A float model, with or without
        ops, is not."""
        return not self.float_ops and not self.float_io

    def verdict(self) -> str:
        """`full-integer`, or `NOT full-integer: ...` saying what is float."""
        if self.full_integer:
            return "full-integer"
        if self.ops and all(op.kind == "float" for op in self.ops + self.subgraph_ops):
            return (f"NOT full-integer: a float model ({len(self.ops)} float op(s)); "
                    "tfq8.convert(model, data) or `tfq8 convert MODEL --data FILE` quantizes it")
        found = [f"{len(self.float_ops)} float op(s)"] if self.float_ops else []
        if self.float_io:
            found.append("float model input(s)/output(s) that no op converts: "
                         + ", ".join(repr(t.name) for t in self.float_io))
        return "NOT full-integer: " + "; ".join(found)

    def io_lines(self) -> list[str]:
        """How an app turns its real values into the model's integer inputs, and the
        integer outputs back into real values: one line per model input and output that
        one scale quantizes (`real = scale * (q - zero_point)`); float ones are left out.

        Example:
            >>> print("\n".join(tfq8.inspect(blob).io_lines()))
            input  'serving_default_x:0' INT8: real = 0.0235294 * (q + 128)
            output 'Identity:0' INT8: real = 0.00390625 * (q + 128)
        """
        lines = []
        for kind, tensors in (("input ", self.inputs), ("output", self.outputs)):
            for t in tensors:
                if len(t.scale) == 1 and len(t.zero_point) == 1:
                    lines.append(f"{kind} {t.name!r} {t.dtype}: real = "
                                 f"{_affine(t.scale[0], t.zero_point[0])}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for `json.dumps`."""
        flagged = {op.index for op in self.float_ops if not op.subgraph}
        return {"full_integer": self.full_integer, "size_bytes": self.size_bytes,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "ops": [dict(op.to_dict(), flagged=op.index in flagged) for op in self.ops],
                "float_ops": sorted(flagged),
                "float_io": [t.index for t in self.float_io],
                "subgraph_float_ops": [{"subgraph": op.subgraph, "index": op.index,
                                        "name": op.name} for op in self.float_ops if op.subgraph]}

    def __str__(self) -> str:
        def span(t: TensorInfo) -> str:
            return "" if t.range is None else f"[{t.range[0]:.4g}, {t.range[1]:.4g}]"

        flagged = {op.index for op in self.float_ops if not op.subgraph}
        unconverted = {t.index for t in self.float_io}
        rows = [("-", "(model input)", "", t, None) for t in self.inputs]
        for op in self.ops:
            ins = ", ".join(t.dtype for t in op.inputs if not t.constant)
            for k, out in enumerate(op.outputs or (None,)):  # one row per output
                rows.append((str(op.index), op.name, ins, out, op) if k == 0
                            else ("", "", "", out, None))
        width = max(len(r[1]) for r in rows) if rows else 2
        lines = [f"{'#':>4}  {'op':<{width}} {'inputs':<14} {'output':<7} {'output range':<22} "
                 "output tensor"]
        for label, name, ins, out, op in rows:
            line = (f"{label:>4}  {name:<{width}} {ins:<14} {out.dtype if out else '':<7} "
                    f"{span(out) if out else '':<22} {out.name if out else ''}")
            if op is not None and op.index in flagged:
                line += f"   <- {op.kind}"
            elif label == "-" and out.index in unconverted:
                line += "   <- float"
            elif op is not None and not op.is_integer:
                line += "   (float model I/O)"
            lines.append(line.rstrip())
        for sub in sorted({op.subgraph for op in self.subgraph_ops}):
            ops = [op for op in self.subgraph_ops if op.subgraph == sub]
            floats = [op.name for op in ops if not op.is_integer]
            lines.append(f"   subgraph {sub}: {len(ops)} ops, " + (
                f"{len(floats)} float: {', '.join(floats)}   <- float" if floats else "integer"))
        lines += self.io_lines()
        more = f" (+{len(self.subgraph_ops)} in other subgraphs)" if self.subgraph_ops else ""
        lines.append(f"{len(self.ops)} ops{more}, {self.size_bytes} bytes: {self.verdict()}")
        return "\n".join(lines)


def _affine(scale: float, zero_point: int) -> str:
    """`0.0235 * (q + 128)`: the real value of code q."""
    if zero_point == 0:
        return f"{scale:.6g} * q"
    return f"{scale:.6g} * (q {'-' if zero_point > 0 else '+'} {abs(zero_point)})"


def inspect(model: bytes | str | os.PathLike) -> ModelInfo:
    """Lists a model's ops with their tensors' dtypes and quantization.

    The model is verified first (see `tfq8.harness.interpreter.verify_model`):
    a truncated, corrupted or non-TFLite file raises a `ValueError`.

    Args:
        model: `.tflite` bytes or a path to a `.tflite` file.

    Returns:
        A `ModelInfo`; `info.full_integer` gives the verdict, `info.float_ops`
        and `info.float_io` what is float; each op's `kind` says `integer`,
        `hybrid` or `float`.

    Raises:
        ValueError: If the model is malformed (`InvalidModelError`) or the path
            does not exist.
        TypeError: If `model` is neither bytes nor a path.

    Example:
        >>> info = tfq8.inspect("model_int8.tflite")
        >>> print(info)              # one line per op, float ops flagged
        >>> info.full_integer
        True
    """
    model, parsed = load_verified(model, arg="model")

    def info(sg, i: int) -> TensorInfo:
        t = sg.tensors[i]
        q = t.quantization
        buf = parsed.buffers[t.buffer] if t.buffer is not None and t.buffer < len(parsed.buffers) else None
        constant = buf is not None and ((buf.data is not None and len(buf.data) > 0) or bool(buf.size))
        return TensorInfo(
            index=i,
            name=_tflite.tensor_name(t),
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
            dtype=_tflite.tensor_type_name(t.type),
            scale=tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else ())),
            zero_point=tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else ())),
            constant=constant,
            shape_signature=tuple(int(d) for d in (t.shapeSignature if t.shapeSignature is not None
                                                    else (t.shape if t.shape is not None else ()))),
        )

    def ops(s: int) -> tuple[OpInfo, ...]:
        sg = parsed.subgraphs[s]
        return tuple(
            OpInfo(k, _tflite.op_name(parsed, op),
                   tuple(info(sg, int(i)) for i in op.inputs if int(i) >= 0),
                   tuple(info(sg, int(i)) for i in op.outputs), s)
            for k, op in enumerate(sg.operators))

    main = parsed.subgraphs[0]
    return ModelInfo(
        ops=ops(0),
        inputs=tuple(info(main, int(i)) for i in main.inputs),
        outputs=tuple(info(main, int(i)) for i in main.outputs),
        size_bytes=len(model),
        subgraph_ops=tuple(op for s in range(1, len(parsed.subgraphs)) for op in ops(s)),
    )

"""Verified loading of `.tflite` models and batched, (de)quantizing LiteRT runs.

Every model goes through `verify_model` before LiteRT sees it: the flatbuffer
is parsed in Python (a truncated, corrupted or foreign file raises
`InvalidModelError`, a `ValueError`, instead of reaching C++), then checked
semantically: tensor, buffer, opcode and subgraph indices in range, constant
buffers exactly as large as their tensors' shapes and dtypes require,
quantization parameters consistent with the tensor, shapes non-negative and
of sane size. LiteRT itself verifies the flatbuffer again when it loads it.

`ModelRunner` feeds float data to any model: inputs are quantized and outputs
dequantized with each tensor's own scale and zero point (per-tensor or
per-axis), several inputs and outputs are supported, and samples run in
batches when the model's batch dimension may be resized, else one at a time.

Example:
    >>> runner = ModelRunner(open("model_int8.tflite", "rb").read())
    >>> probs, = runner.run([x_test])          # float in, float out
    >>> probs.shape
    (10000, 10)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tfq8 import _args, _tflite
from tfq8.errors import ArgumentTypeError, first_line
from tfq8.data import InputSpec, fixed_batch, short_name
from tfq8.harness.litert import BACKENDS, invoke, new_interpreter, size_inputs
from tfq8.harness.litert import allocate as allocate_tensors

_log = logging.getLogger("tfq8")

_BATCH_BYTES = 8 << 20  # activations per batch: about what stays in the CPU caches
_MAX_TENSOR_BYTES = 1 << 32
_MAX_BATCH = 1024

# Bytes per element of the fixed-size tensor types (others are not size-checked).
_ITEMSIZE = {
    "FLOAT32": 4, "FLOAT16": 2, "FLOAT64": 8, "BFLOAT16": 2, "INT32": 4, "UINT32": 4,
    "INT64": 8, "UINT64": 8, "INT16": 2, "UINT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1,
    "COMPLEX64": 8, "COMPLEX128": 16,
}
_NUMPY = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT32": np.int32,
    "UINT32": np.uint32, "INT64": np.int64, "UINT64": np.uint64, "INT16": np.int16,
    "UINT16": np.uint16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_,
}
_KNOWN_BUILTINS = {v for k, v in vars(_tflite.schema.BuiltinOperator).items()
                   if not k.startswith("_")}
_KNOWN_TYPES = {v for k, v in vars(_tflite.schema.TensorType).items() if not k.startswith("_")}


class InvalidModelError(ValueError):
    """The bytes are not a well-formed `.tflite` model LiteRT can safely load."""


# --------------------------------------------------------------------- loading
def read_model_bytes(model: Any, *, arg: str = "tflite_model") -> bytes:
    """Returns the bytes of a `.tflite` given as bytes or as a file path.

    Args:
        model: `bytes`/`bytearray`/`memoryview`, or a path to a `.tflite` file.
        arg: The argument name used in error messages.

    Raises:
        TypeError: If `model` is neither bytes nor a path.
        ValueError: If the path does not exist, is a folder or cannot be read.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            what = "it is a folder" if os.path.isdir(path) else "no such file"
            raise ValueError(f"{arg} must be .tflite bytes or the path of a .tflite file; "
                             f"{what}. Received: {arg}={path!r}")
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ValueError(f"Could not read {arg}: {e.strerror or e}. "
                             f"Received: {arg}={path!r}") from None
    raise TypeError(f"{arg} must be .tflite bytes or a path to a .tflite file. "
                    f"Received: {arg} of type {type(model).__name__}")


def verify_model(model: bytes, *, arg: str = "tflite_model") -> "_tflite.schema.ModelT":
    """Checks that `model` is a well-formed TFLite flatbuffer and returns it parsed.

    Args:
        model: The `.tflite` bytes.
        arg: The argument name used in error messages.

    Returns:
        The parsed model (`schema.ModelT`).

    Raises:
        InvalidModelError: If the bytes are truncated, corrupted, not a TFLite
            model, or describe a graph LiteRT could not run safely.

    Example:
        >>> verify_model(open("model.tflite", "rb").read()).subgraphs[0].operators
    """
    n = len(model)
    if n < 16 and bytes(model[4:8]) == b"TFL3":
        raise InvalidModelError(f"{arg} is truncated: a TFLite flatbuffer is longer than its "
                                f"first {n} bytes. Received: {n} bytes")
    if n < 16:
        raise InvalidModelError(f"{arg} is not a TFLite model: expected a flatbuffer of at least "
                                f"16 bytes. Received: {n} bytes")
    if bytes(model[4:8]) != b"TFL3":
        head = bytes(model[:8])
        kind = (" (it is a zip archive, such as a .keras model)" if head.startswith(b"PK\x03\x04")
                else " (it is an HDF5 file, such as a .h5 Keras model)"
                if head == b"\x89HDF\r\n\x1a\n" else "")
        hint = "; convert the model to a .tflite first (tfq8.convert, or tfq8 convert)"
        raise InvalidModelError(
            f"{arg} is not a TFLite model{kind}: expected the file identifier b'TFL3' at bytes "
            f"4-8{hint if kind else ''}. Received: {bytes(model[4:8])!r}")
    root = int.from_bytes(model[:4], "little")
    if root + 4 > n:
        raise InvalidModelError(f"{arg} is truncated or corrupted: its root table lies at byte "
                                f"{root}, beyond its {n} bytes.")
    try:
        parsed = _tflite.read_model(model)
    except Exception as e:  # noqa: BLE001 - any parse failure means a broken file
        raise InvalidModelError(
            f"{arg} is truncated or corrupted: the flatbuffer cannot be parsed "
            f"({type(e).__name__}: {str(e)[:200]}). Received: {n} bytes") from None
    try:
        _check_semantics(parsed, n)
    except InvalidModelError as e:
        raise InvalidModelError(f"{arg} is corrupted: {e}") from None
    except Exception as e:  # noqa: BLE001 - garbage fields of unexpected types
        raise InvalidModelError(f"{arg} is corrupted: {type(e).__name__}: {str(e)[:200]}") from None
    _normalize(parsed)
    return parsed


def _normalize(m: Any) -> None:
    """Absent vectors become empty ones, so readers of the parsed model can iterate."""
    empty = lambda: np.zeros(0, np.int32)  # noqa: E731
    m.buffers = m.buffers if m.buffers is not None else []
    m.operatorCodes = m.operatorCodes if m.operatorCodes is not None else []
    for sg in m.subgraphs:
        for field in ("inputs", "outputs"):
            if getattr(sg, field) is None:
                setattr(sg, field, empty())
        sg.tensors = sg.tensors if sg.tensors is not None else []
        sg.operators = sg.operators if sg.operators is not None else []
        for t in sg.tensors:
            if t.shape is None:
                t.shape = empty()
        for op in sg.operators:
            for field in ("inputs", "outputs", "intermediates"):
                if getattr(op, field) is None:
                    setattr(op, field, empty())


def _check_semantics(m: Any, size: int) -> None:
    def bad(msg: str) -> None:
        raise InvalidModelError(msg)

    if m.version != 3:
        bad(f"schema version {m.version}, expected 3")
    if not m.subgraphs:
        bad("no subgraph")
    buffers = m.buffers if m.buffers is not None else []
    codes = m.operatorCodes if m.operatorCodes is not None else []
    for k, code in enumerate(codes):
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin not in _KNOWN_BUILTINS:
            bad(f"operator code {k} names unknown builtin op {builtin}")
        if builtin == _tflite.schema.BuiltinOperator.CUSTOM and not code.customCode:
            bad(f"operator code {k} is CUSTOM without a custom op name")
    for b, buf in enumerate(buffers):
        if buf is not None and buf.offset and (buf.offset > size or buf.offset + buf.size > size):
            bad(f"buffer {b} points at bytes {buf.offset}..{buf.offset + buf.size}, beyond the "
                f"file's {size}")
    for s, sg in enumerate(m.subgraphs):
        tensors = sg.tensors if sg.tensors is not None else []
        nt = len(tensors)

        def idx(values: Any, what: str, optional: bool = False) -> None:
            for v in (values if values is not None else []):
                v = int(v)
                if not (0 <= v < nt or (optional and v == -1)):
                    bad(f"subgraph {s}: {what} refers to tensor {v}; it has {nt} tensors")

        idx(sg.inputs, "an input")
        idx(sg.outputs, "an output")
        for t_i, t in enumerate(tensors):
            _check_tensor(s, t_i, t, buffers, bad)
        available = {int(i) for i in (sg.inputs if sg.inputs is not None else [])}
        for o, op in enumerate(sg.operators if sg.operators is not None else []):
            if not 0 <= int(op.opcodeIndex) < len(codes):
                bad(f"subgraph {s} op {o}: opcode index {op.opcodeIndex}, only {len(codes)} codes")
            idx(op.inputs, f"op {o}'s input", optional=True)
            idx(op.outputs, f"op {o}'s output")
            idx(op.intermediates, f"op {o}'s intermediate")
            for i in (op.inputs if op.inputs is not None else []):
                i = int(i)
                if i >= 0 and i not in available and not is_constant(tensors[i], buffers) and not (
                        tensors[i].isVariable) and math.prod(int(d) for d in (
                            tensors[i].shape if tensors[i].shape is not None else [1])) != 0:
                    bad(f"subgraph {s} op {o} reads tensor {i}, which no earlier op writes and "
                        "which is neither an input nor a constant")
            available.update(int(i) for i in (op.outputs if op.outputs is not None else []))
            opts = op.builtinOptions
            for name, value in (vars(opts).items() if opts is not None else []):
                if name.lower().endswith("subgraphindex") and not 0 <= int(value) < len(m.subgraphs):
                    bad(f"subgraph {s} op {o}: {name}={value}, only {len(m.subgraphs)} subgraphs")


def is_constant(t: Any, buffers: list) -> bool:
    """Whether tensor `t` (a `TensorT`) holds constant data: bytes in its buffer, or
    bytes outside the flatbuffer (a model over 2 GB)."""
    buf = buffers[t.buffer] if 0 <= t.buffer < len(buffers) else None
    return buf is not None and ((buf.data is not None and len(buf.data) > 0) or buf.offset > 1)


def _check_tensor(s: int, t_i: int, t: Any, buffers: list, bad: Callable[[str], None]) -> None:
    where = f"subgraph {s} tensor {t_i}"
    if t.type not in _KNOWN_TYPES:
        bad(f"{where} has unknown type {t.type}")
    shape = [int(d) for d in (t.shape if t.shape is not None else [])]
    if any(d < 0 for d in shape):
        bad(f"{where} has a negative dimension in shape {shape}")
    sig = t.shapeSignature
    if sig is not None and len(sig):
        if len(sig) != len(shape) or any(int(d) < -1 for d in sig):
            bad(f"{where}: shape signature {list(sig)} does not fit shape {shape}")
    if isinstance(t.name, bytes):
        try:
            t.name.decode("utf-8")
        except UnicodeDecodeError:
            bad(f"{where} has a name that is not UTF-8")
    type_name = _tflite.tensor_type_name(t.type)
    itemsize = _ITEMSIZE.get(type_name)
    elements = math.prod(shape)
    if itemsize is not None and elements * itemsize > _MAX_TENSOR_BYTES:
        bad(f"{where} of shape {shape} would take {elements * itemsize} bytes")
    if not 0 <= int(t.buffer) < max(len(buffers), 1):
        bad(f"{where} refers to buffer {t.buffer}; there are {len(buffers)}")
    buf = buffers[t.buffer] if buffers else None
    nbytes = 0
    if buf is not None:
        nbytes = len(buf.data) if buf.data is not None else 0
        if not nbytes and buf.offset > 1:
            nbytes = int(buf.size)
    if nbytes and itemsize is not None and t.sparsity is None and nbytes != elements * itemsize:
        bad(f"{where} ({_tflite.tensor_name(t)!r}, {type_name}{shape}) needs "
            f"{elements * itemsize} bytes of data; its buffer {t.buffer} holds {nbytes}")
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, dtype=np.float64)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [], dtype=np.int64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad(f"{where} has a non-positive or non-finite quantization scale")
        if len(zp) not in (0, len(scale)):
            bad(f"{where} has {len(scale)} scales but {len(zp)} zero points")
        if len(scale) > 1:
            axis = int(q.quantizedDimension)
            if not 0 <= axis < len(shape) or shape[axis] != len(scale):
                bad(f"{where}: {len(scale)} per-axis scales do not fit axis {axis} of shape {shape}")


def load_verified(model: Any, *, arg: str = "tflite_model") -> tuple[bytes, Any]:
    """`read_model_bytes` then `verify_model`; returns the bytes and the parsed model."""
    blob = read_model_bytes(model, arg=arg)
    return blob, verify_model(blob, arg=arg)


def make_interpreter(model: bytes, *, backend: str = "builtin", num_threads: int = 1,
                     preserve_all_tensors: bool = False, verified: bool = False,
                     allocate: bool = True, arg: str = "tflite_model") -> Any:
    """A LiteRT interpreter on a verified model, tensors allocated.

    Args:
        model: `.tflite` bytes.
        backend: `"xnnpack"` (XNNPACK delegate), `"builtin"` (optimized builtin
            kernels, no delegate) or `"reference"` (reference kernels).
        num_threads: Threads for the kernels.
        preserve_all_tensors: Keep intermediate tensors readable (builtin and
            reference kernels only).
        verified: Skip `verify_model` because the caller already ran it.
        allocate: Allocate the tensors now. Callers that size the inputs from
            their data first (dynamic height and width sit at a placeholder
            size, often 1x1, that may not fit the kernels) pass False.
        arg: The argument name used in error messages.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        InvalidModelError: If the model is malformed or LiteRT rejects it.
        ValueError: On a bad `backend` or `num_threads`.

    Example:
        >>> interp = make_interpreter(blob, backend="xnnpack", num_threads=1)
    """
    _args.integer("num_threads", num_threads)
    if backend not in BACKENDS:
        raise (ValueError if isinstance(backend, str) else ArgumentTypeError)(
            f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}")
    if not verified:
        verify_model(model, arg=arg)
    try:
        interp = new_interpreter(model, backend=backend, num_threads=num_threads,
                                 preserve_all_tensors=preserve_all_tensors)
        if allocate:
            allocate_tensors(interp)
    except (RuntimeError, ValueError) as e:
        raise InvalidModelError(f"LiteRT cannot load {arg}: {first_line(e)}") from None
    return interp


def pad_batch(a: np.ndarray, size: int) -> np.ndarray:
    """`a` grown to `size` samples with copies of its last (a fixed batch's last batch).

    Example:
        >>> pad_batch(np.arange(3), 4)
        array([0, 1, 2, 2])
    """
    if len(a) >= size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)])


def default_batch(model: Any, arrays: Sequence[np.ndarray] | None = None) -> int:
    """Samples per invoke when the caller does not choose: all tensors of a batch take
    about `_BATCH_BYTES` (see `batch_for`), so memory stays bounded however many samples."""
    return batch_for(model, _BATCH_BYTES, _MAX_BATCH, arrays)


def batch_for(model: Any, budget_bytes: int, cap: int,
              arrays: Sequence[np.ndarray] | None = None) -> int:
    """Samples per invoke so that all tensors of a batch take about `budget_bytes`.

    Args:
        model: The parsed model (`schema.ModelT`); subgraph 0 is sized.
        budget_bytes: Memory for every tensor of one batch (4 bytes a value).
        cap: Largest batch.
        arrays: The data, one array per input. Dynamic height and width are
            stored as 1 in the flatbuffer, so without the data a batch of
            full-size images would be sized as if they were 1x1.

    Returns:
        The batch size, at least 1.
    """
    per_sample = tensor_bytes_per_sample(model, arrays)
    return int(max(1, min(cap, budget_bytes // max(per_sample, 1))))


def tensor_bytes_per_sample(model: Any, arrays: Sequence[np.ndarray] | None = None) -> int:
    """Bytes all tensors of subgraph 0 take for one sample (4 bytes a value).

    With `arrays` (the data), samples larger than the stored placeholder
    shapes of dynamic height and width are accounted for.
    """
    sg = model.subgraphs[0]
    per_sample = 0
    for t in sg.tensors:
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        per_sample += 4 * int(np.prod(shape[1:] if len(shape) > 1 else shape or [1]))
    if arrays is not None:  # samples larger than the stored placeholder shapes
        stored = [[int(d) for d in sg.tensors[i].shape] for i in sg.inputs]
        per_sample *= max([1.0] + [int(np.prod(a.shape[1:])) / max(1, int(np.prod(s[1:])))
                                   for s, a in zip(stored, arrays)])
    return int(per_sample)


# --------------------------------------------------------------------- I/O tensors
@dataclasses.dataclass(frozen=True)
class TensorIO:
    """A model input or output with its quantization.

    Attributes:
        name: Tensor name.
        index: Tensor index in the interpreter.
        shape: Shape with batch dimension (as allocated).
        signature: Shape signature (-1 for dimensions that may change).
        dtype: numpy dtype of the tensor.
        scales: Quantization scales (empty if not quantized).
        zero_points: Zero points, one per scale.
        axis: Quantized dimension for per-axis parameters.
        key: The name users know it by: its signature name (such as a Keras
            output's name) if the model has a signature, else its tensor name
            without `serving_default_` and `:0`.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    dtype: np.dtype
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int = 0
    key: str = ""

    @classmethod
    def from_details(cls, d: dict) -> "TensorIO":
        qp = d.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), dtype=np.float64)
        zps = np.asarray(qp.get("zero_points", []), dtype=np.int64)
        if not len(scales) and d.get("quantization", (0.0, 0))[0]:
            scales = np.asarray([d["quantization"][0]], np.float64)
            zps = np.asarray([d["quantization"][1]], np.int64)
        return cls(d["name"], int(d["index"]), tuple(int(v) for v in d["shape"]),
                   tuple(int(v) for v in d.get("shape_signature", d["shape"])),
                   np.dtype(d["dtype"]), scales, zps, int(qp.get("quantized_dimension", 0)),
                   short_name(d["name"]))

    @property
    def quantized(self) -> bool:
        """True if the tensor is an integer tensor with scale and zero point."""
        return bool(len(self.scales)) and np.issubdtype(self.dtype, np.integer)

    def _broadcast(self, v: np.ndarray, ndim: int) -> np.ndarray:
        if len(v) == 1:
            return v.reshape(())
        shape = [1] * ndim
        shape[self.axis] = len(v)
        return v.reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float values -> this tensor's integers (round half away from zero, clip)."""
        if not self.quantized:
            return np.asarray(x).astype(self.dtype, copy=False)
        s = self._broadcast(self.scales, np.ndim(x))
        z = self._broadcast(self.zero_points, np.ndim(x))
        v = np.asarray(x, np.float64) / s
        v += np.copysign(0.5, v)
        np.trunc(v, out=v)
        v += z
        info = np.iinfo(self.dtype)
        np.clip(v, info.min, info.max, out=v)
        return v.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """This tensor's integers -> float32 values (`(q - zero_point) * scale`)."""
        if not self.quantized:
            return np.asarray(q).astype(np.float32, copy=False) if np.issubdtype(
                np.asarray(q).dtype, np.floating) else np.asarray(q)
        s = self._broadcast(self.scales, np.ndim(q))
        z = self._broadcast(self.zero_points, np.ndim(q))
        return ((np.asarray(q, np.float64) - z) * s).astype(np.float32)

    def data_dtype(self) -> np.dtype:
        """dtype users feed: float32 for quantized tensors, else the tensor's own."""
        return np.dtype(np.float32) if self.quantized else self.dtype


# --------------------------------------------------------------------- runner
class ModelRunner:
    """Runs a `.tflite` model on float data in batches.

    Args:
        model: `.tflite` bytes or path (verified before loading).
        backend: See `make_interpreter`.
        num_threads: Kernel threads.
        preserve_all_tensors: Keep intermediates readable (`tensor()`).
        batch_size: Samples per invoke (default: as many as fit in about
            8 MiB of tensors, the CPU caches' scale, at most 1024). A model
            whose batch dimension is fixed runs at that size (`fixed_batch`),
            its last batch padded with copies of the last sample, which
            `output` and `tensor` leave out.
        arg: The argument name used in error messages.

    Example:
        >>> runner = ModelRunner("model_int8.tflite")
        >>> [o.shape for o in runner.run([x])]
        [(100, 10)]
    """

    def __init__(self, model: Any, *, backend: str = "builtin", num_threads: int = 1,
                 preserve_all_tensors: bool = False, batch_size: int | None = None,
                 arg: str = "tflite_model"):
        self.model, self.parsed = load_verified(model, arg=arg)
        self.arg = arg
        sg = self.parsed.subgraphs[0]
        sigs = [list(sg.tensors[i].shapeSignature if sg.tensors[i].shapeSignature is not None
                     else sg.tensors[i].shape) for i in sg.inputs]
        # Dynamic sizes, or a free batch beside a fixed one: allocated at the data's size.
        dynamic = any(-1 in s[1:] for s in sigs) or (
            fixed_batch(sigs) is not None and any(s[:1] == [-1] for s in sigs))
        self._options = dict(backend=backend, num_threads=num_threads,
                             preserve_all_tensors=preserve_all_tensors, allocate=not dynamic,
                             arg=arg)
        self.interpreter = make_interpreter(self.model, verified=True, **self._options)
        try:
            self.inputs = [TensorIO.from_details(d) for d in self.interpreter.get_input_details()]
            self.outputs = [TensorIO.from_details(d) for d in self.interpreter.get_output_details()]
        except (ValueError, KeyError) as e:
            raise InvalidModelError(f"LiteRT cannot describe {arg}'s inputs and outputs: {e}") from None
        keys = _signature_names(self.parsed)
        if len({keys.get(t.index, t.key) for t in self.inputs}) == len(self.inputs):
            self.inputs = [dataclasses.replace(t, key=keys.get(t.index, t.key)) for t in self.inputs]
        if len({keys.get(t.index, t.key) for t in self.outputs}) == len(self.outputs):
            self.outputs = [dataclasses.replace(t, key=keys.get(t.index, t.key)) for t in self.outputs]
        self.outputs = _keras_order(self.outputs)
        _args.integer("batch_size", batch_size, optional=True)
        self.fixed_batch = fixed_batch([t.signature for t in self.inputs])
        self.resizable = self.fixed_batch is None
        self.batch_size = self.fixed_batch or batch_size or default_batch(self.parsed)
        self._chosen_batch = batch_size is not None
        self._current = None
        self._rows: int | None = None  # samples in the last invoke (padded batch: fewer)

    def with_constants(self, model: bytes) -> "ModelRunner":
        """A runner with the same options on `model`: this runner's model with other
        values in its constant buffers (same graph, tensors, shapes and I/O), which
        is not verified again. `parsed` still describes the graph, not the new values.

        Example:
            >>> runner.with_constants(blob_with_new_biases).run([x])
        """
        other = copy.copy(self)
        other.model = bytes(model)
        other.interpreter = make_interpreter(other.model, verified=True, **self._options)
        other._current, other._rows = None, None
        return other

    def fit_batch_to(self, inputs: Sequence[np.ndarray]) -> None:
        """Shrinks the default batch for samples larger than the model's placeholders
        (dynamic height and width). A `batch_size` the caller chose stays."""
        if not self._chosen_batch and self.resizable:
            self.batch_size = default_batch(self.parsed, inputs)

    def input_specs(self) -> list[InputSpec]:
        """Input specs (float32 for quantized inputs) for `tfq8.representative_dataset`."""
        return [InputSpec(t.key, (None,) + tuple(None if s < 0 else d for d, s in zip(
                              t.shape[1:], t.signature[1:])) if t.shape else (),
                          t.data_dtype()) for t in self.inputs]

    def _resize(self, n: int, inputs: Sequence[np.ndarray]) -> None:
        """Sizes the inputs for `n` samples shaped like `inputs`' (dynamic dimensions too)."""
        shapes = [[n, *a.shape[1:]] for a in inputs]
        if self._current == shapes:
            return
        if self.resizable or n == self.fixed_batch:
            try:
                size_inputs(self.interpreter, shapes)
            except (RuntimeError, ValueError) as e:
                raise InvalidModelError(f"LiteRT cannot run {self.arg} on inputs of shape "
                                        f"{[tuple(s) for s in shapes]}: "
                                        f"{first_line(e)}") from None
        self._current = shapes

    def batches(self, inputs: Sequence[np.ndarray]) -> Iterator[tuple[int, int]]:
        """Sets each batch of `inputs` (float, quantized here), invokes, yields (start, stop)."""
        total = len(inputs[0])
        step = self.fixed_batch or self.batch_size
        for start in range(0, total, step):
            stop = min(total, start + step)
            self._resize(step if self.fixed_batch else stop - start, inputs)
            for t, a in zip(self.inputs, inputs):
                part = pad_batch(a[start:stop], step) if self.fixed_batch else a[start:stop]
                self.interpreter.set_tensor(t.index, np.ascontiguousarray(t.quantize(part)))
            try:
                invoke(self.interpreter)
            except RuntimeError as e:
                raise InvalidModelError(f"LiteRT failed to run {self.arg}: "
                                        f"{first_line(e)}") from None
            self._rows = stop - start
            yield start, stop

    def output(self, k: int) -> np.ndarray:
        """Output `k` of the last invoke, dequantized."""
        t = self.outputs[k]
        return t.dequantize(self.tensor(t.index))

    def tensor(self, index: int) -> np.ndarray:
        """Tensor `index` after the last invoke, without the rows of a padded batch."""
        value = self.interpreter.get_tensor(index)
        if self.fixed_batch and self._rows is not None and self._rows < self.fixed_batch and (
                value.ndim and value.shape[0] == self.fixed_batch):
            return value[: self._rows]
        return value

    def run(self, inputs: Sequence[np.ndarray],
            progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """Runs all samples; returns the dequantized outputs, one array per output.

        Args:
            inputs: One float (or integer, for integer inputs) array per model
                input, all with the same number of samples.
            progress: Called with (samples done, total) after each batch.
        """
        total = len(inputs[0])
        outs: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for _, stop in self.batches(inputs):
            for k in range(len(self.outputs)):
                outs[k].append(self.output(k))
            if progress is not None:
                progress(stop, total)
        return [np.concatenate(o, axis=0) for o in outs]


def run_outputs(model: bytes, samples: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    """Runs `samples` through an already verified `model` (float in, float out),
    `batch` at a time (the model's own batch size where it fixes one), with XNNPACK on
    every core; with the builtin kernels where XNNPACK refuses the model (some
    extreme scales, such as a user's tiny range). Outputs in the interpreter's order.

    Example:
        >>> reference = run_outputs(calib.model, calib.samples, 64)
    """
    try:
        return _run_outputs_on(model, samples, batch, "xnnpack")
    except RuntimeError:
        return _run_outputs_on(model, samples, batch, "builtin")


def _run_outputs_on(model: bytes, samples: Sequence[np.ndarray], batch: int,
                    backend: str) -> list[np.ndarray]:
    interp = make_interpreter(model, backend=backend, num_threads=os.cpu_count() or 1,
                              verified=True, allocate=False)
    ins = [TensorIO.from_details(d) for d in interp.get_input_details()]
    n = len(samples[0])
    batch = fixed_batch([t.signature for t in ins]) or batch  # the last batch padded
    size_inputs(interp, [[batch, *a.shape[1:]] for a in samples])
    outs = [TensorIO.from_details(d) for d in interp.get_output_details()]
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for start in range(0, n, batch):
        for t, a in zip(ins, samples):
            interp.set_tensor(t.index, t.quantize(pad_batch(a[start : start + batch], batch)))
        invoke(interp)
        for k, t in enumerate(outs):
            results[k].append(t.dequantize(interp.get_tensor(t.index))[: n - start])
    return [np.concatenate(r) for r in results]


def _keras_order(outputs: list[TensorIO]) -> list[TensorIO]:
    """Outputs named `output_0`, `output_1`, ... (a Keras 3 model's) in that order.

    TFLite lists a graph's outputs by tensor, not in the model's order.
    """
    numbers = [t.key.removeprefix("output_") for t in outputs]
    if not all(n.isdigit() for n in numbers):
        return outputs
    return [t for _, t in sorted(zip(map(int, numbers), outputs), key=lambda p: p[0])]


def _signature_names(parsed: Any) -> dict[int, str]:
    """Tensor index -> signature name, for subgraph 0's first signature."""
    out: dict[int, str] = {}
    for sd in (parsed.signatureDefs or [])[:1]:
        if sd.subgraphIndex != 0:
            continue
        for tm in list(sd.inputs or []) + list(sd.outputs or []):
            name = tm.name.decode() if isinstance(tm.name, bytes) else str(tm.name)
            out[int(tm.tensorIndex)] = name
    return out

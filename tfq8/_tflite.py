"""The only module that touches private TensorFlow / TFLite API.

tfq8 overrides the converter's activation ranges through the same route as
`tf.lite.experimental.QuantizationDebugger`:

1. `converter._experimental_calibrate_only = True` makes `convert()` return the
   calibrated *float* model, whose activation tensors carry
   `quantization.min/max` recorded by TFLite's own calibrator.
2. tfq8 rewrites those `min/max` fields in the flatbuffer.
3. `tensorflow.lite.python.convert.mlir_quantize(..., fully_quantize=True)`
   turns the edited model into the int8 model, deriving scales and zero points
   from the edited ranges exactly as it would from the converter's own.

Quantization-aware-trained models (`tfq8.qat`) take the public converter
(`convert_qat`); where a partially annotated one is calibrated,
`dequantized_ranges` pins the float copies of its QAT tensors.

Two private Keras attributes live here too (`compile_arguments`: the objects
`compile()` received, which Keras 3 and tf_keras both keep; `keras_layers`: the
layers inside custom layers).

Everything here is pinned to the TensorFlow releases in
`SUPPORTED_TF_VERSIONS`; `tests/test_tflite_private_api.py` fails loudly when a
release moves or renames any of it. A TF upgrade touches this file only.

Example:
    >>> from tfq8 import _tflite
    >>> _tflite.check_tf_version()  # raises on an unsupported TensorFlow
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tensorflow.lite.python import conversion_metadata_schema_py_generated as _meta_fb  # private
from tensorflow.lite.python import convert as _tf_convert  # private
from tensorflow.lite.python import util as _tf_util  # private
from tensorflow.lite.python.optimize import calibrator as _calibrator  # private
from tensorflow.lite.python import schema_py_generated as schema  # private
from tensorflow.lite.tools import flatbuffer_utils as _fb_utils  # private
from tensorflow.lite.python.convert import ConverterError as _ConverterError  # private

from tfq8._quiet import quiet_native_stderr, quiet_stdout
from tfq8.errors import UnsupportedOpError, first_line

_log = logging.getLogger("tfq8")

SUPPORTED_TF_VERSIONS: tuple[str, ...] = ("2.21",)
"""TensorFlow major.minor releases whose private quantizer API tfq8 was checked against."""

ALLOW_UNSUPPORTED_ENV = "TFQ8_ALLOW_UNSUPPORTED_TF"

FLOAT32_REBUILD_HINT = (
    "Rebuild the same architecture under the float32 policy ({setter}), copy the weights "
    "(new_model.set_weights(model.get_weights())) and pass the new model.")
"""What to do about a float16 / bfloat16 (mixed-precision) model; `{setter}` sets the policy."""

_TENSOR_TYPE_NAMES = {
    v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")
}
_BUILTIN_NAMES = {
    v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")
}

# numpy dtype -> the tf.dtypes value mlir_quantize expects for model inputs/outputs.
_IO_TYPES = {
    np.dtype(np.int8): tf.int8,
    np.dtype(np.uint8): tf.uint8,
    np.dtype(np.float32): tf.float32,
}


def check_tf_version(version: str | None = None) -> None:
    """Raises `RuntimeError` unless TensorFlow is a release tfq8 supports.

    Set the environment variable `TFQ8_ALLOW_UNSUPPORTED_TF=1` to try an
    unsupported release anyway (a warning is logged instead).

    Args:
        version: The version string to check; defaults to `tf.__version__`.
    """
    version = tf.__version__ if version is None else version
    major_minor = ".".join(version.split(".")[:2])
    if major_minor in SUPPORTED_TF_VERSIONS:
        return
    msg = (
        f"tfq8 relies on private TFLite quantizer API checked only on TensorFlow "
        f"{', '.join(SUPPORTED_TF_VERSIONS)}; found TensorFlow {version}. "
        f"Set {ALLOW_UNSUPPORTED_ENV}=1 to try it anyway."
    )
    if os.environ.get(ALLOW_UNSUPPORTED_ENV) == "1":
        _log.warning(msg)
        return
    raise RuntimeError(msg)


def calibrate_only(
    converter: tf.lite.TFLiteConverter,
    sample_gen: Callable[[], Iterable[list[np.ndarray]]],
    *,
    on_float_model: Callable[[bytes], None] | None = None,
) -> bytes:
    """Runs TFLite's own calibrator and returns the calibrated float model.

    Args:
        converter: A fresh `tf.lite.TFLiteConverter` for the model.
        sample_gen: Zero-argument callable yielding one sample per step (one
            batch for a model whose batch size is fixed), each a list of
            arrays in the model's input order.
        on_float_model: Called with the converter's float `.tflite` model just
            before the calibrator starts on it (the converter's private
            `_quantize` step receives it; this converter instance only).

    The calibrator gets the float model with its WHILE loops' pass-through
    variables split apart (`loop_safe`).

    Returns:
        The calibrated float `.tflite` flatbuffer; each activation tensor carries
        `quantization.min/max` as observed by TFLite's calibrator.
    """
    check_tf_version()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = sample_gen
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    with loop_safe(converter, on_float_model=on_float_model):
        return _calibrated(converter)


def calibrate_tflite(
    model: bytes,
    sample_gen: Callable[[], Iterable[list[np.ndarray]]],
    *,
    on_float_model: Callable[[bytes], None] | None = None,
) -> bytes:
    """`calibrate_only` for a float `.tflite` model instead of a converter.

    The step TFLite's converter takes inside its private `_quantize` once it has
    made the float model: its private `Calibrator` runs the samples and records
    each tensor's min/max. The calibrator gets the model with its WHILE loops'
    pass-through variables split apart, as in `loop_safe`.

    Args:
        model: A float `.tflite` flatbuffer.
        sample_gen: As for `calibrate_only`.
        on_float_model: Called with the (split) float model before the
            calibrator starts on it.

    Returns:
        The calibrated float `.tflite` flatbuffer, as `calibrate_only` returns it.
    """
    check_tf_version()
    model = _for_calibrator(model, on_float_model)
    try:
        with quiet_stdout(), quiet_native_stderr():
            return bytes(_calibrator.Calibrator(model).calibrate(sample_gen))
    except RuntimeError as e:
        raise _calibrator_failed(e, tflite=True) from None


def _calibrated(converter: tf.lite.TFLiteConverter) -> bytes:
    """`convert_float` of a converter set up to calibrate only, its errors explained."""
    try:
        return convert_float(converter)  # calibrated, since _experimental_calibrate_only is set
    except RuntimeError as e:  # raised by the calibrator's interpreter while it runs the samples
        raise _calibrator_failed(e) from None


def _calibrator_failed(e: RuntimeError, *, tflite: bool = False) -> ValueError:
    """The error for a failure of TFLite's calibrator while it runs the samples
    (`tflite`: on a float `.tflite` given as the model)."""
    what = first_line(e).rstrip(".")
    variables = re.search(r"\((READ_VARIABLE|ASSIGN_VARIABLE|VAR_HANDLE)\)", str(e))
    if variables and tflite:
        return ValueError(
            f"TFLite's calibrator could not run the model: {what}. The .tflite reads "
            "variables it never initializes (VAR_HANDLE / READ_VARIABLE ops): its weights "
            "were left as variables instead of folded into constants, as "
            "TFLiteConverter.from_concrete_functions does when given the model as its "
            "trackable object. Convert the float model again with from_keras_model, or "
            "from_saved_model on a folder written by model.export(path), or pass the "
            "Keras model itself. Received: a .tflite with variable ops")
    if variables:
        return ValueError(
            f"TFLite's calibrator could not run the model: {what}. The converted model "
            "still reads variables at run time, and TFLite's own converter fails on it the "
            "same way. A SavedModel whose function reads variables TFLite does not fold "
            "into constants (a tf.Module holding a Keras model, say) does this: pass the "
            "Keras model itself, or a folder written by model.export(path).")
    return ValueError(
        "TFLite's calibrator failed while running the model on the calibration data: "
        f"{what}. The usual cause is data the model cannot take (for example "
        "token ids outside an Embedding's vocabulary).")


@contextlib.contextmanager
def loop_safe(converter: tf.lite.TFLiteConverter, *,
              on_float_model: Callable[[bytes], None] | None = None) -> Iterator[None]:
    """While inside, `converter`'s calibrator gets the float model with its WHILE
    loops' pass-through variables split apart (`loops.split_loop_passthroughs`):
    on the model as the converter made it, TFLite's calibrator crashes the process.

    Hooks the converter's private `_quantize` step, which receives the float
    model before calibrating (this converter instance only).

    Args:
        converter: A `tf.lite.TFLiteConverter` set up to quantize.
        on_float_model: Called with that float model, split, before the calibrator
            starts on it.
    """
    quantize = converter._quantize  # pylint: disable=protected-access

    def hooked(model: bytes, *args: Any, **kwargs: Any) -> bytes:
        return quantize(_for_calibrator(model, on_float_model), *args, **kwargs)

    converter._quantize = hooked  # pylint: disable=protected-access
    try:
        yield
    finally:  # no converter -> hook -> converter cycle left behind
        del converter._quantize  # pylint: disable=protected-access


def _for_calibrator(model: bytes, on_float_model: Callable[[bytes], None] | None) -> bytes:
    """The float model as TFLite's calibrator gets it, from a converter or a `.tflite`:
    its WHILE loops' pass-through variables split apart (`loops.split_loop_passthroughs`),
    and handed to `on_float_model` first."""
    from tfq8.loops import split_loop_passthroughs  # pylint: disable=import-outside-toplevel

    model = split_loop_passthroughs(bytes(model))
    if on_float_model is not None:
        on_float_model(model)
    return model


def convert_qat(
    converter: tf.lite.TFLiteConverter,
    *,
    input_type: np.dtype = np.int8,
    output_type: np.dtype = np.int8,
) -> bytes:
    """TFLite's conversion of a quantization-aware-trained model (FakeQuant ranges).

    Public converter settings only: `Optimize.DEFAULT` without a representative
    dataset, so the converter's QAT pass gives every FakeQuant-annotated tensor
    the scale and zero point of its learned min/max and nothing is calibrated.
    `supported_ops` stays default: TF 2.21 refuses `TFLITE_BUILTINS_INT8` without
    a representative dataset even for QAT models.

    Args:
        converter: A fresh `tf.lite.TFLiteConverter` for the QAT model.
        input_type: dtype of the model's inputs: int8, uint8 or float32.
        output_type: dtype of the model's outputs: int8, uint8 or float32.

    Returns:
        The `.tflite` flatbuffer; ops QAT did not annotate stay float.
    """
    check_tf_version()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = _IO_TYPES[np.dtype(input_type)]
    converter.inference_output_type = _IO_TYPES[np.dtype(output_type)]
    return convert_float(converter)


CONVERT_LOCK = threading.RLock()
"""Held around every `TFLiteConverter.convert()` tfq8 makes, one conversion at a time.

The converter is not safe in two threads at once: exporting a Keras model,
TensorFlow's `AutoTrackable` saves `warnings.filters` and TensorFlow's log
verbosity, sets them to "ignore all" and FATAL, and puts back what it saved,
around every attribute it reads. Two overlapping exports (`tfq8.convert` in two
threads) can put back each other's settings and leave every warning of the
process ignored, and TensorFlow logging only FATAL, for good.
"""


def convert_float(converter: tf.lite.TFLiteConverter) -> bytes:
    """`converter.convert()`, quiet: the plain float `.tflite` model unless the
    converter was set up for more (calibration, QAT).

    The converter's MLIR error dump goes to native stderr; its text is in the
    error raised here. Conversions in several threads run one at a time
    (`CONVERT_LOCK`).

    Raises:
        UnsupportedOpError: Naming the ops (or the float16 types) the converter rejects.
    """
    try:
        with CONVERT_LOCK, quiet_stdout(), quiet_native_stderr():
            return bytes(converter.convert())
    except _ConverterError as e:
        raise _unsupported(str(e)) from None


# What to do about TensorFlow ops that Keras itself puts in a model, beyond "replace them".
_UNSUPPORTED_OP_HINTS = {
    "BitwiseAnd": "Keras 3's keras.ops.argmax and keras.ops.argmin of a float tensor test its "
                  "sign bit with BitwiseAnd (TensorFlow backend): use tf.math.argmax(x, "
                  "axis=-1, output_type=tf.int32) (or tf.math.argmin) in the Lambda layer "
                  "instead (TFLite makes it an int8 ARG_MAX), or take the argmax of the "
                  "model's scores outside the model.",
}


def _op_locations(message: str, most: int = 3) -> dict[str, list[str]]:
    """Op type -> the layers (graph name scopes) where the converter's message places it.

    The converter's MLIR locations read `fused["BitwiseAnd:",
    "functional_1/lambda_1/BitwiseAnd@__inference_..."]`: the node's name, whose
    scope is the Keras layer that made the op.
    """
    where: dict[str, list[str]] = {}
    for op, node in re.findall(r'fused\["(\w+):", "([^"@]+)@', message):
        scope = node.rsplit("/", 1)[0] if "/" in node else node
        found = where.setdefault(op, [])
        if scope not in found and len(found) < most:
            found.append(scope)
    return where


def _unsupported(message: str) -> Exception:
    """A short `UnsupportedOpError` from the converter's long MLIR message."""
    # "Custom ops: Svd" on a line of its own; not "... implement custom ops: https://...".
    ops = re.findall(r"^(?:TF Select ops|Flex ops|Custom ops): (.+)$", message, re.M | re.I)
    ops = ops or re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)
    ops = list(dict.fromkeys(op.strip() for op in ops))
    # The rejected ops' details, such as "tf.MatMul(tensor<?x8xf16>, ...": the ops are
    # builtin, but not in float16 / bfloat16 (a mixed-precision Keras model).
    half = re.search(r"^\s*tf\.\w+\(.*tensor<(?:[^<>]*x)?(b?f16)>", message, re.M)
    if half:
        setter = "keras.config.set_dtype_policy('float32')"
        return UnsupportedOpError(
            f"The model computes in {'bfloat16' if half.group(1) == 'bf16' else 'float16'}"
            f"{' (ops ' + ', '.join(ops) + ')' if ops else ''}, such as under a mixed-precision "
            "dtype policy like 'mixed_float16', which TFLite's int8 conversion does not take. "
            + FLOAT32_REBUILD_HINT.format(setter=setter))
    if ops:
        where = _op_locations(message)
        listed = "; ".join(f"{op} (in {', '.join(where[op])})" if op in where else op
                           for op in ops)
        hints = "".join(f" {_UNSUPPORTED_OP_HINTS[op]}" for op in ops
                        if op in _UNSUPPORTED_OP_HINTS)
        return UnsupportedOpError(
            f"The model uses ops TFLite's builtin ops do not cover: {listed}. "
            "Replace them (for example with keras.ops equivalents TFLite supports); "
            f"full-integer models cannot use TF Select (Flex) ops.{hints}"
        )
    first = next((ln for ln in message.splitlines() if "error" in ln.lower()), message[:300])
    if "TensorList" in message:  # Keras 3 LSTM/GRU/RNN loops keep their steps in a TensorList
        layers = sorted({scope for op, found in _op_locations(message).items()
                         if op.startswith("TensorList") for scope in found})
        return UnsupportedOpError(
            "TFLite's converter rejected the model: a recurrent layer that is not unrolled"
            + (f" ({', '.join(layers)})" if layers else "") + " keeps its steps in a "
            "TensorList, which the converter lowers only with a fixed batch size, and tfq8 "
            "fixes it at 1 only for Keras models whose input shapes it can tell (not for a "
            "SavedModel). Build the layer with unroll=True, or the model with "
            "keras.Input(..., batch_size=1).")
    return UnsupportedOpError(f"TFLite's converter rejected the model: {first.strip()}")


def quantize(
    calibrated: bytes,
    *,
    per_channel: bool = True,
    input_type: np.dtype = np.int8,
    output_type: np.dtype = np.int8,
) -> bytes:
    """Quantizes a calibrated float model with the ranges its tensors carry.

    Args:
        calibrated: Calibrated float flatbuffer (see `calibrate_only`), usually
            after `set_ranges`.
        per_channel: Per-channel weight quantization (True) or per-tensor.
        input_type: dtype of the model's inputs: int8, uint8 or float32.
        output_type: dtype of the model's outputs: int8, uint8 or float32.

    Returns:
        The quantized `.tflite` flatbuffer.
    """
    check_tf_version()
    # fully_quantize=True forces int8 model inputs and outputs whatever the
    # requested types; for uint8 / float32 I/O the quantizer needs False (what
    # TFLiteConverter itself passes) and then inserts the boundary ops.
    fully = np.dtype(input_type) == np.int8 and np.dtype(output_type) == np.int8
    with quiet_stdout(), quiet_native_stderr() as said:
        try:
            return bytes(
                _tf_convert.mlir_quantize(
                    calibrated,
                    disable_per_channel=not per_channel,
                    fully_quantize=fully,
                    input_data_type=_IO_TYPES[np.dtype(input_type)],
                    output_data_type=_IO_TYPES[np.dtype(output_type)],
                )
            )
        except RuntimeError as e:
            if str(e).strip():
                raise
            raise _quantizer_failed(said()) from None


class SameScaleError(UnsupportedOpError):
    """TFLite's quantizer refused a model because an op's value inputs and output, which
    it needs on one int8 grid ("same scale constraint"), carry different ones.

    `tfq8.shared_grid` catches it and gives such ops' tensors one range.

    Attributes:
        op: The op the quantizer named (its location in the graph).
    """

    def __init__(self, problem: str, *, op: str = ""):
        super().__init__(problem)
        self.op = op


def _quantizer_failed(stderr: str) -> Exception:
    """An `UnsupportedOpError` from what TFLite's quantizer wrote to stderr when it
    failed: its Python exception is empty."""
    # loc("functional_1/simple_rnn_1/SelectV2_1"): error: 'tfl.select_v2' op quantization ...
    found = re.search(r'loc\("([^"]+)"\): error: (.+)', stderr)
    if found is None:
        line = next((ln.strip() for ln in stderr.splitlines() if "error" in ln.lower()), "")
        return UnsupportedOpError("TFLite's quantizer failed on the model"
                                  + (f": {line}" if line else " without saying why."))
    where, what = found.groups()
    if "same scale constraint" in what:
        return SameScaleError(
            f"TFLite's quantizer failed on {where}: {what.strip()}. The op needs its value "
            "inputs and output on one int8 grid, and the quantizer could not give them one "
            "(TFLite's own converter fails alike): it does not requantize a tensor of fixed "
            "scale, the output of a TANH, LOGISTIC or SOFTMAX, that two or more such ops read "
            "on grids of their own.", op=where)
    return UnsupportedOpError(f"TFLite's quantizer failed on {where}: {what.strip()}.")


def finish_as_converter(model: bytes) -> bytes:
    """The converter's last two steps after quantizing, on `quantize`'s output.

    `TFLiteConverter` then (1) merges equal read-only buffers
    (`_optimize_tflite_model`: `deduplicate_readonly_buffers`) and (2) stamps
    `CONVERSION_METADATA` with the hash of the model it returns, appended after
    all other metadata (`_convert_and_export_metrics`). `mlir_quantize` alone
    does neither and carries over the calibrated float model's metadata and
    hash. Repeating both steps makes `minmax` give the converter's own file
    byte for byte on most models (see `tfq8.ranges.minmax`).

    Args:
        model: A `.tflite` flatbuffer from `quantize`.

    Before both, the data of buffers nothing refers to is zeroed
    (`clear_unreferenced_buffers`), so that the file depends on the model and
    its ranges alone.

    Returns:
        The finished flatbuffer. Models that keep their buffers outside the
        flatbuffer (over 2 GB) are returned as they are, as the converter does.
    """
    root = schema.Model.GetRootAs(model, 0)
    names = [root.Metadata(k).Name() for k in range(root.MetadataLength())]
    if b"buffer_location" in names:
        return model
    model = clear_unreferenced_buffers(model)
    model = bytes(_tf_convert.deduplicate_readonly_buffers(model))
    field = _tf_util.CONVERSION_METADATA_FIELD_NAME.encode()
    if field not in names:
        return model
    parsed = read_model(model)
    k = [m.name for m in parsed.metadata].index(field)
    old = parsed.metadata.pop(k).buffer
    metadata = _meta_fb.ConversionMetadataT.InitFromObj(_meta_fb.ConversionMetadata.GetRootAs(
        np.asarray(parsed.buffers.pop(old).data, np.uint8).tobytes(), 0))
    for sg in parsed.subgraphs:  # buffers after the removed one move down
        for t in sg.tensors:
            if t.buffer > old:
                t.buffer -= 1
    for m in parsed.metadata:
        if m.buffer > old:
            m.buffer -= 1
    parsed.metadata = parsed.metadata or None
    metadata.environment.modelHash = _tf_util.get_model_hash(parsed)
    return write_model(_tf_util.populate_conversion_metadata(parsed, metadata))


def clear_unreferenced_buffers(model: bytes) -> bytes:
    """`model` with zeros in every buffer that no tensor and no metadata refers to.

    TFLite's quantizer leaves such buffers behind (two beside a fused
    `UNIDIRECTIONAL_SEQUENCE_LSTM`), and their bytes depend on what it did
    before in the same process: the first quantization of a tf_keras LSTM in a
    process writes -10 and 16384 there, every later one 127 and 32767. Nothing
    reads them; zeroing them in place (same sizes, same layout) makes the same
    model and ranges give the same file in any process.

    Args:
        model: A `.tflite` flatbuffer whose buffers are inside it.

    Returns:
        The model, unchanged (the same object) if no such buffer holds data.
    """
    root = schema.Model.GetRootAs(model, 0)
    used = {0}  # buffer 0 is the empty sentinel
    for g in range(root.SubgraphsLength()):
        sg = root.Subgraphs(g)
        used.update(sg.Tensors(t).Buffer() for t in range(sg.TensorsLength()))
    used.update(root.Metadata(k).Buffer() for k in range(root.MetadataLength()))
    unused = [k for k in range(root.BuffersLength())
              if k not in used and root.Buffers(k).DataLength()]
    if not unused:
        return model
    out = bytearray(model)
    root = schema.Model.GetRootAs(out, 0)
    for k in unused:
        root.Buffers(k).DataAsNumpy()[:] = 0  # a view into `out`
    return bytes(out)


def buffer_views(model: bytearray, buffers: Iterable[int]) -> dict[int, np.ndarray]:
    """Writable uint8 views of the data of `buffers` inside the serialized `model`,
    to change constant values in place without serializing the model again
    (a buffer stored outside the flatbuffer, or empty, has none)."""
    root = schema.Model.GetRootAs(model, 0)
    out = {}
    for k in buffers:
        data = root.Buffers(k).DataAsNumpy()
        if isinstance(data, np.ndarray) and data.size:
            out[k] = data
    return out


def read_model(model: bytes) -> "schema.ModelT":
    """Parses a `.tflite` flatbuffer into the mutable object API (`ModelT`).

    An op without inputs or outputs (VAR_HANDLE, ASSIGN_VARIABLE: the seed state a
    Keras 3 recurrent layer with `dropout` advances even at inference) gets empty
    ones, so that readers of the parsed model can iterate over every op's.
    """
    parsed = _fb_utils.read_model_from_bytearray(bytearray(model))
    for sg in parsed.subgraphs or []:
        for op in sg.operators or []:
            for field in ("inputs", "outputs"):
                if getattr(op, field) is None:
                    setattr(op, field, np.zeros(0, np.int32))
    return parsed


def write_model(model: "schema.ModelT") -> bytes:
    """Serializes a `ModelT` back into flatbuffer bytes."""
    return bytes(_fb_utils.convert_object_to_bytearray(model))


def tensor_type_name(tensor_type: int) -> str:
    """`schema.TensorType` value -> name such as `INT8`."""
    return _TENSOR_TYPE_NAMES.get(tensor_type, f"TYPE_{tensor_type}")


def op_name(model: "schema.ModelT", op: "schema.OperatorT") -> str:
    """Builtin (or custom) op name of an operator, such as `CONV_2D`."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        name = code.customCode
        return name.decode() if isinstance(name, bytes) else str(name)
    return _BUILTIN_NAMES.get(builtin, f"OP_{builtin}")


def tensor_name(tensor: "schema.TensorT") -> str:
    """A tensor's name as `str`."""
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def calibrated_ranges(calibrated: bytes, subgraph: int = 0) -> dict[int, tuple[float, float]]:
    """Tensor index -> (min, max) recorded by the calibrator in `subgraph` (0: the main
    graph; a loop's body is another).

    Reads the flatbuffer in place (no object-API copy of the model).
    """
    sg = schema.Model.GetRootAs(calibrated, 0).Subgraphs(subgraph)
    out = {}
    for index in range(sg.TensorsLength()):
        q = sg.Tensors(index).Quantization()
        if q is not None and q.MinLength() == 1:
            out[index] = (float(q.Min(0)), float(q.Max(0)))
    return out


class RangeWriter:
    """Writes ranges into a calibrated model by patching its bytes in place.

    The calibrated flatbuffer already holds a one-element float32 `min` and
    `max` vector for every calibrated tensor; their byte offsets are found once,
    and each new set of ranges is a copy of the bytes with those 8 bytes per
    tensor overwritten. The result is byte-identical to re-serializing an
    edited `ModelT`, in microseconds instead of a full Python rebuild.

    The tensors are those of `subgraph` (0, the main graph, by default).

    Example:
        >>> writer = RangeWriter(calibrated)
        >>> edited = writer.write({0: (-1.0, 1.0)})
    """

    def __init__(self, calibrated: bytes, subgraph: int = 0):
        self.base = bytes(calibrated)
        root = schema.Model.GetRootAs(self.base, 0)
        sg = root.Subgraphs(subgraph)
        self.offsets: dict[int, tuple[int, int]] = {}
        for index in range(sg.TensorsLength()):
            q = sg.Tensors(index).Quantization()
            if q is None or q.MinLength() != 1 or q.MaxLength() != 1:
                continue
            lo = q._tab.Vector(q._tab.Offset(4))  # pylint: disable=protected-access
            hi = q._tab.Vector(q._tab.Offset(6))  # pylint: disable=protected-access
            self.offsets[index] = (lo, hi)

    def write(self, ranges: Mapping[int, tuple[float, float]]) -> bytes:
        """A copy of the model whose tensors carry `ranges` (index -> (min, max))."""
        buf = bytearray(self.base)
        for index, (lo, hi) in ranges.items():
            if index not in self.offsets:
                raise ValueError(
                    f"Tensor {index} carries no calibrated range to override."
                )
            lo_at, hi_at = self.offsets[index]
            struct.pack_into("<f", buf, lo_at, lo)
            struct.pack_into("<f", buf, hi_at, hi)
        return bytes(buf)


_GRIDS = {"INT8": (-128, 127), "UINT8": (0, 255)}


def grid_range(dtype: str, scale: float, zero_point: int) -> tuple[float, float] | None:
    """The float range a quantized tensor's grid spans, or None for other types.

    Example:
        >>> grid_range("INT8", 1 / 255, -128)
        (0.0, 1.0)
    """
    grid = _GRIDS.get(dtype)
    if grid is None:
        return None
    return float(scale * (grid[0] - zero_point)), float(scale * (grid[1] - zero_point))


def dequantized_ranges(calibrated: bytes) -> dict[int, tuple[float, float]]:
    """Exact ranges for the float copies DEQUANTIZE makes of already-quantized tensors.

    In the calibrated model of a partially quantization-aware-trained model the
    converter has already quantized the QAT region; where it ends, a DEQUANTIZE
    gives the next (un-annotated) op a float copy of an int8 tensor, and the
    calibrator records that copy's own min/max. The quantizer later drops the
    DEQUANTIZE and feeds the int8 tensor itself, but derives the op's bias scale
    from the copy's recorded range: the two disagree and the output is wrong
    (TF 2.21, also through `TFLiteConverter` with a representative dataset).
    Giving each copy exactly its int8 tensor's range makes them agree.

    Args:
        calibrated: Calibrated float flatbuffer (see `calibrate_only`).

    Returns:
        DEQUANTIZE output tensor index (subgraph 0) -> (min, max) of the input's
        int8/uint8 grid; empty for a model without QAT regions.
    """
    root = schema.Model.GetRootAs(calibrated, 0)
    sg = root.Subgraphs(0)
    out = {}
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        code = root.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin != schema.BuiltinOperator.DEQUANTIZE:
            continue
        src, dst = sg.Tensors(op.Inputs(0)), sg.Tensors(op.Outputs(0))
        q, dq = src.Quantization(), dst.Quantization()
        if (q is None or q.ScaleLength() != 1 or q.ZeroPointLength() != 1
                or dq is None or dq.MinLength() != 1):
            continue
        span = grid_range(tensor_type_name(src.Type()), float(q.Scale(0)), int(q.ZeroPoint(0)))
        if span is not None:
            out[int(op.Outputs(0))] = span
    return out


def set_ranges(
    calibrated: bytes, ranges: Mapping[int, tuple[float, float]]
) -> bytes:
    """Returns a copy of `calibrated` whose tensors carry the given ranges.

    Args:
        calibrated: Calibrated float flatbuffer.
        ranges: Tensor index (subgraph 0) -> (min, max). Every index must
            already carry a calibrated range.

    Returns:
        The edited flatbuffer.
    """
    return RangeWriter(calibrated).write(ranges)


def tensor_names(model: bytes) -> list[str]:
    """Names of the tensors of subgraph 0, by index."""
    return [tensor_name(t) for t in read_model(model).subgraphs[0].tensors]


def tensor_types(model: bytes) -> dict[str, str]:
    """Tensor name -> element type name (such as `INT8`) in subgraph 0."""
    sg = schema.Model.GetRootAs(model, 0).Subgraphs(0)
    out = {}
    for k in range(sg.TensorsLength()):
        t = sg.Tensors(k)
        name = t.Name()
        out[name.decode() if isinstance(name, bytes) else str(name)] = tensor_type_name(t.Type())
    return out


def outputs_of(model: "schema.ModelT") -> Sequence[int]:
    """Output tensor indices of subgraph 0."""
    return [int(i) for i in model.subgraphs[0].outputs]


def production_order(model: bytes) -> list[int]:
    """Tensor indices of subgraph 0 in the order the graph computes them.

    Model inputs come first, then each operator's outputs in execution order.
    Reads the flatbuffer in place (no object-API copy of the model).
    """
    sg = schema.Model.GetRootAs(model, 0).Subgraphs(0)
    order = [int(sg.Inputs(j)) for j in range(sg.InputsLength())]
    seen = set(order)
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        for o in (int(op.Outputs(j)) for j in range(op.OutputsLength())):
            if o not in seen:
                seen.add(o)
                order.append(o)
    return order


def keras_layers(model: Any) -> list[Any]:
    """Every layer in a Keras model, at any depth: in nested models, in wrappers
    (`Bidirectional`, `TimeDistributed`) and in custom layers, which no public Keras
    API lists. Keras 3 and tf_keras both keep the private `_flatten_layers`."""
    flatten = model._flatten_layers  # pylint: disable=protected-access
    return list(flatten(include_self=False, recursive=True))


def is_plain_functional(model: Any) -> bool:
    """Whether a Keras 3 model is a functional model whose `call` is Keras' own (not a
    subclass that overrides it). Keras 3 has no public name for its functional class,
    `keras.src.models.functional.Functional`."""
    from keras.src.models.functional import Functional  # noqa: PLC0415

    return type(model).call is Functional.call


def lambda_in_float32(layer: Any) -> Any:
    """A new Keras 3 or tf_keras `Lambda` layer computing `layer`'s live function in
    float32. Its config holds the function as bytecode, which Keras' safe mode refuses
    to load and which loses the function's globals; neither framework has a public
    accessor for the `output_shape` it was given, kept in the private `_output_shape`."""
    return type(layer)(layer.function, output_shape=layer._output_shape,  # noqa: SLF001
                       mask=layer.mask, arguments=layer.arguments, name=layer.name,
                       dtype="float32")


def is_graph_model(model: Any) -> bool:
    """Whether a Keras 3 or tf_keras model is a graph of layers (Sequential or
    functional), which `clone_model` can copy layer by layer, rather than a
    subclassed model. Keras 3 has no public name for its functional class, and
    tf_keras keeps the answer in the private `_is_graph_network`."""
    import keras  # noqa: PLC0415
    from keras.src.models.functional import Functional  # noqa: PLC0415

    if isinstance(model, keras.Model):
        return isinstance(model, (keras.Sequential, Functional))
    return bool(getattr(model, "_is_graph_network", False))


def rename_like(copy: Any, model: Any) -> None:
    """Gives `copy`'s layers (and `copy`) the names of `model`'s, paired in order, where
    the two have as many layers: a Keras 3 model made again from its config got new
    automatic names, and TFLite names its tensors after the layers. Keras 3 keeps a
    layer's name in a plain attribute, which it lets one set; tf_keras does not, and
    its layers keep their new names."""
    ours, theirs = keras_layers(copy), keras_layers(model)
    if len(ours) != len(theirs):
        return
    for new, old in [(copy, model), *zip(ours, theirs)]:
        try:
            new.name = old.name
        except AttributeError:  # (tf_keras: a read-only property)
            return


def compile_arguments(model: Any) -> dict[str, Any] | None:
    """The arguments `model.compile` received, as objects (custom metric functions,
    `Metric` instances), or None where the model keeps none.

    Keras 3 and tf_keras both keep them in the private `model._compile_config`
    (a `SerializableDict` / `Config` whose `.config` is a plain dict);
    `get_compile_config()` would serialize custom functions to names only.
    """
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    return config if isinstance(config, dict) else None

"""Quantization-aware training (tfmot): the int8 model keeps the ranges QAT learned.

A model from `tfmot.quantization.keras.quantize_model` (or `quantize_apply`)
carries FakeQuant ops whose min/max variables QAT trained together with the
weights. `tfq8.convert(qat_model)` turns it into a full-integer int8 model whose
activation scales and zero points are exactly those FakeQuant ranges: QAT
trained the weights *for* those grids, and re-calibrating them would throw away
what it learned and break the match between the QAT float model and the
deployed one.

What TFLite does with such a model (measured with TensorFlow 2.21, tf_keras
2.21, tfmot 0.8.1):

* The plain converter (`optimizations=[tf.lite.Optimize.DEFAULT]`, no
  representative dataset) turns every FakeQuant into its tensor's int8 scale
  and zero point; inputs and outputs stay float32 unless
  `inference_input_type`/`inference_output_type` say otherwise. Ops QAT did not
  annotate (a partially annotated model) stay float. Adding
  `supported_ops=[TFLITE_BUILTINS_INT8]` without a representative dataset raises
  "For full integer quantization, a `representative_dataset` must be
  specified." even for a QAT model (the converter checks before it has the
  graph it would detect QAT in). With a representative dataset, the calibrator
  ranges only the tensors QAT did not annotate, but for a partially annotated
  model the result is wrong: the first op after the QAT region gets its bias
  scale from the calibrated range of a float copy (DEQUANTIZE output) of its
  input while it reads the int8 QAT tensor itself (bias scale off by 28x, output
  SQNR -3.9 dB against the QAT float model on `tests/factories.py`'s partial
  QAT CNN).
* tfq8's usual path (calibrate-only, then `mlir_quantize`) gives the same
  scales: the converter applies the FakeQuant ranges *before* its calibrator
  runs, so the calibrated model is already int8 wherever QAT annotated it and
  only the float model inputs/outputs (and un-annotated tensors) carry min/max.
  Ranges tfq8 chose for those inputs/outputs had no effect (absurd ones gave
  identical bytes), so the calibration was wasted work, and data was demanded
  although none is needed. Partially annotated models had the converter's
  bias bug above. And `tfq8.check(blob, reference=qat_model)` compared the
  int8 model with that calibrated graph, already int8: with itself (infinite
  SQNR); it now compares with the QAT float model as Keras runs it.

So tfq8's design for QAT models:

1. QAT's ranges are kept for every tensor it annotated; tfq8 never
   re-calibrates them (as the TFLite converter does not).
2. If QAT annotated everything, no data is needed: `tfq8.convert(qat_model)`
   is TFLite's QAT conversion with int8 inputs/outputs by default (same
   `input_type`/`output_type` options as for other models) and the full-integer
   check. Data, if passed, is not used (logged), and the result is the same.
3. If tensors remain that QAT did not annotate (ops left float by the QAT
   conversion), tfq8 calibrates those, and only those, from `data` with its
   usual range methods (`method=`, default `"auto"`); QAT's ranges stay
   elsewhere, and the float copies of QAT tensors get exactly the QAT range
   (`pinned_ranges`), which fixes the converter's bias scale (35.7 dB on the
   same model). Without data this raises a `ValueError` naming `data`.
4. `ranges=` can only set tensors QAT did not annotate; `per_channel` applies to
   weights QAT did not quantize (QAT's weight quantizers decided the rest);
   `method`/`method_options` choose ranges for tensors QAT did not annotate
   only (with none left, setting them, or `per_channel=False`, logs a warning).
5. tfmot models tfq8 cannot convert are refused with what was expected:
   annotated-only models (`quantize_annotate_*` without `quantize_apply`) and
   models still wrapped for pruning or clustering (`strip_pruning` /
   `strip_clustering` first).

QAT models are recognised by tfmot's quantize layers (live tf_keras models and
`.h5` files, which load inside tfmot's `quantize_scope`) or by FakeQuant ops in
a SavedModel's graph. tfmot 0.8.1 with tf_keras 2.21 cannot reload a QAT model
saved as `.keras` ("Layer 'quantize_layer' expected 5 variables, but received
3 variables during loading"); the error says to save as `.h5` or SavedModel, or, without the
model object, to rebuild the QAT model and `load_weights` the `.keras` file.
Keras 3 models cannot be quantized by tfmot at all (tfmot raises "`to_quantize`
can only either be a keras Sequential or Functional model."). A model with
FakeQuant ops built without tfmot takes the usual path (with data); TFLite keeps
its FakeQuant ranges there too.

Example:
    >>> import tensorflow_model_optimization as tfmot
    >>> qat = tfmot.quantization.keras.quantize_model(tf_keras_model)
    >>> qat.compile(...); qat.fit(x_train, y_train, epochs=1)
    >>> blob = tfq8.convert(qat)                    # QAT's ranges; no data needed
    >>> tfq8.check(blob, reference=qat, data=x_test, labels=y_test).agreement
    0.99...
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import numpy as np

from tfq8 import _tflite
from tfq8.errors import first_line

_log = logging.getLogger("tfq8")

_TFMOT = "tensorflow_model_optimization"
# tfmot layer classes by what they mean for tfq8 (matched on the class and its bases).
_KINDS = {
    "QuantizeWrapper": "qat", "QuantizeWrapperV2": "qat", "QuantizeLayer": "qat",
    "QuantizeAnnotate": "annotated",
    "PruneLowMagnitude": "pruning",
    "ClusterWeights": "clustering", "ClusterWeightsMHA": "clustering",
    "ClusterWeightsRNN": "clustering",
}
# The ops TFLite's converter itself treats as training-time quantization.
_FAKE_QUANT_OPS = (b"FakeQuantWithMinMaxVars", b"FakeQuantWithMinMaxArgs",
                   b"QuantizeAndDequantizeV2", b"QuantizeAndDequantizeV3")


def tfmot_layers(model: Any) -> dict[str, list[str]]:
    """tfmot layers of a Keras model, by kind, with their names.

    Args:
        model: A Keras model (Keras 3 models cannot hold tfmot layers).

    Returns:
        Kind (`"qat"`, `"annotated"`, `"pruning"`, `"clustering"`) -> layer names;
        empty for a model without tfmot layers.

    Example:
        >>> tfmot_layers(tfmot.quantization.keras.quantize_model(m))["qat"][:2]
        ['quantize_layer', 'quant_conv2d']
    """
    found: dict[str, list[str]] = {}
    for layer in _layers(model):
        for cls in type(layer).__mro__:
            kind = _KINDS.get(cls.__name__)
            if kind and cls.__module__.startswith(_TFMOT):
                found.setdefault(kind, []).append(getattr(layer, "name", type(layer).__name__))
                break
    return found


def _layers(model: Any) -> list[Any]:
    """The model's layers in order, nested models' included (not wrappers' inner layers)."""
    out = []
    for layer in getattr(model, "layers", None) or []:
        out.append(layer)
        if getattr(layer, "layers", None) and not hasattr(layer, "layer"):
            out += _layers(layer)
    return out


def check_model(model: Any) -> None:
    """Refuses tfmot models tfq8 cannot convert, saying what it expected.

    Args:
        model: A Keras model.

    Raises:
        ValueError: For a model annotated for QAT but not quantized
            (`quantize_apply` missing), or still wrapped for pruning or
            clustering.

    Example:
        >>> check_model(tfmot.quantization.keras.quantize_annotate_model(m))
        Traceback (most recent call last):
        ValueError: ... call tfmot.quantization.keras.quantize_apply(model) ...
    """
    kinds = tfmot_layers(model)
    if not kinds:
        return
    name = getattr(model, "name", type(model).__name__)

    def layers(kind: str) -> str:
        names = kinds[kind]
        return ", ".join(repr(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")

    if "pruning" in kinds:
        raise ValueError(
            "tfq8 expected a model without pruning wrappers: call "
            "tfmot.sparsity.keras.strip_pruning(model) once pruning is done (before QAT or "
            f"conversion). Received: model {name!r} with PruneLowMagnitude layers "
            f"{layers('pruning')}")
    if "clustering" in kinds:
        raise ValueError(
            "tfq8 expected a model without clustering wrappers: call "
            "tfmot.clustering.keras.strip_clustering(model) once clustering is done (before QAT "
            "or conversion). Received: model "
            f"{name!r} with ClusterWeights layers {layers('clustering')}")
    if "annotated" in kinds and "qat" not in kinds:
        raise ValueError(
            "tfq8 expected a quantization-aware-trained model (from "
            "tfmot.quantization.keras.quantize_model, or quantize_apply after annotating), with "
            "FakeQuant ranges learned in training. Received: model "
            f"{name!r} that is only annotated (QuantizeAnnotate layers {layers('annotated')}, no "
            "quantizers): call tfmot.quantization.keras.quantize_apply(model) and train it, or "
            "convert the original float model with data.")


def is_qat(handle: Any) -> bool:
    """True for a quantization-aware-trained model (tfmot layers or FakeQuant ops).

    Args:
        handle: A `tfq8.models.ModelHandle`.
    """
    if handle.keras_model is not None:
        return "qat" in tfmot_layers(handle.keras_model)
    if handle.tflite_model is not None:  # QAT ranges live in Keras and SavedModel graphs
        return False
    pb = os.path.join(handle.saved_model_dir, "saved_model.pb")
    with open(pb, "rb") as f:
        graph = f.read()
    return any(op in graph for op in _FAKE_QUANT_OPS)


def load_keras_file(path: str) -> Any:
    """Loads a tf_keras QAT model file inside tfmot's `quantize_scope`.

    Raises:
        ImportError: If tensorflow-model-optimization cannot be imported.
        ValueError: If the file does not load (for `.keras` files the message says
            that tfmot cannot reload QAT models from that format).
    """
    try:
        import tensorflow_model_optimization as tfmot  # noqa: PLC0415
        import tf_keras  # noqa: PLC0415
    except Exception as e:  # noqa: BLE001 - an incompatible tfmot raises more than ImportError
        raise ImportError(
            f"tensorflow-model-optimization is needed for tfmot models and cannot be imported "
            f"({type(e).__name__}: {first_line(e)})") from None
    try:
        with tfmot.quantization.keras.quantize_scope():
            return tf_keras.models.load_model(path, compile=False)
    except ValueError as e:
        if not (path.endswith(".keras") and "variables" in str(e)):
            raise
        raise QATReloadError(
            f"{first_line(e)} (tfmot {getattr(tfmot, '__version__', '?')} with tf_keras "
            f"{tf_keras.__version__} cannot reload QAT models saved as .keras; save with "
            "model.save('model.h5') or as a SavedModel. Without the model object, rebuild "
            "it as before (quantize_model, or quantize_annotate_* and quantize_apply, on the "
            f"same float architecture), call qat_model.load_weights({path!r}), which reads "
            "this file, and pass the model)") from None


class QATReloadError(ValueError):
    """tfmot cannot reload a quantization-aware-trained model from this file format."""


def try_convert(
    model: Any,
    *,
    have_data: bool,
    ranges: Mapping[Any, Any] | None,
    per_channel: bool,
    input_type: np.dtype,
    output_type: np.dtype,
    method: str = "auto",
    method_options: Mapping[str, Any] | None = None,
) -> bytes | None:
    """TFLite's QAT conversion of a QAT model, if that leaves nothing to calibrate.

    Args:
        model: A `ModelHandle` (or anything `tfq8.models.load_model` takes).
        have_data: Whether calibration data (or attached statistics) is available.
        ranges: The `ranges=` overrides of `tfq8.convert`.
        per_channel: The `per_channel=` option of `tfq8.convert`.
        input_type: dtype of the model's inputs.
        output_type: dtype of the model's outputs.
        method: The `method=` option of `tfq8.convert`; a method other than
            `"auto"` (the default) is warned about when nothing is calibrated.
        method_options: The `method_options=` option of `tfq8.convert`, the same.

    Returns:
        The int8 model with QAT's ranges when the model is QAT and QAT annotated
        every tensor; None when the model is not QAT, or when tensors remain that
        QAT did not annotate and data can calibrate them (tfq8's usual path).

    Raises:
        ValueError: If QAT left tensors without ranges and there is no data, or
            if `ranges` would override ranges QAT learned.

    Example:
        >>> blob = try_convert(load_model(qat_model), have_data=False, ranges=None,
        ...                    per_channel=True, input_type=np.int8, output_type=np.int8)
    """
    from tfq8.harness.inspect import inspect  # noqa: PLC0415
    from tfq8.models import load_model  # noqa: PLC0415

    handle = load_model(model)
    if not is_qat(handle):
        return None
    blob = _tflite.convert_qat(handle.converter(), input_type=input_type, output_type=output_type)
    info = inspect(blob)
    if info.float_ops:  # ops QAT did not annotate (float I/O is for check_integer)
        ops = info.culprits
        names = ", ".join(sorted({op.name for op in ops}))
        where = ops[0].outputs[0].name if ops[0].outputs else ""
        if not have_data:
            raise ValueError(
                f"This quantization-aware-trained model has op(s) QAT did not annotate ({names}; "
                f"first output {where!r}): they have no learned ranges, so tfq8 calibrates them "
                "from representative data. Pass data=... (samples like the model's inputs) or "
                "calibration=tfq8.calibrate(model, data). Received: data=None")
        _log.info("QAT left op(s) %s without learned ranges: tfq8 calibrates those from the "
                  "data; every tensor QAT annotated keeps its FakeQuant range.", names)
        return None
    if ranges:
        raise ValueError(
            "ranges= can only set tensors QAT did not annotate, and this quantization-aware-"
            "trained model has none: every tensor has the range QAT learned (FakeQuant min/max). "
            f"Received: ranges for {', '.join(repr(k) for k in list(ranges)[:4])}")
    if not per_channel:
        _log.warning("per_channel=False has no effect here: QAT's weight quantizers decided "
                     "per-channel or per-tensor for every weight.")
    asked = [f"{name}={value!r}" for name, value, default in (
        ("method", method, "auto"), ("method_options", method_options, None))
        if value != default and value != {}]
    if asked:
        _log.warning("%s %s no effect here: range methods choose ranges for tensors QAT did "
                     "not annotate, and this quantization-aware-trained model has none (every "
                     "tensor keeps its FakeQuant range).", " and ".join(asked),
                     "have" if len(asked) > 1 else "has")
    _log.info("Quantization-aware-trained model: every tensor keeps the range QAT learned "
              "(FakeQuant min/max); %s.", "calibration data or statistics are not used"
              if have_data else "no calibration data is needed")
    return blob


def pinned_ranges(calibrated: bytes) -> dict[int, tuple[float, float]]:
    """Ranges tfq8 must not choose in a calibrated model: float copies of QAT tensors.

    Where a partially annotated QAT model leaves its QAT region, the calibrated
    model has a DEQUANTIZE whose float output carries a calibrated min/max. The
    quantizer quantizes the next op's bias with that range while the op reads the
    int8 QAT tensor itself, so unless the range is exactly the QAT tensor's the
    int8 model is wrong. This is a bug of TFLite's quantizer (measured on TF
    2.21; `TFLiteConverter` with a representative dataset has it too): on
    `tests/factories.py`'s `tf_keras_qat_cnn(annotate_all=False)` the bias scale
    was 28x too small and the output SQNR against the QAT float model -3.9 dB;
    with these ranges it is 35.7 dB.

    Args:
        calibrated: The calibrated model (`Calibration.model`).

    Returns:
        Tensor index -> (min, max), to apply after every other range; empty for
        models without QAT regions.

    Example:
        >>> pinned_ranges(tfq8.calibrate(partial_qat_model, x).model)
        {9: (-5.96..., 6.00...)}
    """
    pinned = _tflite.dequantized_ranges(calibrated)
    if pinned:
        _log.info("Keeping QAT's range on %d float copy(ies) of QAT tensors (DEQUANTIZE "
                  "outputs) so that the next op's bias matches its int8 input.", len(pinned))
    return pinned

"""`calibrate()` and `convert()`: statistics once, int8 models many times.

Pipeline (each stage its own module)::

    data --adapter--> samples --TFLite calibrator--> calibrated float graph
         --LiteRT--> histogram per tensor --range method--> (min, max) per tensor
         --override min/max--> mlir_quantize --> full-integer int8 .tflite

Example:
    >>> tflite_model = tfq8.convert(model, x_train[:500])          # method="auto"
    >>> calib = tfq8.calibrate(model, x_train[:500])
    >>> kl_model = tfq8.convert(model, calibration=calib, method="kl")
"""

from __future__ import annotations

import logging
import os
from typing import Any, Collection, Mapping

import numpy as np

from tfq8 import _args, _tflite
from tfq8._quiet import quiet_native_stderr, quiet_stdout
from tfq8 import qat as _qat
from tfq8.bias_correction import correct_biases
from tfq8.calibration import (Calibration, atomic_write, check_output_path, is_tensor_key,
                              range_pair, validate_overrides)
from tfq8.data import RepresentativeDataset, representative_dataset
from tfq8.errors import ArgumentTypeError, NonFiniteWeightsError, UnsupportedOpError
from tfq8.harness.inspect import inspect
from tfq8.models import ModelHandle, load_model, nonfinite_weights, specs_from_tflite
from tfq8.ranges import auto as _auto
from tfq8.ranges import available_methods, check_options
from tfq8.stats.collect import BackgroundCollect, collect, with_own_extremes
from tfq8.loops import int8_loops
from tfq8.rewrite import int8_islands
from tfq8.shared_grid import Quantizer
from tfq8.stats.histogram import DEFAULT_MAX_BINS, MAX_BINS, MIN_BINS

_log = logging.getLogger("tfq8")

CALIBRATION_ATTR = "_tfq8_calibration"
_IO_NAMES = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}


KEEP_SAMPLES = 256
KEEP_BYTES = 64 << 20
FEW_SAMPLES = 16  # calibrating on fewer warns


def calibrate(
    model: Any,
    data: Any,
    *,
    num_samples: int | None = None,
    max_bins: int = DEFAULT_MAX_BINS,
    batch_size: int | None = None,
    keep_samples: int | None = None,
) -> Calibration:
    """Collects histograms of every activation tensor of the model's TFLite graph.

    TFLite's own calibrator produces the calibrated float graph and the
    converter's exact min/max; LiteRT runs the same samples in batches and
    fills one histogram per tensor. With two or more cores that pass runs in a
    worker process while the calibrator runs (`tfq8.stats.worker`; set
    `TFQ8_STATS_WORKER=0` to keep it in this process, after the calibrator).
    Writes no file; logs the sample count at INFO (logger `"tfq8"`) and warns
    about fewer than 16 samples or an input that holds one value throughout.

    Args:
        model: A Keras 3 or tf_keras model, a `.keras`/`.h5`/SavedModel path,
            or a float `.tflite` (path or bytes).
        data: Calibration data of any kind `tfq8.representative_dataset` accepts.
        num_samples: Use at most this many samples (default: all; a stream with
            no known end, such as a generator, is then refused past 1 GiB of
            samples, `tfq8.data.UNSIZED_MAX_BYTES`).
        max_bins: Histogram resolution (bins per tensor, memory bound).
        batch_size: Samples per LiteRT run while collecting (default: automatic).
        keep_samples: Keep this many samples (evenly spaced) in the calibration
            for `method="auto"` to compare int8 with float; 0 keeps none.
            Default: up to `KEEP_SAMPLES`, as many as fit in `KEEP_BYTES`. A
            model whose batch size is fixed keeps whole batches: the count is
            rounded down to a multiple of it, and is at least one batch.

    Returns:
        A `Calibration`, reusable by `convert(..., calibration=...)`.

    Raises:
        ValueError: On bad arguments or data, or a Keras model whose weights
            hold NaN, or trainable weights Inf (naming them; see
            `tfq8.models.nonfinite_weights`).

    Example:
        >>> calib = tfq8.calibrate(model, dataset.take(200))
        >>> calib.save("stats.npz")
    """
    _args.integer("batch_size", batch_size, optional=True)
    _args.integer("max_bins", max_bins, minimum=MIN_BINS, maximum=MAX_BINS)
    handle = load_model(model)
    if handle.keras_model is not None:
        _check_finite_weights(handle.keras_model)
    rep = data if isinstance(data, RepresentativeDataset) and data.checked and (
        num_samples is None and data.specs == handle.specs) else representative_dataset(
            data, specs=handle.specs, num_samples=num_samples)
    rep = rep.whole_batches()
    _warn_constant_inputs(rep)
    kept = _kept(rep, keep_samples)
    handle.check_inputs(rep.inputs)
    _log.info("Calibrating on %d samples.", len(rep))
    if len(rep) < FEW_SAMPLES:
        _log.warning("Calibrating on %d sample(s): ranges from so few rarely cover the values "
                     "the model meets in use; TFLite suggests 100 to 500 representative "
                     "samples.%s", len(rep), " (An array with the rank of one sample, no "
                     "batch axis, is read as one sample.)" if len(rep) == 1 else "")
    # The histogram pass runs in a worker process beside TFLite's calibrator where it can.
    with BackgroundCollect(rep, max_bins=max_bins, batch_size=batch_size, track=kept) as bg:
        calibrated = handle.calibrated(rep, on_float_model=bg.submit)
        _check_input_count(calibrated, handle)
        _check_has_ops(calibrated)
        tensors = bg.result(calibrated)
    if tensors is None:
        tensors = collect(calibrated, rep, max_bins=max_bins, batch_size=batch_size, track=kept)
    calibrated = with_own_extremes(calibrated, tensors)
    samples = [a[kept].copy() for a in rep.inputs] if len(kept) else None
    return Calibration(calibrated, tensors, len(rep), handle.fingerprint(), samples)


def _check_finite_weights(keras_model: Any) -> None:
    """Refuses weights holding NaN, or trainable ones Inf (a diverged training run), whose
    activations have no range to calibrate. Inf in a non-trainable weight (a -inf
    attention mask, say) is the model's own constant and is taken.

    Raises:
        NonFiniteWeightsError: Naming the weights (TFLite's calibrator would
            silently record no range for their outputs, and the conversion then
            fail as if their ops could not be quantized).
    """
    bad = nonfinite_weights(keras_model)
    if bad:
        shown = ", ".join(repr(name) for name in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteWeightsError(
            f"model's weights hold NaN or Inf ({shown}), so its activations are NaN and "
            "have no range to calibrate (did training diverge?). Expected finite weights: "
            "restore or retrain them. Received: a model with "
            f"{len(bad)} non-finite weight(s)", weights=bad)


def _warn_constant_inputs(rep: RepresentativeDataset) -> None:
    """Warns about a float input that holds one value in every sample (all zeros, say):
    its int8 range then spans only that value, and real inputs would be clipped."""
    for k, a in enumerate(rep.inputs):
        if np.issubdtype(a.dtype, np.floating) and a.size and a.min() == a.max():
            name = rep.specs[k].name if rep.specs else f"input {k}"
            _log.warning("Calibration input %r holds the one value %g in all %d samples, so its "
                         "int8 range covers nothing else and real inputs will be clipped. "
                         "Calibrate on samples like those the model will see.", name,
                         float(a.flat[0]), len(rep))


def _kept(rep: RepresentativeDataset, n: int | None) -> np.ndarray:
    """Indices of the samples a calibration keeps (evenly spaced)."""
    if n is None:
        per_sample = sum(a[:1].nbytes for a in rep.inputs) or 1
        n = max(1, min(KEEP_SAMPLES, KEEP_BYTES // per_sample))
    _args.integer("keep_samples", n, minimum=0)
    if n == 0:
        return np.zeros(0, np.int64)
    step = rep.batch  # a fixed batch size: whole batches (at least one), evenly spaced
    n = max(1, min(n, len(rep)) // step)
    first = np.unique(np.linspace(0, len(rep) // step - 1, n).round().astype(np.int64)) * step
    return (first[:, None] + np.arange(step)).ravel()


def convert(
    model: Any = None,
    data: Any = None,
    *,
    calibration: Calibration | None = None,
    method: str = "auto",
    method_options: Mapping[str, Any] | None = None,
    ranges: Mapping[str | int, tuple[float, float]] | None = None,
    per_channel: bool = True,
    input_type: str = "int8",
    output_type: str = "int8",
    allow_float: bool = False,
    num_samples: int | None = None,
    output_path: str | os.PathLike | None = None,
    bias_correction: bool = False,
) -> bytes:
    """Converts a model to a full-integer int8 `.tflite` with tfq8's ranges.

    Writes a file only with `output_path`. Logs its steps at INFO (logger
    `"tfq8"`: the sample count, `auto`'s scores and choice) and warns where
    the result differs from what was asked (a `ranges` entry not applied or
    widened to include 0, an op kept float with `allow_float=True`).

    Args:
        model: A Keras 3 or tf_keras model, a `.keras`/`.h5`/SavedModel
            path, or a float `.tflite` (path or bytes). May be None when
            `calibration` is given. A tfmot
            quantization-aware-trained model keeps the ranges QAT learned
            (see `tfq8.qat`).
        data: Calibration data (anything `tfq8.representative_dataset` takes).
            Not needed with `calibration`, after `tfq8.CalibrationCallback`
            has attached statistics to the model, or for a QAT model whose
            every tensor QAT annotated (data then ranges only the rest).
        calibration: Statistics from `tfq8.calibrate` to reuse. With `model`
            too, they must have been taken on it (same weights); a QAT model
            whose every tensor QAT annotated converts with QAT's ranges anyway,
            as with `data`.
        method: `"auto"` (default) or one of `tfq8.ranges.available_methods()`:
            `"minmax"` (the converter's own ranges), `"percentile"`, `"kl"`, `"mse"`.
        method_options: Keyword options for the method, such as
            `{"percentile": 99.9}`. For `"auto"`, `{"candidates": [...]}`: the
            methods it compares, names or `(name, options)` pairs, registered
            ones of your own too (`minmax` is always scored).
        ranges: Per-tensor overrides, tensor name (or index) -> (min, max),
            applied after the method; `auto` scores with them in place and
            chooses the other ranges around them.
        per_channel: Per-channel weights (default) or per-tensor.
        input_type: `"int8"` (default), `"uint8"` or `"float32"`.
        output_type: `"int8"` (default), `"uint8"` or `"float32"`.
        allow_float: Keep ops that cannot be quantized in float, and model
            inputs and outputs that no op converts (an unused input, one passed
            through as an output) float, instead of raising `UnsupportedOpError`.
        num_samples: Use at most this many samples of `data`.
        output_path: Also write the model there (atomically).
        bias_correction: After quantizing, move each convolution's and dense
            layer's int32 bias so its output's mean matches the float model's
            on the calibration samples the `Calibration` kept, op after op
            (`tfq8.bias_correction`). Kept only where it raises output SQNR on
            those samples. It makes the int8 model track float more closely
            (SQNR, top-1 agreement); top-1 against labels moves toward the
            float model's. Needs kept samples; not applied to a fully
            QAT-annotated model.

    Returns:
        The `.tflite` flatbuffer, like `TFLiteConverter.convert()`.

    Raises:
        ValueError: On bad arguments or data, or stale or missing statistics.
        TypeError: On arguments of the wrong kind, such as a file name as
            `data`, a `ranges` key that is neither a name nor an index, or a
            `calibration` that is not a `tfq8.Calibration`. An option of the
            wrong type (`num_samples="100"`, `method=3`) raises
            `tfq8.errors.ArgumentTypeError`, a TypeError that is a ValueError too.
        UnsupportedOpError: If an op, or a model input or output, stays float
            and `allow_float` is False (a `ValueError`).

    Example:
        >>> blob = tfq8.convert(model, x_train[:500], method="kl")
        >>> open("model_int8.tflite", "wb").write(blob)
    """
    io_in, io_out, per_channel, allow_float = check_convert_options(
        method=method, method_options=method_options, ranges=ranges, per_channel=per_channel,
        input_type=input_type, output_type=output_type, allow_float=allow_float,
        num_samples=num_samples, output_path=output_path, inputs={"model": model},
        bias_correction=bias_correction)
    bias_correction = _args.boolean("bias_correction", bias_correction)
    calib = None
    if model is not None:
        if isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)):
            model = load_model(model)  # load (and verify) a model file or .tflite bytes once
        if calibration is not None:  # checked first: it must be this model's
            calib = _resolve_calibration(model, data, calibration, num_samples)
        # A QAT model converts with its own ranges where QAT learned them all, whatever
        # statistics there are (data, a calibration, or the callback's attached ones).
        have_data = (data is not None or calibration is not None
                     or getattr(model, CALIBRATION_ATTR, None) is not None)
        blob = _qat.try_convert(model, have_data=have_data, ranges=ranges,
                                per_channel=per_channel, input_type=io_in, output_type=io_out,
                                method=method, method_options=method_options)
        if blob is not None:
            if calibration is None:
                _unused_data(model, data, num_samples)
            else:
                _log.info("Quantization-aware training learned every range of this model; the "
                          "calibration is not needed.")
            if bias_correction:
                _log.warning("bias_correction=True is not applied: quantization-aware training "
                             "learned every range of this model, and TFLite's QAT conversion "
                             "is kept as it is.")
            return _finish(blob, allow_float=allow_float, output_path=output_path)
    if calib is None:
        calib = _resolve_calibration(model, data, calibration, num_samples)
    if bias_correction:
        _check_kept_samples(calib)
    quant = dict(per_channel=per_channel, input_type=io_in, output_type=io_out)
    overrides = validate_overrides(calib, ranges or {})
    pinned = _qat.pinned_ranges(calib.model)
    clash = [i for i in overrides if i in pinned]
    if clash:
        raise ValueError(
            f"ranges[{calib.tensor(clash[0]).name!r}]: this tensor is the float copy of a "
            "quantization-aware-trained tensor, so its range stays the QAT tensor's "
            f"{pinned[clash[0]]} (see tfq8.qat.pinned_ranges). Received: {overrides[clash[0]]}")
    overrides.update(pinned)
    blob = None
    if method == "auto":  # auto has built the model for its ranges while scoring them
        chosen, blob = _auto.choose_and_quantize(
            calib, overrides=overrides, candidates=(method_options or {}).get("candidates"),
            **quant)
    else:
        chosen = calib.ranges(method, **dict(method_options or {}))
        chosen.update(overrides)
    if blob is None:
        blob = quantize_with_ranges(calib, chosen, fixed=overrides, **quant)
    if bias_correction:
        blob = _correct_biases(calib, blob)
    blob = _tflite.finish_as_converter(int8_islands(int8_loops(blob)))
    info = inspect(blob)
    _warn_unapplied(calib, {i: r for i, r in overrides.items() if i not in pinned}, io_in, info)
    return _finish(blob, allow_float=allow_float, output_path=output_path, info=info)


def _warn_unapplied(calib: Calibration, overrides: Mapping[int, tuple[float, float]],
                    io_in: np.dtype, info: Any) -> None:
    """Warns about what the user asked for and the quantizer did otherwise.

    * `input_type` applies to float inputs: integer ones (token ids) keep their type.
    * TFLite fixes some int8 tensors' scale whatever their range: the outputs
      of SOFTMAX and LOGISTIC (1/256), TANH (1/128), tensors that must share
      their input's scale, and ranges too narrow for it.
    * A range without 0 is widened to include it.
    """
    if io_in != np.int8:
        integer = [t.name for t in info.inputs if t.dtype in ("INT32", "INT64", "BOOL")]
        if integer:
            _log.warning("input_type=%r applies to float inputs; integer input(s) %s keep their "
                         "own type.", io_in.name, integer)
    if not overrides:
        return
    int8 = {t.name: t for op in info.ops for t in op.outputs if t.range is not None}
    for i, (lo, hi) in overrides.items():
        stats = calib.tensor(i)
        t = int8.get(stats.name)
        wanted = (max(hi, 0.0) - min(lo, 0.0)) / 255.0
        if t is not None and not np.isclose(t.scale[0], wanted, rtol=1e-3, atol=0.0):
            _log.warning(
                "ranges[%r] = (%g, %g) was not applied: TFLite's quantizer gave this tensor "
                "(output of %s) the int8 scale %g, so its range is [%g, %g] (a scale fixed by "
                "the op, such as SOFTMAX's 1/256, a grid shared with other tensors, or a range "
                "too narrow for it).", stats.name, lo, hi, stats.producer, t.scale[0], *t.range)
        elif lo > 0 or hi < 0:
            _log.warning("ranges[%r] = (%g, %g) became (%g, %g): TFLite's int8 grid always "
                         "holds 0 exactly, so a range is widened to include it.", stats.name,
                         lo, hi, min(lo, 0.0), max(hi, 0.0))


def check_convert_options(*, method: str = "auto", method_options: Mapping[str, Any] | None = None,
                          ranges: Mapping[str | int, tuple[float, float]] | None = None,
                          per_channel: bool = True, input_type: Any = "int8",
                          output_type: Any = "int8", allow_float: bool = False,
                          num_samples: int | None = None,
                          output_path: str | os.PathLike | None = None,
                          inputs: Mapping[str, Any] | None = None,
                          bias_correction: bool = False,
                          ) -> tuple[np.dtype, np.dtype, bool, bool]:
    """Checks `convert`'s options before any slow work (the command line calls it too).

    `inputs` maps argument names to the files the job reads (the model's
    path), which `output_path` must not overwrite.

    Returns:
        `(input dtype, output dtype, per_channel, allow_float)`, normalized.

    Raises:
        ValueError, TypeError: Naming the option, what was expected and received.

    Example:
        >>> check_convert_options(method="percentile", method_options={"percentile": 99.9})
        (dtype('int8'), dtype('int8'), True, False)
    """
    normalized = (io_type("input_type", input_type), io_type("output_type", output_type),
                  _args.boolean("per_channel", per_channel),  # 1/0 and numpy's bools as bool
                  _args.boolean("allow_float", allow_float))
    _args.integer("num_samples", num_samples, optional=True)
    _args.boolean("bias_correction", bias_correction)
    if method != "auto" and method not in available_methods():
        raise (ValueError if isinstance(method, str) else ArgumentTypeError)(
            f"Unknown range method. Expected one of auto, {', '.join(available_methods())}. "
            f"Received: method={method!r}"
        )
    if method_options is not None and not isinstance(method_options, Mapping):
        raise ArgumentTypeError("method_options must be a dict of the method's options, such as "
                         f"{{'percentile': 99.9}}. Received: method_options={method_options!r}")
    if ranges is not None and not isinstance(ranges, Mapping):
        raise ArgumentTypeError("ranges must be a dict of tensor name (or index) -> (min, max). "
                         f"Received: ranges of type {type(ranges).__name__}")
    for key, value in (ranges or {}).items():  # the names are checked once calibrated
        if not is_tensor_key(key):
            raise TypeError("ranges keys must be tensor names (str) or indices (int). "
                            f"Received: {key!r} of type {type(key).__name__}")
        range_pair(key, value)
    if method == "auto" and method_options:
        if set(method_options) != {"candidates"}:
            raise ValueError(
                "method_options set one method's options, and method='auto' takes only "
                "candidates (the methods it compares, such as ['mse', 'kl']). Pass method= too, "
                "such as method='percentile'. Received: "
                f"method_options={dict(method_options)}")
        _auto.candidate_methods(method_options["candidates"])
    elif method_options:
        check_options(method, method_options)
    if output_path is not None:
        check_output_path(output_path, arg="output_path", inputs=inputs)
    return normalized


def _finish(blob: bytes, *, allow_float: bool, output_path: str | os.PathLike | None,
            info: Any = None) -> bytes:
    check_integer(blob, allow_float=allow_float, info=info)
    if output_path is not None:
        atomic_write(output_path, blob, arg="output_path")
    return blob


def converter_int8(model: Any, data: Any, *, num_samples: int | None = None,
                   input_type: Any = "int8", output_type: Any = "int8") -> bytes:
    """TFLite's own full-integer int8 conversion, for comparison with tfq8's.

    Exactly what TFLite's documentation shows: `Optimize.DEFAULT`, a
    representative dataset yielding one sample at a time (one batch for a
    fixed batch size), int8 builtin ops and int8 inputs and outputs by
    default; the converter chooses every range (min/max). One thing is
    tfq8's: on a model with WHILE loops the calibrator gets them with their
    pass-through variables split (`_tflite.loop_safe`), as TFLite's own
    calibrator crashes the process on them; the quantizer folds the split away. And
    a model that computes in float16 (a mixed-precision policy), which TFLite's
    converter refuses, is given as its float32 copy (`tfq8.mixed_precision`), as
    `convert` gives it. `tfq8.convert(...,
    method="minmax")` gives its scales and zero points, and on most models
    this file byte for byte (see `tfq8.ranges.minmax`).

    Args:
        model: Anything `convert` accepts as a model, but a `.tflite` (which
            has no converter: `convert(..., method="minmax")` gives TFLite's ranges).
        data: Calibration data (anything `tfq8.representative_dataset` takes).
        num_samples: Use at most this many samples.
        input_type: `inference_input_type`: `"int8"` (default), `"uint8"` or `"float32"`.
        output_type: `inference_output_type`, likewise.

    Returns:
        The converter's `.tflite` flatbuffer.

    Example:
        >>> theirs = converter_int8(model, x_train[:500])
    """
    import tensorflow as tf  # noqa: PLC0415

    io_in, io_out = io_type("input_type", input_type), io_type("output_type", output_type)
    handle = load_model(model)
    rep = representative_dataset(data, specs=handle.specs, num_samples=num_samples)
    handle.check_inputs(rep.inputs)
    converter = handle.converter()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = rep
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.as_dtype(io_in)
    converter.inference_output_type = tf.as_dtype(io_out)
    with _tflite.CONVERT_LOCK, quiet_stdout(), quiet_native_stderr(), _tflite.loop_safe(converter):
        return bytes(converter.convert())


def _check_kept_samples(calib: Calibration) -> None:
    if calib.samples is None or len(calib.samples[0]) == 0:
        raise ValueError(
            "bias_correction=True runs the int8 and float models on the calibration samples "
            "the Calibration kept, and this one kept none (it was made with keep_samples=0). "
            "Calibrate again: tfq8.calibrate(model, data) keeps up to 256 samples by default "
            "(on the command line: --data instead of --calibration). Received: a Calibration "
            f"of {calib.num_samples} samples with 0 kept")


def _correct_biases(calib: Calibration, blob: bytes) -> bytes:
    # Frames auto judges corrupted (from the float model's early peaks) would shift the
    # means and decide the score here too: on the F-MNIST CNN with 1% corrupted frames,
    # correcting on them lost 1.7 dB of test-set SQNR.
    exclude = _auto.corrupted_frames(_auto.early_columns(calib))
    blob, report = correct_biases(blob, calib.model, calib.samples, exclude=exclude)
    calib.last_bias_correction = report
    _log.info("%s", report.summary())
    return blob


def quantize_with_ranges(calib: Calibration, chosen: Mapping[int, tuple[float, float]], *,
                         fixed: Collection[int] = (), **quant: Any) -> bytes:
    """Writes `chosen` into the calibrated model and quantizes it, with one range for
    the tensors that must share an int8 grid where the quantizer needs it
    (`tfq8.shared_grid`; the ranges of `fixed` tensors are kept)."""
    return Quantizer(calib.model, fixed=fixed, **quant)(chosen)[0]


# What to do about the ops users meet most, beyond allow_float.
_FLOAT_OP_HINTS = {
    "CAST": "A CAST usually converts a model input that is not float32 to float32: uint8 "
            "images before a Rescaling layer, or a float64 or float16 input that Keras casts "
            "at its first layer. Give the model a float32 input (keras.Input(..., "
            "dtype='float32')); the int8 model takes int8 whatever it is, and "
            "input_type='uint8' feeds it uint8.",
    "ARG_MAX": "TFLite's quantizer leaves an ARG_MAX float when the tensor it reads is also a "
               "model output (TFLite's own converter does the same): return either the scores "
               "(and take their argmax outside the model) or only their argmax, which is int8.",
    "WHILE": "TFLite's quantizer leaves the variables of a loop (tf.while_loop, a recurrent "
             "layer that is not unrolled) float, the converter's own model too. tfq8 carries "
             "them in int8 where the loop's body reads and writes them only through its "
             "quantized ops, as in Keras' LSTM, GRU and SimpleRNN, and the loop's condition "
             "reads only its counters; this loop has a variable that does not fit: unroll "
             "it, such as keras.layers.LSTM(..., unroll=True), to make it integer.",
    "READ_VARIABLE": "A variable the model reads and writes at run time, such as the state a "
                     "recurrent layer built with stateful=True keeps between runs, stays float "
                     "(TFLite's quantizer leaves it so): build the layer with stateful=False, and "
                     "pass the state as a model input and output where it must last.",
    "ELU": "TFLite's quantizer leaves ELU float (the converter's int8 model too), and tfq8 "
           "runs it in int8 only between int8 tensors, not on a float32 model input or output: "
           "an activation it quantizes, such as 'relu', 'gelu', 'swish' or 'selu', keeps the "
           "model integer.",
}


def check_integer(blob: bytes, *, allow_float: bool, info: Any = None) -> None:
    """Raises `UnsupportedOpError` naming the float ops and the float model inputs and
    outputs no op converts (`ModelInfo.float_io`), unless allowed.

    `info` is `inspect(blob)` where the caller has it already.
    """
    info = info if info is not None else inspect(blob)
    if info.full_integer:
        return
    problems = []
    culprits = info.culprits
    if culprits:
        first = culprits[0]
        names = sorted({op.name for op in culprits})
        where = first.outputs[0].name if first.outputs else ""
        problems.append(
            f"Op(s) {', '.join(names)} could not be quantized to integers and would stay "
            f"float (first: {first.where()}, output {where!r}).")
        problems.extend(_FLOAT_OP_HINTS[n] for n in names if n in _FLOAT_OP_HINTS)
    if info.float_io:
        problems.append(
            f"Model input(s)/output(s) {', '.join(repr(t.name) for t in info.float_io)} stay "
            f"{'/'.join(sorted({t.dtype.lower() for t in info.float_io}))}: no op reads or "
            "writes them, so TFLite's quantizer leaves them as they are (an input the model "
            "does not use, or one passed through unchanged as an output). Remove such inputs "
            "and outputs from the model, or pass input_type='float32' and "
            "output_type='float32' for float I/O.")
    msg = " ".join(problems)
    if not allow_float:
        raise UnsupportedOpError(msg, remedy="Pass allow_float=True to keep them in float.")
    _log.warning("%s Kept in float (allow_float=True).", msg)


def io_type(arg: str, value: Any) -> np.dtype:
    """The numpy dtype for an `input_type`/`output_type` option, or a ValueError naming `arg`
    (`tfq8.errors.ArgumentTypeError` for a value that is neither a name nor a dtype)."""
    key = value.lower() if isinstance(value, str) else None
    if key is None and value is not None and not isinstance(value, bool):
        try:  # numpy dtypes and scalar types, and tf.dtypes (as_numpy_dtype)
            key = np.dtype(getattr(value, "as_numpy_dtype", value)).name
        except TypeError:
            pass
    if key not in _IO_NAMES:
        raise (ValueError if key is not None else ArgumentTypeError)(
            f"{arg} must be one of {', '.join(_IO_NAMES)}. Received: {arg}={value!r}")
    return np.dtype(_IO_NAMES[key])


def _unused_data(model: Any, data: Any, num_samples: int | None) -> None:
    """A QAT model that needs no statistics: `data` is still checked, then left unused."""
    if data is None:
        _no_data_for(num_samples)
        return
    rep = representative_dataset(data, specs=load_model(model).specs, num_samples=num_samples)
    _log.info("Quantization-aware training learned every range of this model; the %d samples "
              "of data were checked but are not needed.", len(rep))


def _no_data_for(num_samples: int | None) -> None:
    if num_samples is not None:
        raise ValueError("num_samples chooses samples of data, and no data was passed. "
                         f"Received: num_samples={num_samples!r}, data=None")


def _resolve_calibration(model: Any, data: Any, calibration: Calibration | None,
                         num_samples: int | None) -> Calibration:
    if calibration is not None:
        if not isinstance(calibration, Calibration):
            raise TypeError(
                f"calibration must be a tfq8.Calibration. Received: {type(calibration).__name__}")
        if data is not None:
            raise ValueError("Pass either data or calibration, not both: calibration holds "
                             "statistics already taken on its data. Received: data of type "
                             f"{type(data).__name__} and calibration={calibration!r}")
        if num_samples is not None:
            raise ValueError(
                "num_samples chooses samples of data; calibration was already taken on "
                f"{calibration.num_samples}. Received: num_samples={num_samples!r} with calibration")
        if model is not None and calibration.fingerprint not in (None, load_model(model).fingerprint()):
            raise ValueError(
                "calibration holds statistics of another model, or of this model before its "
                "weights changed (their weight fingerprints differ), so tfq8 will not use them. "
                "Recalibrate: calibration=tfq8.calibrate(model, data).")
        return calibration
    if model is None:
        raise ValueError("convert() needs a model (or a calibration). Received: model=None")
    if data is not None:
        return calibrate(model, data, num_samples=num_samples)
    _no_data_for(num_samples)
    attached = getattr(model, CALIBRATION_ATTR, None) if not isinstance(model, (str, os.PathLike)) else None
    if attached is None:
        raise ValueError(
            "No calibration data: pass data=... (samples like the model's inputs), "
            "calibration=tfq8.calibrate(...), or train with tfq8.CalibrationCallback. "
            "Received: data=None, calibration=None, and a model without statistics attached"
        )
    current = load_model(model).fingerprint()
    if attached.fingerprint != current:
        raise ValueError(
            "The statistics attached by tfq8.CalibrationCallback are stale: the model's "
            "weights changed after they were taken (trained further, or weights loaded), so "
            "tfq8 will not use them. Pass data=... (or calibration=tfq8.calibrate(model, data)) "
            "to recalibrate, or fit again with the callback. (EarlyStopping with "
            "restore_best_weights=True listed after the callback restores weights after its "
            "last calibration.)"
        )
    return attached


def _check_has_ops(calibrated: bytes) -> None:
    """Refuses a model whose TFLite graph computes nothing (its outputs are its inputs)."""
    graph = _tflite.schema.Model.GetRootAs(calibrated, 0).Subgraphs(0)
    if graph.OperatorsLength() == 0:
        raise ValueError(
            "model computes nothing: its TFLite graph has no ops, because every output is an "
            "input unchanged (layers such as Activation('linear'), Dropout or Identity convert "
            "to nothing), so there is nothing to quantize. Expected a model with at least one "
            f"op. Received: a model with {graph.InputsLength()} input(s) and "
            f"{graph.OutputsLength()} output(s) and 0 ops")


def _check_input_count(calibrated: bytes, handle: ModelHandle) -> None:
    """Refuses a calibrated model with another number of inputs than the specs the
    samples were read for."""
    got = [s.name for s in specs_from_tflite(calibrated)]
    want = [s.name for s in handle.specs]
    if len(got) != len(want):
        raise RuntimeError(f"TFLite model has inputs {got}; expected {want}.")

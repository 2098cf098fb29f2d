"""`CalibrationCallback`: activation statistics and int8 quality during `model.fit`.

Add one callback to `model.fit`; when training ends the model carries
statistics of its final weights, so `tfq8.convert(model)` needs no data. With
`validation_data` every calibration also converts to int8, runs the int8 model
in LiteRT and writes `val_int8_accuracy`, `val_int8_agreement` (float vs int8
top-1 agreement) and the int8 versions of the compiled loss and metrics into
the epoch logs, so they show in the progress bar, `History`, `CSVLogger` and
`TensorBoard` like any metric. With `filepath` it exports the int8 `.tflite`
(atomically), optionally only on improvement of `monitor`, the way
`keras.callbacks.ModelCheckpoint` does. Per calibration it records, for every
activation tensor of the TFLite graph, its range and an outlier ratio, and
warns once per tensor that becomes hostile to int8 (`tfq8.diagnostics`). The
int8 evaluation itself is `tfq8.int8_metrics`.

Place the callback *before* `CSVLogger` and `TensorBoard` in the `callbacks`
list so that they see the int8 keys (Keras runs callbacks in list order).
`CSVLogger` fixes its columns at the first epoch, so it records int8 keys only
with `every_n_epochs=1`. Keras 3's `EarlyStopping`, `ModelCheckpoint` and
`ReduceLROnPlateau` monitor a `val_int8_*` key only with `mode="max"` or `"min"`.

Example:
    >>> cb = tfq8.CalibrationCallback(x_train[:256], validation_data=(x_val, y_val),
    ...                               every_n_epochs=1,
    ...                               filepath="ckpt/model-{epoch:02d}-int8.tflite",
    ...                               save_best_only=True)
    >>> history = model.fit(x_train, y_train, epochs=10, callbacks=[cb])
    >>> history.history["val_int8_accuracy"][-1]
    0.97...
    >>> tflite_model = tfq8.convert(model)        # no data: uses cb.calibration
    >>> cb.calibration.save("stats.npz")

For a `tf_keras` (Keras 2) model use `tfq8.CalibrationCallback.for_model(model, ...)`
or `tfq8.callbacks.TFKerasCalibrationCallback(...)`: `tf_keras.Model.fit` needs
a `tf_keras.callbacks.Callback`.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
import re
import string
import time
from typing import Any, Mapping

import keras
import numpy as np

from tfq8 import _args
from tfq8._quiet import filtering
from tfq8.calibration import Calibration, atomic_write, check_output_path
from tfq8.pipeline import (CALIBRATION_ATTR, FEW_SAMPLES, calibrate, check_convert_options,
                           convert)
from tfq8.data import RepresentativeDataset, check_kind, representative_dataset
from tfq8.errors import ArgumentTypeError, NonFiniteWeightsError, UnsupportedOpError
from tfq8.int8_metrics import (INT8_KEYS, ValidationSet, check_steps, evaluate_int8,
                               keras_order_to_dict, readable)
from tfq8.ranges import available_methods
from tfq8.diagnostics import SUGGESTION, TensorDiagnostics, diagnose
from tfq8.models import is_tf_keras_model, load_model, weights_fingerprint
from tfq8.stats.histogram import DEFAULT_MAX_BINS, MAX_BINS, MIN_BINS

_log = logging.getLogger("tfq8.callbacks")

__all__ = ["CalibrationCallback", "TensorDiagnostics", "TFKerasCalibrationCallback"]

# Calibration samples of the trial conversion in on_train_begin (at least one batch;
# as many as calibrate() takes without warning of too few).
_TRIAL_SAMPLES = FEW_SAMPLES


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _silent_unless_verbose(hook: Any) -> Any:
    """Runs a callback hook with tfq8's INFO log lines (calibrating, auto's scores)
    dropped when the callback's `verbose` is 0; warnings still show."""
    @functools.wraps(hook)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.verbose:
            return hook(self, *args, **kwargs)
        with filtering(_WarningsOnly()):
            return hook(self, *args, **kwargs)

    return wrapper


_INT8_MONITOR = re.compile(r"^val_int8_[A-Za-z0-9_.\-]+$")
_CONVERT_OPTIONS = ("method_options", "ranges", "per_channel", "input_type", "output_type",
                    "allow_float", "bias_correction")


def _check_filepath(filepath: Any, validation_data: Any) -> str:
    """`filepath` as a str, checked: a `.tflite` path whose named fields format with
    an int epoch and float logs (`val_int8_*` only with validation data), in a place
    that can be written.

    Raises:
        TypeError: If `filepath` is not a string or path.
        ValueError: Naming filepath, what was expected and what was received.
    """
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(
            "filepath must be a string or path ending in '.tflite'. "
            f"Received: filepath={filepath!r}")
    filepath = os.fspath(filepath)
    if not filepath.endswith(".tflite"):
        raise ValueError(
            "filepath must end in '.tflite' (the callback exports int8 TFLite "
            f"models). Received: filepath={filepath!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(filepath) if f is not None]
    except ValueError as e:
        raise ValueError(
            f"filepath is not a valid format string ({e}). Received: filepath={filepath!r}"
        ) from None
    if any(f == "" or f.isdigit() for f in fields):
        raise ValueError(
            "filepath may only use named fields such as {epoch:02d} or "
            f"{{val_int8_accuracy:.3f}}. Received: filepath={filepath!r}")
    names = {_field_name(f) for f in fields}
    if validation_data is None and any(n.startswith("val_int8_") for n in names):
        raise ValueError(
            "filepath names int8 metrics, which are computed on validation_data: pass "
            "validation_data=(x_val, y_val) or use only {epoch} and model.fit's own logs. "
            f"Received: filepath={filepath!r}, validation_data=None")
    values = dict.fromkeys(names, 0.0)  # Keras logs are floats
    values["epoch"] = 1
    try:
        filepath.format(**values)
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(
            "filepath must format with epoch (an int) and the logs (floats), such as "
            "'model-{epoch:02d}-{val_int8_accuracy:.3f}.tflite'. "
            f"Received: filepath={filepath!r} ({e})") from None
    check_output_path(filepath.format(**values), arg="filepath")  # a writable place
    return filepath


def _field_names(filepath: str) -> set[str]:
    """The names a (checked) filepath format string formats, such as 'val_int8_accuracy'."""
    return {_field_name(f) for _, f, _, _ in string.Formatter().parse(filepath) if f is not None}


def _field_name(field: str) -> str:
    """A format field's name: 'logs' of 'logs[0]', 'x' of 'x.real'."""
    return re.split(r"[.\[]", field, maxsplit=1)[0]


class _CalibrationCallbackBase:
    """Framework-independent logic shared by the Keras 3 and tf_keras callbacks."""

    def __init__(
        self,
        calibration_data: Any,
        validation_data: Any = None,
        *,
        validation_steps: int | None = None,
        every_n_epochs: int | None = None,
        filepath: str | os.PathLike | None = None,
        monitor: str = "val_int8_accuracy",
        mode: str = "auto",
        save_best_only: bool = False,
        initial_value_threshold: float | None = None,
        verbose: int = 1,
        method: str = "auto",
        num_samples: int | None = None,
        convert_options: Mapping[str, Any] | None = None,
        outlier_ratio: float = 8.0,
        outlier_percentile: float = 99.9,
        range_growth: float = 4.0,
        batch_size: int | None = None,
        max_bins: int = DEFAULT_MAX_BINS,
    ):
        if calibration_data is None:
            raise ValueError(
                "calibration_data must be samples like the model's inputs (arrays, (x, y), a "
                "dict, a tf.data.Dataset, ...). Received: calibration_data=None")
        check_kind(calibration_data, "calibration_data")
        _args.integer("every_n_epochs", every_n_epochs, optional=True,
                      hint=", or None to calibrate only when training ends")
        if filepath is not None:
            filepath = _check_filepath(filepath, validation_data)
        save_best_only = _args.boolean("save_best_only", save_best_only)
        if not isinstance(monitor, str) or not monitor:
            raise (ValueError if isinstance(monitor, str) else ArgumentTypeError)(
                f"monitor must be a metric name. Received: monitor={monitor!r}")
        if "int8" in monitor:
            if not _INT8_MONITOR.match(monitor):
                raise ValueError(
                    "monitor names an unknown int8 metric: the callback writes "
                    f"{', '.join(INT8_KEYS)} (and val_int8_<output>_... for multi-output models, "
                    f"val_int8_<metric> for compiled metrics). Received: monitor={monitor!r}")
            if validation_data is None and save_best_only:
                raise ValueError(
                    f"save_best_only compares monitor={monitor!r}, which is computed on "
                    "validation_data: pass validation_data=(x_val, y_val) or monitor a metric of "
                    f"model.fit's own logs, such as 'loss' or 'val_loss'. Received: monitor={monitor!r}, validation_data=None")
        if mode not in ("auto", "min", "max"):
            raise (ValueError if isinstance(mode, str) else ArgumentTypeError)(
                f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        if save_best_only and filepath is None:
            raise ValueError(
                "save_best_only=True needs a filepath to export to. Received: filepath=None")
        if initial_value_threshold is not None:
            if isinstance(initial_value_threshold, bool) or not isinstance(
                    initial_value_threshold, numbers.Real):
                raise ArgumentTypeError(
                    f"initial_value_threshold must be a number (the {monitor!r} value an export "
                    "must beat), or None. Received: initial_value_threshold="
                    f"{initial_value_threshold!r}")
            if math.isnan(initial_value_threshold):
                raise ValueError("initial_value_threshold must be a number, not NaN. "
                                 "Received: initial_value_threshold=nan")
            if not save_best_only:
                raise ValueError(
                    "initial_value_threshold is the value save_best_only's first export must "
                    "beat: pass save_best_only=True too. Received: initial_value_threshold="
                    f"{initial_value_threshold!r}, save_best_only=False")
        wrong_type = isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer))
        if wrong_type or not 0 <= verbose <= 2:
            raise (ArgumentTypeError if wrong_type else ValueError)(
                f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
        if method != "auto" and method not in available_methods():
            raise (ValueError if isinstance(method, str) else ArgumentTypeError)(
                f"method must be one of auto, {', '.join(available_methods())}. "
                f"Received: method={method!r}")
        _args.integer("num_samples", num_samples, optional=True)
        if convert_options is not None and not isinstance(convert_options, Mapping):
            raise TypeError("convert_options must be a dict of tfq8.convert options, such as "
                            "{'allow_float': True}. Received: convert_options of type "
                            f"{type(convert_options).__name__}")
        convert_options = dict(convert_options or {})
        unknown = sorted(set(convert_options) - set(_CONVERT_OPTIONS))
        if unknown:
            raise ValueError(
                f"convert_options may contain {', '.join(_CONVERT_OPTIONS)} (method is its own "
                f"argument). Received: convert_options keys {unknown}")
        try:  # tfq8.convert's own checks (values too), now rather than after training
            check_convert_options(method=method, **convert_options)
        except ValueError as e:  # an ArgumentTypeError stays one
            raise (ArgumentTypeError if isinstance(e, TypeError) else ValueError)(
                f"convert_options: {e}") from None
        for name, value, low in (("outlier_ratio", outlier_ratio, 1.0),
                                 ("range_growth", range_growth, 1.0)):
            wrong_type = isinstance(value, bool) or not isinstance(value, numbers.Real)
            if wrong_type or not value > low:
                raise (ArgumentTypeError if wrong_type else ValueError)(
                    f"{name} must be a number > {low:g}. Received: {name}={value!r}")
        wrong_type = isinstance(outlier_percentile, bool) or not isinstance(
            outlier_percentile, numbers.Real)
        if wrong_type or not 50.0 < outlier_percentile < 100.0:
            raise (ArgumentTypeError if wrong_type else ValueError)(
                "outlier_percentile must be in (50, 100). "
                f"Received: outlier_percentile={outlier_percentile!r}")
        _args.integer("batch_size", batch_size, optional=True)
        _args.integer("max_bins", max_bins, minimum=MIN_BINS, maximum=MAX_BINS)
        _args.integer("validation_steps", validation_steps, optional=True)
        if validation_steps is not None and validation_data is None:
            raise ValueError(
                "validation_steps counts the batches read from validation_data. "
                f"Received: validation_steps={validation_steps!r}, validation_data=None")
        check_steps(validation_data, validation_steps)
        if validation_data is not None and not readable(validation_data):
            if isinstance(validation_data, (str, bytes, os.PathLike)):
                received = (f", not a file name: load the file first. "
                            f"Received: validation_data={validation_data!r}")
            else:
                received = f". Received: validation_data of type {type(validation_data).__name__}"
            raise TypeError(
                "validation_data must be (x, y), (x, y, sample_weight), inputs x alone, or a "
                "tf.data.Dataset / iterable of (x, y) batches" + received)
        super().__init__()
        self.calibration_data = calibration_data
        self.validation_data = validation_data
        self.validation_steps = None if validation_steps is None else int(validation_steps)
        self.every_n_epochs = None if every_n_epochs is None else int(every_n_epochs)
        self.filepath = filepath
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.initial_value_threshold = (None if initial_value_threshold is None
                                        else float(initial_value_threshold))
        self.verbose = int(verbose)
        self.method = method
        self.num_samples = num_samples
        self.convert_options = convert_options
        self.outlier_ratio = float(outlier_ratio)
        self.outlier_percentile = float(outlier_percentile)
        self.range_growth = float(range_growth)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.max_bins = max_bins
        if mode == "auto":
            mode = "max" if any(k in monitor for k in ("acc", "agreement", "auc", "precision",
                                                         "recall", "f1")) else "min"
        self.mode = mode
        self._better = np.greater if mode == "max" else np.less
        self._rep: RepresentativeDataset | None = None
        self._val: ValidationSet | None = None
        self._specs: list | None = None
        self._data_model: Any = None  # the model _rep, _val and _specs were read for
        self._trialled = False  # the trial conversion ran for _data_model
        self._check_deferred = False  # the model was not built when training began
        self.best = self._initial_best()
        self._reset()

    # ------------------------------------------------------------- state
    def _initial_best(self) -> float:
        """`best` before any export: `initial_value_threshold`, or the worst value."""
        if self.initial_value_threshold is not None:
            return self.initial_value_threshold
        return -math.inf if self.mode == "max" else math.inf

    def _reset(self) -> None:
        self.calibration: Calibration | None = None
        self.diagnostics: dict[str, list[TensorDiagnostics]] = {}
        self.hostile: dict[str, str] = {}
        self.int8_history: list[dict[str, float]] = []
        self.saved: list[str] = []
        self.timings: list[float] = []
        self.phase_timings: list[dict[str, float]] = []
        self._last_epoch: int | None = None
        self._last_logs: dict[str, Any] = {}
        # Weights fingerprint at each epoch's end (first epoch of one), that epoch's logs,
        # the epochs calibrated and the file exported per epoch: on_train_end tells the
        # last epoch's weights from restored ones, and which epoch these are.
        self._last_digest: str | None = None
        self._epoch_of_digest: dict[str, int] = {}
        self._epoch_logs: dict[int, dict[str, Any]] = {}
        self._calibrated_epochs: set[int] = set()
        self._exported: dict[int, str] = {}
        self._warned_monitor = False
        self._warned_skipped: set[str] = set()
        self._warned_diverged = False

    def __repr__(self) -> str:
        when = "when training ends" if self.every_n_epochs is None else f"every {self.every_n_epochs} epoch(s)"
        parts = [f"calibrates {when}", f"method={self.method!r}",
                 f"{len(self.int8_history)} int8 evaluation(s)" if self.validation_data is not None
                 else "no validation_data"]
        if self.filepath:
            parts.append(f"filepath={self.filepath!r}, {len(self.saved)} saved")
        return f"{type(self).__name__}({', '.join(parts)})"

    @classmethod
    def for_model(cls, model: Any, *args: Any, **kwargs: Any) -> "_CalibrationCallbackBase":
        """A callback of the right kind for `model`: Keras 3 or tf_keras.

        Args:
            model: The model `fit` will be called on.
            *args: Passed to the callback's constructor.
            **kwargs: Passed to the callback's constructor.

        Example:
            >>> cb = tfq8.CalibrationCallback.for_model(tf_keras_model, x_train[:200])
            >>> tf_keras_model.fit(x_train, y_train, callbacks=[cb])

        Raises:
            TypeError: If `model` is not a Keras 3 or tf_keras model (the data
                passed first, say).
        """
        from tfq8.models import is_keras_model  # noqa: PLC0415

        if not is_keras_model(model):
            raise TypeError("for_model takes the Keras 3 or tf_keras model fit will be called on, "
                            "then the callback's arguments. Received: model of type "
                            f"{type(model).__name__}")
        if is_tf_keras_model(model):
            return _tf_keras_class()(*args, **kwargs)
        return CalibrationCallback(*args, **kwargs)

    # ------------------------------------------------------------- hooks
    @_silent_unless_verbose
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Resets the per-run state, so one instance serves several `fit` calls.

        Keras calls it as `fit` starts; call it yourself only in a training
        loop of your own (with `set_model` and `set_params` first).

        `best` carries over to another `fit` of the same model (training
        resumed: `save_best_only` keeps the better file, as Keras'
        `ModelCheckpoint` does); another model starts afresh, from
        `initial_value_threshold` if given (training resumed in a new process).

        Also reads and checks the calibration and validation data against the
        model now, so bad data fails before training rather than after it
        (a model that is not built yet, such as a `Sequential` without an
        `Input`, is checked at the end of the first epoch instead). When the
        callback will convert (`validation_data` or `filepath`), the first
        `fit` of a model also converts on a few calibration samples with its
        `convert_options` (and `minmax` ranges: which ops stay float does not
        depend on the ranges), so a model with an op that cannot be quantized
        raises `UnsupportedOpError` now rather than after the last epoch.
        Writes no file.

        Example:
            >>> cb = tfq8.CalibrationCallback(x_train[:256])
            >>> model.fit(x_train, y_train, epochs=3, callbacks=[cb])  # Keras calls the hooks
        """
        self._need_model("on_train_begin")
        self._reset()
        if self._data_model is not self.model:  # adapted data is kept for the same model only
            self._rep, self._val, self._specs, self._data_model = None, None, None, self.model
            self._trialled = False
            self.best = self._initial_best()
        self._check_deferred = not getattr(self.model, "built", True)
        if not self._check_deferred:
            self._check_model()

    @_silent_unless_verbose
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Calibrates (and evaluates, exports) every `every_n_epochs` and at the last epoch.

        When it calibrates: attaches the statistics to the model (for
        `tfq8.convert(model)`), adds the `val_int8_*` metrics to `logs` (so to
        History) with `validation_data`, writes the int8 model to `filepath`
        (atomically; with `save_best_only`, only when `monitor` improved), and
        logs at INFO when `verbose` (warnings, such as a tensor hostile to int8, always).
        Weights holding NaN, or trainable ones Inf (training diverged, as
        `TerminateOnNaN` stops on), are not calibrated, evaluated or exported: a warning says
        so, once per `fit`, and training goes on as Keras decides.

        Example:
            >>> cb = tfq8.CalibrationCallback(x_train[:256], validation_data=(x_val, y_val),
            ...                               every_n_epochs=1, filepath="m-{epoch:02d}.tflite")
            >>> history = model.fit(x_train, y_train, epochs=3, callbacks=[cb])
            >>> history.history["val_int8_accuracy"], cb.saved
        """
        self._need_model("on_epoch_end")
        self._last_epoch = epoch
        epochs = (self.params or {}).get("epochs")
        due = (self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0) or (
            epochs is not None and epoch + 1 >= int(epochs))
        if logs is None:
            logs = {}
        if self._check_deferred:  # built by its first batch; a due epoch converts anyway
            self._check_deferred = False
            if not due:
                self._check_model()
        digest = weights_fingerprint(self.model)  # hashes every weight
        self._last_digest = digest
        self._epoch_of_digest.setdefault(digest, epoch)
        if due:
            self._run(epoch, logs)
        self._last_logs = dict(logs)
        self._epoch_logs[epoch] = self._last_logs

    @_silent_unless_verbose
    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Makes sure the attached statistics describe the final weights.

        When training stopped early before the last epoch was calibrated, calibrates
        (evaluates, exports) for that epoch; its int8 metrics go to the model's
        History too. When the weights were restored after the last epoch
        (`EarlyStopping(restore_best_weights=True)` placed before this callback),
        calibrates them, but writes nothing under the last epoch: if they are an
        epoch's weights that was not calibrated, that epoch is evaluated and
        exported under its own name and logs (int8 metrics in `int8_history`,
        not History, whose last row is the last epoch's); if it was, the log
        names its file.

        Example:
            >>> stop = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
            >>> model.fit(x_train, y_train, epochs=50, validation_split=0.1,
            ...           callbacks=[stop, cb])   # cb's on_train_end sees the restored weights
            >>> blob = tfq8.convert(model)        # statistics of the weights fit left
        """
        if self._last_epoch is None:
            return
        digest = weights_fingerprint(self.model)
        if self.calibration is not None and self.calibration.fingerprint == digest:
            return
        if digest == self._last_digest:  # the last epoch's weights, not calibrated yet
            merged = dict(self._last_logs)
            merged.update(logs or {})
            self._run(self._last_epoch, merged)
            history = getattr(getattr(self.model, "history", None), "history", None)
            if isinstance(history, dict) and not any(k.startswith("val_int8_")
                                                     for k in self._last_logs):
                for key, value in merged.items():
                    if key.startswith("val_int8_"):
                        history.setdefault(key, []).append(value)
            return
        epoch = self._epoch_of_digest.get(digest)
        if epoch is not None and epoch not in self._calibrated_epochs:
            if self.verbose:
                _log.info("The weights were restored to those of epoch %d after epoch %d: "
                          "calibrating them as epoch %d.", epoch + 1, self._last_epoch + 1,
                          epoch + 1)
            self._run(epoch, dict(self._epoch_logs[epoch]))
            return
        if self._calibrate(self._last_epoch) is None:
            return
        if epoch is None:
            _log.warning(
                "CalibrationCallback: the weights changed after epoch %d and are no epoch's "
                "(another callback set them?): calibrated them for tfq8.convert(model), "
                "without int8 evaluation or export.", self._last_epoch + 1)
        elif self.verbose:
            path = self._exported.get(epoch)
            _log.info("The weights were restored to those of epoch %d after epoch %d: "
                      "calibrated them for tfq8.convert(model); their int8 model %s.",
                      epoch + 1, self._last_epoch + 1,
                      f"is {path}" if path else "was not exported at that epoch")

    def _need_model(self, hook: str) -> None:
        """Refuses a hook called before Keras gave the callback its model."""
        if getattr(self, "model", None) is None:
            raise RuntimeError(
                f"CalibrationCallback.{hook} was called before the callback had a model: pass "
                "the callback to model.fit(..., callbacks=[callback]), which gives it the model "
                "(or call set_model(model) first). Received: model=None")

    # ------------------------------------------------------------- work
    def _calibrate(self, epoch: int) -> Calibration | None:
        """Calibrates the current weights and attaches the statistics (their
        `fingerprint` is the weights'). None when the weights hold NaN, or trainable
        ones Inf (`tfq8.models.nonfinite_weights`): training diverged, so there is
        nothing to calibrate (their activations are NaN); warns once per fit."""
        try:
            calib = calibrate(self.model, self._calibration_rep(), max_bins=self.max_bins)
        except NonFiniteWeightsError as e:
            self._warn_diverged(epoch, e.weights)
            return None
        self.calibration = calib
        setattr(self.model, CALIBRATION_ATTR, calib)
        return calib

    def _warn_diverged(self, epoch: int, bad: list[str]) -> None:
        """Warns, once per fit, that the weights after `epoch` hold `bad` non-finite ones."""
        if not self._warned_diverged:
            self._warned_diverged = True
            _log.warning(
                "CalibrationCallback: after epoch %d the weights hold NaN or Inf (%s): training "
                "diverged, so they are not calibrated, evaluated or exported%s.", epoch + 1,
                ", ".join(repr(name) for name in bad[:3]) + (", ..." if len(bad) > 3 else ""),
                "; tfq8.convert(model) refuses the statistics of earlier weights as stale"
                if self.calibration is not None else "")

    def _run(self, epoch: int, logs: dict[str, Any]) -> None:
        phases: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            phases[name] = now - clock
            clock = now

        calib = self._calibrate(epoch)
        if calib is None:
            return
        self._calibrated_epochs.add(epoch)
        lap("calibrate")
        self._diagnose(epoch, calib)
        lap("diagnose")
        if self.verbose:
            _log.info("Epoch %d: calibrated %d tensors on %d samples; tfq8.convert(model) will "
                      "use these statistics.", epoch + 1, len(calib.tensors), calib.num_samples)
        blob = None
        if self.validation_data is not None or self.filepath is not None:
            blob = self._convert(calib)
            self._trialled = True  # it converts: no trial needed on the next fit
            lap("convert")
        if self.validation_data is not None:
            metrics = self._evaluate(blob)
            logs.update(metrics)
            self.int8_history.append({"epoch": epoch + 1, **metrics})
            lap("evaluate")
            if self.verbose:
                _log.info("Epoch %d: int8 %s", epoch + 1,
                          ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if self.filepath is not None:
            self._export(epoch, logs, blob)
            lap("export")
        self.phase_timings.append(phases)
        self.timings.append(sum(phases.values()))
        if self.verbose > 1:
            _log.info("Epoch %d: tfq8 callback took %.2fs (%s).", epoch + 1, self.timings[-1],
                      ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))

    def _convert(self, calib: Calibration, *, trial: bool = False) -> bytes:
        """`tfq8.convert` with the callback's method and options (for a `trial`, `minmax`
        without bias correction: which ops stay float depends on neither); its advice
        names `convert_options`."""
        method, options = self.method, dict(self.convert_options)
        if trial:
            method = "minmax"
            options.pop("method_options", None)
            options.pop("bias_correction", None)
        try:
            # With the model: a QAT model whose every range QAT learned converts as
            # tfq8.convert(model) does, with TFLite's QAT conversion (tfq8.qat).
            return convert(self.model, calibration=calib, method=method, **options)
        except UnsupportedOpError as e:
            if not e.remedy:
                raise
            raise e.with_remedy(
                'Pass convert_options={"allow_float": True} to the CalibrationCallback to keep '
                'them in float.') from None

    def _check_model(self) -> None:
        """Reads and checks the data against the model; trial-converts once per model."""
        rep = self._calibration_rep()
        if self.validation_data is not None and self._validation_set().y is None:
            self._refuse_keys_needing_labels()
        if not self._trialled and (self.validation_data is not None or self.filepath is not None):
            self._trial_convert(rep)
            self._trialled = True

    def _refuse_keys_needing_labels(self) -> None:
        """Validation data without labels gets only int8 agreements: a filepath field or
        a save_best_only monitor naming another int8 metric would be missing from every
        epoch's logs (a failed or skipped export only after training)."""
        named = [("filepath", self.filepath, n) for n in _field_names(self.filepath or "")]
        if self.save_best_only:
            named.append(("monitor", self.monitor, self.monitor))
        for arg, value, name in named:
            if name.startswith("val_int8_") and not name.endswith("agreement"):
                raise ValueError(
                    f"{arg} names {name!r}, which needs labels: validation_data has none (the "
                    "inputs alone), so the callback logs only the int8 agreement "
                    "(val_int8_agreement). Pass validation_data=(x_val, y_val) or name "
                    f"val_int8_agreement. Received: {arg}={value!r}")

    def _trial_convert(self, rep: RepresentativeDataset) -> None:
        """Converts on a few calibration samples: a model the int8 path cannot take fails now."""
        start = time.perf_counter()
        few = rep.take(max(rep.batch, min(len(rep), _TRIAL_SAMPLES)))
        self._convert(calibrate(self.model, few, max_bins=self.max_bins), trial=True)
        if self.verbose:
            _log.info("Trial conversion on %d samples (the model converts to int8) took %.2fs.",
                      len(few), time.perf_counter() - start)

    def _model_specs(self) -> list:
        """The model's input specs in TFLite's order (for several inputs this costs a conversion)."""
        if self._specs is None:
            self._specs = load_model(self.model).specs
        return self._specs

    def _calibration_rep(self) -> RepresentativeDataset:
        if self._rep is None:
            specs = self._model_specs()
            try:
                self._rep = representative_dataset(
                    keras_order_to_dict(self.model, self.calibration_data, specs),
                    specs=specs, num_samples=self.num_samples)
            except (ValueError, TypeError) as e:  # the adapter calls it data
                message = str(e)
                message = ("calibration_data" + message[4:] if message.startswith("data ")
                           else f"calibration_data: {message}")
                raise type(e)(message) from None
        return self._rep

    def _export(self, epoch: int, logs: Mapping[str, Any], blob: bytes) -> None:
        try:
            path = self.filepath.format(**{**logs, "epoch": epoch + 1})
        except KeyError as e:
            raise ValueError(
                f"filepath names {e} which is not in the epoch logs. Available keys: "
                f"{sorted(logs)}. Received: filepath={self.filepath!r}") from None
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(
                f"filepath could not be formatted with epoch={epoch + 1} and the epoch logs "
                f"({e}). Received: filepath={self.filepath!r}") from None
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                if not self._warned_monitor:
                    self._warned_monitor = True
                    _log.warning(
                        "CalibrationCallback: monitor %r is not in the logs, so save_best_only "
                        "cannot compare; skipping the export. Available keys: %s",
                        self.monitor, ", ".join(sorted(logs)) or "(none)")
                return
            current = float(current)
            if not self._better(current, self.best):
                if self.verbose:
                    _log.info("Epoch %d: %s did not improve from %.5f; int8 model not saved.",
                              epoch + 1, self.monitor, self.best)
                return
            if self.verbose:
                _log.info("Epoch %d: %s improved from %.5f to %.5f; saving int8 model to %s",
                          epoch + 1, self.monitor, self.best, current, path)
            self.best = current
        elif self.verbose:
            _log.info("Epoch %d: saving int8 model to %s", epoch + 1, path)
        atomic_write(path, blob, arg="filepath")
        self.saved.append(path)
        self._exported[epoch] = path

    # ------------------------------------------------------- diagnostics
    def _diagnose(self, epoch: int, calib: Calibration) -> None:
        hostile = diagnose(calib, self.model, epoch=epoch + 1, history=self.diagnostics,
                           outlier_ratio=self.outlier_ratio,
                           outlier_percentile=self.outlier_percentile,
                           range_growth=self.range_growth)
        for name, why in hostile.items():
            if name not in self.hostile:  # once per tensor and fit
                self.hostile[name] = why
                record = self.diagnostics[name][-1]
                where = f"layer {record.layer!r}, " if record.layer else ""
                _log.warning(
                    "tfq8: activation %r (%s%s) is hostile to int8 after epoch %d: %s. %s",
                    name, where, record.producer, epoch + 1, why, SUGGESTION)

    # -------------------------------------------------------- evaluation
    def _evaluate(self, blob: bytes) -> dict[str, float]:
        skipped: dict[str, str] = {}
        metrics = evaluate_int8(blob, self.model, self._validation_set(),
                                batch_size=self.batch_size, skipped=skipped)
        for name, why in skipped.items():
            if name not in self._warned_skipped:  # once per fit
                self._warned_skipped.add(name)
                _log.warning("CalibrationCallback: the compiled %s gets no int8 value, as it "
                             "could not be computed on the int8 outputs (%s).", name, why)
        return metrics

    def _validation_set(self) -> ValidationSet:
        if self._val is None:  # read once per model, reused by every evaluation
            self._val = ValidationSet.build(self.validation_data, self.model, self._model_specs(),
                                            steps=self.validation_steps)
        return self._val


# ---------------------------------------------------------------- classes
class CalibrationCallback(_CalibrationCallbackBase, keras.callbacks.Callback):
    """Calibrates during `model.fit` so that `tfq8.convert(model)` needs no data.

    At the end of training, and every `every_n_epochs` epochs when set, the
    callback runs `tfq8.calibrate` on the model's current weights. The result
    is `cb.calibration` and is attached to the model: `tfq8.convert(model)`
    then uses it, and refuses it if the weights change afterwards. With
    `validation_data` each calibration also converts to int8 and evaluates it
    in LiteRT, adding `val_int8_accuracy`, `val_int8_agreement` (float vs int8
    top-1 agreement), `val_int8_loss` and int8 versions of the compiled metrics
    to the epoch logs. With `filepath` it exports the int8 model.

    For `tf_keras` models use `CalibrationCallback.for_model(model, ...)`.

    Args:
        calibration_data: Calibration samples of any kind
            `tfq8.representative_dataset` accepts (labels are ignored).
        validation_data: Optional `(x, y)`, `(x, y, sample_weight)`, inputs `x`
            alone (agreement only), or a `tf.data.Dataset` / iterable of such
            batches; enables the per-epoch int8 metrics. As in `model.fit`, a
            list is read as a tuple, and `sample_weight` weighs the loss and
            `weighted_metrics` (accuracy only if it is among them). Read once
            per model, when training starts, and reused by every evaluation.
        validation_steps: Read at most this many batches of a `validation_data`
            stream (generator, iterator, `tf.data.Dataset`, `PyDataset`), as
            `model.fit`'s `validation_steps`; needed for an endless one (without
            it, a stream with no known end is refused after
            `tfq8.data.UNSIZED_MAX_BYTES` of samples, 1 GiB).
        every_n_epochs: Also calibrate every this many epochs (default None:
            only after the last epoch).
        filepath: Where to export the int8 `.tflite`; may contain `{epoch}` and
            log keys, e.g. `"ckpt/m-{epoch:02d}-{val_int8_accuracy:.3f}.tflite"`;
            checked on creation by formatting it with an int epoch and float logs.
        monitor: The log key `save_best_only` compares.
        mode: `"auto"`, `"min"` or `"max"` for `monitor`.
        save_best_only: Export only when `monitor` improves.
        initial_value_threshold: With `save_best_only`, the `monitor` value the
            first export must beat (default: none). As in Keras'
            `ModelCheckpoint`: training resumed in a new process (a new model
            object, say from `BackupAndRestore`) then keeps the file of an
            earlier, better run instead of overwriting it with the first epoch's.
        verbose: 0 silent (tfq8's own INFO lines too, such as `auto`'s scores),
            1 INFO log lines per calibration, evaluation and export, 2 also
            timings (logger `"tfq8.callbacks"`; configure `logging` to see
            them). Warnings are always logged.
        method: Range method for the int8 conversions (as in `tfq8.convert`).
        num_samples: Calibrate on at most this many samples.
        convert_options: Further `tfq8.convert` options (`per_channel`,
            `input_type`, `output_type`, `allow_float`, `method_options`, `ranges`,
            `bias_correction`),
            checked on creation as `tfq8.convert` checks them.
        outlier_ratio: A tensor whose `max|x|` exceeds this multiple of its
            `outlier_percentile` of `|x|` is reported as hostile to int8.
        outlier_percentile: The percentile of the non-zero `|x|` used above.
        range_growth: Also report a tensor whose `max|x|` grew by more than this
            factor since the first calibration of the run while its outlier
            ratio at least doubled.
        batch_size: Samples per LiteRT / Keras run during evaluation (default:
            `ModelRunner`'s, sized to a memory budget).
        max_bins: Histogram resolution per tensor.

    Attributes:
        calibration: The latest `tfq8.Calibration` (None before the first).
        diagnostics: Tensor name -> list of `TensorDiagnostics`, one per calibration.
        hostile: Tensor name -> why it was reported hostile to int8.
        int8_history: One dict of int8 metrics per evaluation (with its `epoch`).
        saved: Paths of the exported models, in order.
        best: Best `monitor` value seen (for `save_best_only`), kept across `fit`
            calls on the same model; it starts at `initial_value_threshold`.
        timings: Seconds spent per calibration (calibrate, diagnose, convert, evaluate, export).
        phase_timings: The same split by phase, one dict per calibration.

    Raises:
        ValueError: On invalid arguments (the message ends with `Received: ...`).
        TypeError: On arguments of the wrong kind, such as a file name as
            `calibration_data` or `validation_data`, or a list as `convert_options`.

    Example:
        >>> cb = tfq8.CalibrationCallback(x_train[:256], validation_data=(x_val, y_val),
        ...                               every_n_epochs=1, filepath="best-int8.tflite",
        ...                               save_best_only=True)
        >>> model.fit(x_train, y_train, epochs=5, callbacks=[cb])
        >>> blob = tfq8.convert(model)
    """

    def set_model(self, model: Any) -> None:
        """Keras' hook giving the callback its model; refuses a tf_keras model.

        Raises:
            TypeError: If `model` is a tf_keras (Keras 2) model: use
                `CalibrationCallback.for_model(model, ...)`.

        Example:
            >>> cb = tfq8.CalibrationCallback(x_train[:256])
            >>> model.fit(x_train, y_train, callbacks=[cb])   # Keras calls cb.set_model(model)
        """
        if is_tf_keras_model(model):  # tf_keras would fail later on a missing private hook
            raise TypeError(
                "CalibrationCallback is a Keras 3 callback and this model is a tf_keras "
                "(Keras 2) model. Use tfq8.CalibrationCallback.for_model(model, ...), which "
                f"takes the same arguments. Received: model of type {type(model).__name__}")
        super().set_model(model)


_TF_KERAS_CLASS = None


def _tf_keras_class():
    global _TF_KERAS_CLASS  # noqa: PLW0603 - created once, on first use
    if _TF_KERAS_CLASS is None:
        import tf_keras  # noqa: PLC0415

        class TFKerasCalibrationCallback(_CalibrationCallbackBase, tf_keras.callbacks.Callback):
            __doc__ = (
                "`CalibrationCallback` for `tf_keras` (Keras 2) models; same arguments.\n\n"
                "Example:\n"
                "    >>> cb = tfq8.callbacks.TFKerasCalibrationCallback(x_train[:200])\n"
                "    >>> tf_keras_model.fit(x_train, y_train, callbacks=[cb])\n"
                "    >>> blob = tfq8.convert(tf_keras_model)\n")

        TFKerasCalibrationCallback.__module__ = __name__
        TFKerasCalibrationCallback.__qualname__ = "TFKerasCalibrationCallback"
        _TF_KERAS_CLASS = TFKerasCalibrationCallback
    return _TF_KERAS_CLASS


def __getattr__(name: str) -> Any:
    if name == "TFKerasCalibrationCallback":
        return _tf_keras_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

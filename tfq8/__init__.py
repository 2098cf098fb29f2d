"""tfq8: full-integer int8 TFLite models from Keras, with better activation ranges.

The public API is this module's `__all__`:

* `convert(model, data)`: the int8 `.tflite` with ranges chosen by tfq8.
* `calibrate(model, data)` -> `Calibration`: statistics once, reusable.
* `representative_dataset(data, model=...)`: any data kind, validated, for
  tfq8 or for `TFLiteConverter.representative_dataset`.
* `CalibrationCallback`: statistics (and int8 metrics) during `model.fit`.
* `check`, `benchmark`, `inspect`: is the int8 model right, fast, integer?

Example:
    >>> import tfq8
    >>> blob = tfq8.convert(model, x_train[:500])
    >>> tfq8.check(blob, reference=model, data=x_test, labels=y_test).accuracy
    0.91...
"""

from tfq8.calibration import Calibration
from tfq8.callbacks import CalibrationCallback
from tfq8.convert import calibrate, convert
from tfq8.data import RepresentativeDataset, representative_dataset
from tfq8.errors import UnsupportedOpError
from tfq8.harness.bench import BenchReport, benchmark
from tfq8.harness.check import CheckReport, check
from tfq8.harness.inspect import inspect

__all__ = [
    "BenchReport",
    "Calibration",
    "CalibrationCallback",
    "CheckReport",
    "RepresentativeDataset",
    "UnsupportedOpError",
    "benchmark",
    "calibrate",
    "check",
    "convert",
    "inspect",
    "representative_dataset",
]

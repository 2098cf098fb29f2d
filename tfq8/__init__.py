"""tfq8: full-integer int8 TFLite models from Keras, with better activation ranges.

The public API is this module's `__all__`:

* `convert(model, data)`: the int8 `.tflite` with ranges chosen by tfq8.
* `calibrate(model, data)` -> `Calibration`: statistics once, reusable.
* `representative_dataset(data, model=...)`: any data kind, validated, for
  tfq8 or for `TFLiteConverter.representative_dataset`.
* `CalibrationCallback`: statistics (and int8 metrics) during `model.fit`.
* `check`, `benchmark`, `inspect`: is the int8 model right, fast, integer?
* `plot_ranges(calibration)`: histograms with each method's range (matplotlib).

Example:
    >>> import tfq8
    >>> blob = tfq8.convert(model, x_train[:500])
    >>> tfq8.check(blob, reference=model, data=x_test, labels=y_test).accuracy
    0.91...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the package version; setup.cfg reads it from here

# Names -> the module defining them. They load on first use, so `import tfq8`
# is instant and the `tfq8` command answers --help and flag errors without
# importing TensorFlow.
_EXPORTS = {
    "BenchReport": "tfq8.harness.bench",
    "Calibration": "tfq8.calibration",
    "CalibrationCallback": "tfq8.callbacks",
    "CheckReport": "tfq8.harness.check",
    "RepresentativeDataset": "tfq8.data",
    "UnsupportedOpError": "tfq8.errors",
    "benchmark": "tfq8.harness.bench",
    "calibrate": "tfq8.pipeline",
    "check": "tfq8.harness.check",
    "convert": "tfq8.pipeline",
    "inspect": "tfq8.harness.inspect",
    "plot_ranges": "tfq8.harness.plot",
    "representative_dataset": "tfq8.data",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from tfq8.calibration import Calibration
    from tfq8.callbacks import CalibrationCallback
    from tfq8.pipeline import calibrate, convert
    from tfq8.data import RepresentativeDataset, representative_dataset
    from tfq8.errors import UnsupportedOpError
    from tfq8.harness.bench import BenchReport, benchmark
    from tfq8.harness.check import CheckReport, check
    from tfq8.harness.inspect import inspect
    from tfq8.harness.plot import plot_ranges


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a submodule, such as tfq8.ranges
        try:
            return importlib.import_module(f"tfq8.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"tfq8.{name}":
                raise
            raise AttributeError(f"module 'tfq8' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""tfq8: full-integer int8 TFLite models from Keras, with better activation ranges."""

from tfq8.calibration import Calibration
from tfq8.callbacks import CalibrationCallback
from tfq8.convert import UnsupportedOpError, calibrate, convert
from tfq8.data import RepresentativeDataset, representative_dataset
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

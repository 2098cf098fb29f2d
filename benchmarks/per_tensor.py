"""Bias correction with per-channel and per-tensor weights, against float.

For each model, prints the output SQNR (dB) and top-1 agreement against the
float model on its test images, and the conversion time, of: TFLite's own
int8 conversion (per-channel weights), and tfq8's `auto` with and without
`bias_correction=True`, with per-channel weights (the default) and with
`per_channel=False` (for hardware that wants one weight scale per tensor).
One calibration (`tfq8.calibrate`) serves all tfq8 rows.

Models: MLPerf Tiny ResNet-8 (CIFAR-10, as in `suite.py`) and VWW MobileNet
(CIFAR-10 test images upscaled to 96x96, `suite.vww`, as in `latency.py`: no VWW images
ship here, so agreement and SQNR against float are what it says), both from
`../shared` (skipped when absent), and digits.

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/per_tensor.py
    .venv/bin/python benchmarks/per_tensor.py --models=vww
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import suite  # noqa: E402
import tfq8  # noqa: E402
from tfq8.harness.interpreter import ModelRunner  # noqa: E402
from tfq8.pipeline import converter_int8  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet8", "vww", "digits"], "Cases to run.")

_LOADERS = {"resnet8": suite.resnet8, "vww": suite.vww, "digits": suite.digits}


def _score(blob: bytes, case: suite.Case, reference: np.ndarray) -> tuple[float, float]:
    out = ModelRunner(blob, backend="xnnpack", num_threads=os.cpu_count() or 1).run(
        [case.x_test])[0].astype(np.float64)
    ref = reference.astype(np.float64)
    sqnr = 10 * np.log10(np.sum(ref**2) / max(np.sum((out - ref) ** 2), 1e-30))
    return float(sqnr), 100 * float(np.mean(out.argmax(1) == ref.argmax(1)))


def run_case(case: suite.Case) -> None:
    reference = suite.float_reference(case)
    x = case.pool[:case.calib_samples]
    t0 = time.perf_counter()
    blob = converter_int8(case.model, x)
    rows = [("converter (per-channel)", blob, time.perf_counter() - t0, "")]
    t0 = time.perf_counter()
    calib = tfq8.calibrate(case.model, x)
    stats_s = time.perf_counter() - t0
    for per_channel in (True, False):
        kind = "per-channel" if per_channel else "per-tensor"
        for correct in (False, True):
            t0 = time.perf_counter()
            blob = tfq8.convert(calibration=calib, per_channel=per_channel,
                                bias_correction=correct)
            seconds = stats_s + time.perf_counter() - t0
            said = calib.last_bias_correction.summary() if correct else ""
            rows.append((f"auto{' + bc' if correct else ''} ({kind})", blob, seconds, said))
    for label, blob, seconds, said in rows:
        sqnr, agree = _score(blob, case, reference)
        print(f"{case.name:<8} {label:<26} SQNR {sqnr:6.2f} dB  agreement {agree:6.2f}%  "
              f"{seconds:5.1f} s" + (f"  [{said}]" if said else ""), flush=True)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    for name in FLAGS.models:
        if name not in _LOADERS:
            raise app.UsageError(f"--models: unknown case {name!r}; choose from {list(_LOADERS)}")
        case = _LOADERS[name]()
        if case is not None:
            run_case(case)


if __name__ == "__main__":
    app.run(main)

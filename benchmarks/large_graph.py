"""Conversion time on a large graph: an LSTM unrolled over many steps.

`auto` searches a range per tensor with every method, and a Keras 3 `LSTM`
with `unroll=True` gives hundreds of tensors (40 steps: 724), so this is where
`auto` costs most against TFLite's converter. The script builds the model
(seeded, untrained: time does not depend on the weights), calibrates on random
sequences and prints, per round, the converter's own full-integer conversion
and `tfq8.convert` with `auto` (statistics included) side by side, then their
medians and ratio, and the seconds each per-tensor method takes on its own.

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/large_graph.py --steps=40 --samples=200 --repeats=3
"""

from __future__ import annotations

import logging
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import tfq8  # noqa: E402
from tfq8.pipeline import converter_int8  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 40, "Time steps the LSTM is unrolled over.")
_SAMPLES = flags.DEFINE_integer("samples", 200, "Calibration samples.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Paired rounds (converter, then tfq8).")


def _model(steps: int):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    inp = keras.Input((steps, 8))
    return keras.Model(inp, keras.layers.Dense(5)(keras.layers.LSTM(32, unroll=True)(inp)))


def main(argv: list[str]) -> None:
    del argv
    logging.getLogger("tfq8").setLevel(logging.WARNING)
    model = _model(_STEPS.value)
    data = np.random.default_rng(0).normal(size=(_SAMPLES.value, _STEPS.value, 8)).astype(np.float32)
    converter_int8(model, data)  # warm both paths up (tracing, first LiteRT use)
    tfq8.convert(model, data, method="minmax")
    times: dict[str, list[float]] = {"converter": [], "tfq8 auto": []}
    for k in range(_REPEATS.value):
        for name, run in (("converter", lambda: converter_int8(model, data)),
                          ("tfq8 auto", lambda: tfq8.convert(model, data))):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        print(f"round {k + 1}: converter {times['converter'][-1]:.2f} s, "
              f"tfq8 auto {times['tfq8 auto'][-1]:.2f} s")
    base = statistics.median(times["converter"])
    for name, values in times.items():
        print(f"{name:10s} median {statistics.median(values):.2f} s  "
              f"ratio {statistics.median(values) / base:.2f}")
    calib = tfq8.calibrate(model, data)
    print(f"{len(calib.tensors)} calibrated tensors; seconds per method over all of them:")
    for method in ("minmax", "percentile", "mse", "kl"):
        start = time.perf_counter()
        calib.ranges(method)
        print(f"  {method:10s} {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    app.run(main)

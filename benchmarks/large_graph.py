"""Conversion time on large graphs: many tensors, or many weights.

`auto` searches a range per tensor with every method and quantizes and runs
each candidate model, so its cost over TFLite's converter grows with the
tensor count and the weights. Models (seeded, untrained: time does not depend
on the weights' values):

* `lstm`: a Keras 3 `LSTM(32, unroll=True)` over `--steps` steps (40: 724
  tensors), the most tensors per second of conversion;
* `mobilenetv2` (160x160, alpha 1.0), `efficientnetb0` (128x128, its own
  rescaling layers, so 0-255 data), `resnet50` (96x96, 25.6M weights) from
  `keras.applications` with `weights=None`;
* `transformer`: token ids into an Embedding and two attention blocks with
  LayerNorm (sequence 64), about 2 s for the converter.

Per model it prints each round's converter and `tfq8.convert` (`auto`,
statistics included) times side by side, their medians and ratio, and the
seconds each per-tensor method takes on its own. Nothing is asserted: this
prints figures.

Usage:
    .venv/bin/python benchmarks/large_graph.py --models=lstm --steps=40 --samples=200 --repeats=3
    .venv/bin/python benchmarks/large_graph.py --models=mobilenetv2,efficientnetb0,resnet50,transformer
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

_MODELS = flags.DEFINE_list("models", ["lstm"], "Models: lstm, mobilenetv2, efficientnetb0, "
                           "resnet50, transformer.")
_STEPS = flags.DEFINE_integer("steps", 40, "Time steps the LSTM is unrolled over.")
_SAMPLES = flags.DEFINE_integer("samples", 200, "Calibration samples.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Paired rounds (converter, then tfq8).")


def _model_and_data(name: str, samples: int):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    apps = keras.applications
    if name == "lstm":
        steps = _STEPS.value
        inp = keras.Input((steps, 8))
        model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.LSTM(32, unroll=True)(inp)))
        return model, rng.normal(size=(samples, steps, 8)).astype(np.float32)
    if name == "transformer":
        layers = keras.layers
        inp = keras.Input((64,), dtype="int32")
        x = layers.Embedding(2000, 64)(inp)
        for _ in range(2):
            x = layers.LayerNormalization()(x + layers.MultiHeadAttention(4, 16)(x, x))
            x = layers.LayerNormalization()(x + layers.Dense(64)(layers.Dense(128, activation="relu")(x)))
        out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling1D()(x))
        return keras.Model(inp, out), rng.integers(0, 2000, size=(samples, 64)).astype(np.int32)
    build, size, scale = {
        "mobilenetv2": (apps.MobileNetV2, 160, 1.0),
        "efficientnetb0": (apps.EfficientNetB0, 128, 255.0),  # rescales 0-255 itself
        "resnet50": (apps.ResNet50, 96, 1.0),
    }[name]
    model = build(input_shape=(size, size, 3), weights=None)
    return model, (rng.uniform(size=(samples, size, size, 3)) * scale).astype(np.float32)


def _time(name: str) -> None:
    model, data = _model_and_data(name, _SAMPLES.value)
    converter_int8(model, data)  # warm both paths up (tracing, first LiteRT use)
    tfq8.convert(model, data, method="minmax")
    times: dict[str, list[float]] = {"converter": [], "tfq8 auto": []}
    for k in range(_REPEATS.value):
        for label, run in (("converter", lambda: converter_int8(model, data)),
                           ("tfq8 auto", lambda: tfq8.convert(model, data))):
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
        print(f"{name} round {k + 1}: converter {times['converter'][-1]:.2f} s, "
              f"tfq8 auto {times['tfq8 auto'][-1]:.2f} s")
    base = statistics.median(times["converter"])
    for label, values in times.items():
        print(f"{name} {label:10s} median {statistics.median(values):.2f} s  "
              f"ratio {statistics.median(values) / base:.2f}")
    calib = tfq8.calibrate(model, data)
    print(f"{name}: {len(calib.tensors)} calibrated tensors, {model.count_params()} weights; "
          "seconds per method over all tensors:")
    for method in ("minmax", "percentile", "mse", "kl"):
        start = time.perf_counter()
        calib.ranges(method)
        print(f"  {method:10s} {time.perf_counter() - start:.2f} s")


def main(argv: list[str]) -> None:
    del argv
    logging.getLogger("tfq8").setLevel(logging.WARNING)
    unknown = set(_MODELS.value) - {"lstm", "mobilenetv2", "efficientnetb0", "resnet50",
                                    "transformer"}
    if unknown:
        raise app.UsageError(f"--models: unknown {sorted(unknown)}")
    for name in _MODELS.value:
        _time(name)


if __name__ == "__main__":
    app.run(main)

"""What `tfq8.CalibrationCallback` adds to `model.fit`, on scikit-learn's digits.

Figures printed:

1. One `tfq8.convert(model, data)` (calibrate + quantize) on the trained model:
   the reference cost.
2. The callback's cost at the end of training (its default, `every_n_epochs=None`)
   without and with `validation_data`, as a ratio to (1).
3. With `every_n_epochs=1` and `validation_data`: the time the callback adds to
   each epoch (calibrate + convert + int8 evaluation), as a ratio to the epoch's
   own time (training steps plus Keras's own validation), first epoch excluded
   (it includes tracing); with the default `method="auto"` and with `"minmax"`.

Run:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/callback_overhead.py

Times are wall-clock on whatever else the machine is doing; medians over repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import tfq8  # noqa: E402


def digits():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1437], y[:1437]), (x[1437:], y[1437:])


def digits_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


class EpochTimer(keras.callbacks.Callback):
    """Epoch begin -> epoch end, measured before the callbacks after it run."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class TrainBeginStamp(keras.callbacks.Callback):
    """The time Keras reached this callback's on_train_begin (two of them bracket another's)."""

    def on_train_begin(self, logs=None):
        self.at = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--calibration_samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()

    (x, y), (xv, yv) = digits()
    calib = x[: args.calibration_samples]

    # (1) + (2): train end only.
    end_plain, end_val, converts, begins = [], [], [], []
    for r in range(args.repeats):
        # Each measurement is the first conversion of a freshly trained model, so
        # none of them profits from another's warm-up.
        model = digits_model(r)
        model.fit(x, y, epochs=1, batch_size=args.batch_size, verbose=0)
        start = time.perf_counter()
        tfq8.convert(model, calib)
        converts.append(time.perf_counter() - start)
        model = digits_model(r)
        cb = tfq8.CalibrationCallback(calib, verbose=0)
        model.fit(x, y, epochs=1, batch_size=args.batch_size, verbose=0, callbacks=[cb])
        end_plain.append(cb.timings[-1])
        model = digits_model(r)
        cb = tfq8.CalibrationCallback(calib, validation_data=(xv, yv), verbose=0)
        before, after = TrainBeginStamp(), TrainBeginStamp()
        model.fit(x, y, epochs=1, batch_size=args.batch_size, verbose=0,
                  callbacks=[before, cb, after])
        end_val.append(cb.timings[-1])
        begins.append(after.at - before.at)
    convert_s = statistics.median(converts)
    print(f"digits CNN, {len(x)} train / {len(xv)} val samples, "
          f"{args.calibration_samples} calibration samples, batch {args.batch_size}")
    print(f"one tfq8.convert(model, data):                 {convert_s:6.2f} s")
    print(f"callback at train end, no validation:          {statistics.median(end_plain):6.2f} s"
          f"  ({statistics.median(end_plain) / convert_s:.2f}x one convert)")
    print(f"callback at train end, with validation_data:   {statistics.median(end_val):6.2f} s"
          f"  ({statistics.median(end_val) / convert_s:.2f}x one convert; calibrate + convert "
          f"+ int8 evaluation)")
    print(f"  and before training, once per fit:           {statistics.median(begins):6.2f} s"
          f"  (reading the data, a trial conversion on {tfq8.callbacks._TRIAL_SAMPLES} samples)")

    # (3): every epoch, with validation; the default range method, then minmax.
    for method in ("auto", "minmax"):
        timer = EpochTimer()
        model = digits_model(0)
        cb = tfq8.CalibrationCallback(calib, validation_data=(xv, yv), every_n_epochs=1,
                                      method=method, verbose=0)
        history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0,
                            validation_data=(xv, yv), callbacks=[timer, cb])
        own = timer.seconds[1:]
        added = cb.timings[1:]
        ratios = [a / o for a, o in zip(added, own)]
        print(f"every_n_epochs=1 + validation_data, method={method!r}, epochs 2..{args.epochs}:")
        print(f"  epoch's own time (train + Keras validation): {statistics.median(own):6.2f} s")
        print(f"  added by the callback per epoch:             {statistics.median(added):6.2f} s")
        print(f"  added / own:                                 {statistics.median(ratios):6.2f}x")
        phases = {k: statistics.median(p[k] for p in cb.phase_timings[1:])
                  for k in cb.phase_timings[-1]}
        print("  added, by phase:                             "
              + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
        print(f"  final val_accuracy {history.history['val_accuracy'][-1]:.4f}, "
              f"val_int8_accuracy {history.history['val_int8_accuracy'][-1]:.4f}, "
              f"val_int8_agreement {history.history['val_int8_agreement'][-1]:.4f}")

if __name__ == "__main__":
    main()

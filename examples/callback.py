"""Train on scikit-learn's digits with `tfq8.CalibrationCallback`, then convert with no data.

The callback calibrates after every epoch, evaluates the int8 model in LiteRT
(`val_int8_accuracy`, `val_int8_agreement` appear in the progress bar and in
`History`), keeps the best int8 model on disk, and leaves the final statistics on
the model so that `tfq8.convert(model)` needs no calibration data.

Run:
    .venv/bin/python examples/callback.py --output_dir=out/callback
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import tfq8  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="out/callback")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    (x_train, y_train), (x_val, y_val) = (x[:1437], y[:1437]), (x[1437:], y[1437:])

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    os.makedirs(args.output_dir, exist_ok=True)
    cb = tfq8.CalibrationCallback(
        x_train[:256],                                  # calibration samples
        validation_data=(x_val, y_val),                 # int8 metrics per calibration
        every_n_epochs=1,
        filepath=os.path.join(args.output_dir, "digits-{epoch:02d}-{val_int8_accuracy:.3f}.tflite"),
        monitor="val_int8_accuracy", save_best_only=True)
    # The tfq8 callback goes before CSVLogger/TensorBoard so they see its keys.
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=32,
                        validation_data=(x_val, y_val), verbose=2,
                        callbacks=[cb, keras.callbacks.CSVLogger(
                            os.path.join(args.output_dir, "log.csv"))])

    blob = tfq8.convert(model)                          # no data: the callback's statistics
    path = os.path.join(args.output_dir, "digits-final-int8.tflite")
    with open(path, "wb") as f:
        f.write(blob)
    cb.calibration.save(os.path.join(args.output_dir, "stats.npz"))

    print(f"float val accuracy  {history.history['val_accuracy'][-1]:.4f}")
    print(f"int8  val accuracy  {history.history['val_int8_accuracy'][-1]:.4f}  "
          f"(agreement with float {history.history['val_int8_agreement'][-1]:.4f})")
    print(f"full-integer: {tfq8.inspect(blob).full_integer}; {len(blob)} bytes -> {path}")
    print(f"best int8 models kept: {cb.saved}")
    worst = max(cb.diagnostics.values(), key=lambda d: d[-1].outlier_ratio)[-1]
    print(f"largest outlier ratio: {worst.outlier_ratio:.2f} ({worst.layer or worst.tensor})"
          f"; hostile tensors: {sorted(cb.hostile) or 'none'}")


if __name__ == "__main__":
    main()

"""Is the int8 model right, and is it fast? `tfq8.check` and `tfq8.benchmark` on a tiny CNN.

Runs in under a minute on a laptop CPU, offline (scikit-learn's digits ship in
its wheel):

    python examples/check_and_bench.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import tfq8  # noqa: E402


def main() -> None:
    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype(np.float32)
    y = digits.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1200], y[:1200], epochs=15, batch_size=32, verbose=0)

    int8 = tfq8.convert(model, x[:200])
    print(tfq8.inspect(int8))                       # every op integer?

    report = tfq8.check(int8, reference=model, data=x[1200:], labels=y[1200:])
    print(report)                                   # accuracy, agreement, worst tensors first

    # A deliberately bad range on one tensor: check() puts it at the top.
    calib = tfq8.calibrate(model, x[:200])
    victim = calib.tensors[1].name
    bad = tfq8.convert(calibration=calib, ranges={victim: (0.0, 0.01)})
    worst = tfq8.check(bad, reference=calib, data=x[1200:]).tensors[0]
    print(f"\nworst tensor after damaging {victim!r}: {worst.name!r} "
          f"(local SQNR {worst.local_sqnr_db:.1f} dB)\n")

    bench = tfq8.benchmark(int8, reference=model, num_threads=1, time_budget_s=1.0)
    print(bench)                                    # latency, speedup, per-op table, sizes


if __name__ == "__main__":
    main()

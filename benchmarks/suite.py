"""Benchmark models and data: real data only, trained models cached on disk.

* `resnet8`: MLPerf Tiny ResNet-8 on the CIFAR-10 test set (`../shared`; the
  case is skipped when absent). Calibration pool: test images 0..4999; test:
  images 5000..9999, so calibration and evaluation never overlap.
* `fmnist_cnn`, `fmnist_mlp`, `fmnist_mobilenetv3`: Fashion-MNIST (Debian's
  `dataset-fashion-mnist`; skipped when absent), trained here with fixed seeds
  (a BN CNN, an MLP with GELU, `keras.applications.MobileNetV3Small` with
  `weights=None`). Calibration pool: the last 5,000 training images (not used
  for training); test: the 10,000 test images.
* `digits`: scikit-learn's digits (ships in the wheel), a small CNN.
* `vww` (not in `available()`: no VWW images ship here, so it has no labels):
  MLPerf Tiny VWW MobileNet on CIFAR-10 test images resized to 96x96, for
  latency and fidelity to float (`latency.py`, `per_tensor.py`).

Trained models are cached under `~/.cache/tfq8-benchmarks` (keyed by name).
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
from typing import Callable, Sequence

import numpy as np

_log = logging.getLogger("tfq8.benchmarks")

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared"))
FMNIST = "/usr/share/datasets/fashion-mnist"
CACHE = os.path.expanduser("~/.cache/tfq8-benchmarks")


@dataclasses.dataclass
class Case:
    """A trained model with its calibration pool and labelled test set."""

    name: str
    model: object
    pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    calib_samples: int


def available() -> dict[str, Callable[[], Case | None]]:
    """Case name -> loader (returns None when its data is absent)."""
    return {
        "resnet8": resnet8,
        "fmnist_cnn": lambda: fmnist("cnn"),
        "fmnist_mlp": lambda: fmnist("mlp"),
        "fmnist_mobilenetv3": lambda: fmnist("mobilenetv3"),
        "digits": digits,
    }


def resnet8() -> Case | None:
    model_path = os.path.join(SHARED, "models", "mlperf_tiny_resnet8_cifar10.h5")
    data_path = os.path.join(SHARED, "data", "cifar10_test.npz")
    if not (os.path.exists(model_path) and os.path.exists(data_path)):
        _log.warning("resnet8 skipped: %s or %s absent.", model_path, data_path)
        return None
    import keras  # noqa: PLC0415

    model = keras.models.load_model(model_path, compile=False)
    with np.load(data_path) as d:
        x, y = d["x"].astype(np.float32), d["y"].astype(np.int64)
    return Case("resnet8", model, x[:5000], x[5000:], y[5000:], 500)


VWW = os.path.join(SHARED, "models", "mlperf_tiny_vww_96.h5")
CIFAR = os.path.join(SHARED, "data", "cifar10_test.npz")


def vww() -> Case | None:
    """MLPerf Tiny VWW MobileNet; calibrated and checked on CIFAR-10 images upscaled to 96x96."""
    if not (os.path.exists(VWW) and os.path.exists(CIFAR)):
        _log.warning("vww skipped: %s or %s absent.", VWW, CIFAR)
        return None
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
        """Keras 3 rejects the `groups` key the saved config carries."""

        def __init__(self, *args, groups=None, **kwargs):  # noqa: ARG002
            super().__init__(*args, **kwargs)

    model = keras.models.load_model(VWW, compile=False,
                                    custom_objects={"DepthwiseConv2D": DepthwiseConv2D})
    with np.load(CIFAR) as d:
        x = d["x"][:1500]
    # The MLPerf Tiny VWW reference feeds pixels / 255.
    x96 = tf.image.resize(x.astype(np.float32), (96, 96)).numpy() / 255.0
    return Case("vww", model, x96[:1000], x96[1000:], np.zeros(500, np.int64), 300)


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fmnist(kind: str) -> Case | None:
    files = {k: os.path.join(FMNIST, f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz")
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    if not all(os.path.exists(p) for p in files.values()):
        _log.warning("fmnist_%s skipped: install Debian's dataset-fashion-mnist.", kind)
        return None
    x = _read_idx(files["train-images"]).astype(np.float32)[..., None] / 255.0
    y = _read_idx(files["train-labels"]).astype(np.int64)
    xt = _read_idx(files["t10k-images"]).astype(np.float32)[..., None] / 255.0
    yt = _read_idx(files["t10k-labels"]).astype(np.int64)
    if kind == "mobilenetv3":
        pad = ((0, 0), (2, 2), (2, 2), (0, 0))
        x, xt = np.pad(x, pad), np.pad(xt, pad)
    x_train, y_train, pool = x[:55000], y[:55000], x[55000:]
    model = _cached(f"fmnist_{kind}", lambda: _train_fmnist(kind, x_train, y_train))
    return Case(f"fmnist_{kind}", model, pool, xt, yt, 500)


def _train_fmnist(kind: str, x: np.ndarray, y: np.ndarray):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    L = keras.layers
    if kind == "cnn":
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
            L.MaxPooling2D(),
            L.Conv2D(64, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
            L.MaxPooling2D(),
            L.Conv2D(64, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
            L.GlobalAveragePooling2D(), L.Dense(10),
        ])
        epochs, n = 4, 55000
    elif kind == "mlp":
        model = keras.Sequential([
            keras.Input(x.shape[1:]), L.Flatten(),
            L.Dense(256, activation="gelu"), L.Dense(128, activation="gelu"), L.Dense(10),
        ])
        epochs, n = 8, 55000
    else:
        base = keras.applications.MobileNetV3Small(
            input_shape=x.shape[1:], weights=None, classes=10, include_top=True,
            include_preprocessing=False, classifier_activation=None, dropout_rate=0.1)
        # keras.applications builds BatchNormalization with momentum 0.999: a
        # few epochs from scratch leave the moving statistics near their
        # initial values and inference at chance. 0.9 converges in time.
        for layer in base.layers:
            if isinstance(layer, L.BatchNormalization):
                layer.momentum = 0.9
        model = base
        epochs, n = 4, 30000
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:n], y[:n], epochs=epochs, batch_size=128, verbose=0)
    return model


def digits() -> Case:
    from sklearn.datasets import load_digits  # noqa: PLC0415

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train = x[:1000], y[:1000]
    model = _cached("digits_cnn", lambda: _train_digits(x_train, y_train))
    return Case("digits", model, x_train, x[1000:], y[1000:], 100)


def _train_digits(x: np.ndarray, y: np.ndarray):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(16, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(32, 3, padding="same", strides=2), L.BatchNormalization(), L.ReLU(),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    return model


def _cached(name: str, build: Callable[[], object]):
    import keras  # noqa: PLC0415

    path = os.path.join(CACHE, f"{name}.keras")
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    _log.info("Training %s (cached at %s).", name, path)
    model = build()
    os.makedirs(CACHE, exist_ok=True)
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return model


def corrupt(x: np.ndarray, fraction: float = 0.01, seed: int = 0) -> np.ndarray:
    """Corrupts `fraction` of the frames: half saturated noise, half hot pixels.

    Saturated noise: every pixel at the data's min or max at random. Hot
    pixels: 2% of the pixels at 4x the data's max (a stuck sensor).
    """
    rng = np.random.default_rng(seed)
    x = x.copy()
    idx = rng.choice(len(x), max(1, int(round(len(x) * fraction))), replace=False)
    lo, hi = float(x.min()), float(x.max())
    for j, i in enumerate(idx):
        if j % 2 == 0:
            x[i] = rng.choice(np.array([lo, hi], x.dtype), size=x[i].shape)
        else:
            hot = rng.random(x[i].shape[:-1]) < 0.02
            x[i][hot] = 4 * hi
    return x


def scenario(case: Case, name: str) -> np.ndarray:
    """Calibration set for a scenario: clean, corrupt (1% bad frames) or x10."""
    n = case.calib_samples
    if name == "clean":
        return case.pool[:n]
    if name == "corrupt":
        return corrupt(case.pool[:n])
    if name == "x10":
        return case.pool[: 10 * n]
    raise ValueError(f"scenario must be clean, corrupt or x10. Received: {name!r}")


def float_reference(case: Case) -> np.ndarray:
    """The float model's outputs on the test set, from its plain float `.tflite` (XNNPACK)."""
    import tfq8  # noqa: PLC0415
    from tfq8.harness.interpreter import ModelRunner  # noqa: PLC0415

    return ModelRunner(tfq8.models.load_model(case.model).to_float_tflite(), backend="xnnpack",
                       num_threads=os.cpu_count() or 1).run([case.x_test])[0]


def evaluate(blob: bytes, case: Case, reference: np.ndarray) -> dict:
    """An int8 model on the test set: top-1 (`int8_acc`), top-1 agreement and output SQNR
    (dB, energies summed over the test set) against `reference`, and per test sample
    the error energy (`_noise`) and whether top-1 is right (`_correct`)."""
    from tfq8.harness.interpreter import ModelRunner  # noqa: PLC0415

    out = ModelRunner(blob, backend="xnnpack", num_threads=os.cpu_count() or 1).run([case.x_test])[0]
    ref = reference.astype(np.float64)
    per_sample = np.sum(((out.astype(np.float64) - ref) ** 2).reshape(len(ref), -1), axis=1)
    noise = np.sum(per_sample)
    return {
        "int8_acc": float(np.mean(out.argmax(1) == case.y_test)),
        "agreement": float(np.mean(out.argmax(1) == reference.argmax(1))),
        "sqnr_db": float(10 * np.log10(np.sum(ref**2) / max(noise, 1e-30))),
        "_noise": per_sample,  # per test sample; for the confidence intervals, not saved
        "_correct": out.argmax(1) == case.y_test,
    }


def compare_int8(name: str, model, case: Case) -> None:
    """Prints, for TFLite's own int8 model and tfq8's (`minmax`, `auto`), calibrated on
    the clean and corrupt scenarios: full-integer or not, float ops, top-1 on the test
    set, top-1 agreement and output SQNR against float, and latency relative to the
    converter's model (one thread, XNNPACK, interleaved)."""
    import tfq8  # noqa: PLC0415
    from tfq8.pipeline import converter_int8  # noqa: PLC0415

    float_acc = None
    print(f"\n{name}")
    print(f"{'calibration':<12} {'model':<18} {'integer':>8} {'float ops':>9} {'top-1':>7} "
          f"{'agree %':>8} {'SQNR dB':>8} {'latency / converter':>20}")
    for kind in ("clean", "corrupt"):
        calib_x = scenario(case, kind)
        theirs = converter_int8(model, calib_x)
        calib = tfq8.calibrate(model, calib_x)
        blobs = {"TFLite converter": theirs,
                 "tfq8 minmax": tfq8.convert(model, calibration=calib, method="minmax"),
                 "tfq8 auto": tfq8.convert(model, calibration=calib, method="auto")}
        for label, blob in blobs.items():
            info = tfq8.inspect(blob)
            report = tfq8.check(blob, reference=model, data=case.x_test, labels=case.y_test,
                                per_tensor=False)
            float_acc = report.reference_accuracy
            ratio = 1.0 if blob is theirs else 1 / tfq8.benchmark(
                blob, reference=theirs, num_threads=1, per_op=False).speedup
            print(f"{kind:<12} {label:<18} {str(info.full_integer):>8} "
                  f"{len(info.float_ops):>9} {100 * report.accuracy:>7.2f} "
                  f"{100 * report.agreement:>8.2f} {report.outputs[0].sqnr_db:>8.2f} "
                  f"{ratio:>20.3f}")
    print(f"float model top-1: {100 * float_acc:.2f}")


def parse_models(models: Sequence[str], description: str) -> list[str]:
    """The `--models` a benchmark's command line chose (comma-separated, of `models`;
    default all), after setting logging to warnings."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default=",".join(models),
                        help=f"comma-separated, of {', '.join(models)}")
    names = parser.parse_args().models.split(",")
    unknown = sorted(set(names) - set(models))
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected some of {', '.join(models)}")
    logging.basicConfig(level=logging.WARNING)
    return names


def compare_fmnist_models(models: dict[str, Callable[[np.ndarray, np.ndarray], object]],
                          description: str, *, cache_suffix: str = "") -> None:
    """A benchmark's `main`: trains (or loads from the cache) the `--models` chosen of
    `models` (name -> trainer on 55,000 Fashion-MNIST training images and labels)
    and prints `compare_int8` for each, on the F-MNIST case's data."""
    names = parse_models(models, description)
    case = fmnist("cnn")  # the data; the models are trained here
    if case is None:
        return
    files = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    x = _read_idx(files).astype(np.float32)[..., None] / 255.0
    y = _read_idx(files.replace("images-idx3", "labels-idx1")).astype(np.int64)
    for name in names:
        model = _cached(f"fmnist_{name}{cache_suffix}", lambda: models[name](x[:55000], y[:55000]))
        compare_int8(name, model, case)

"""Mixed-precision models: TFLite's converter refuses them, tfq8 converts them.

A model trained under `mixed_float16` computes in float16, and TFLite's int8
conversion fails on its float16 ops ("'tf.Conv2D' op is neither a custom op nor
a flex op"). tfq8 converts a float32 copy of it with the same weights
(`tfq8/mixed_precision.py`). This script takes the benchmark suite's trained
models (`suite.py`: Fashion-MNIST CNN, MLP and MobileNetV3-Small, digits),
rebuilds each with every layer under `mixed_float16` and the trained weights
(what `model.fit` under that policy leaves: float32 variables, float16
compute), and prints for each: the float32 model's and the mixed model's own
top-1, what TFLite's converter does with the mixed model, tfq8's int8 top-1,
agreement and output SQNR against float, and whether tfq8's `.tflite` of the
mixed model is byte-identical to its `.tflite` of the float32 model.

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/mixed_precision.py --models=fmnist_cnn,digits
    (Fashion-MNIST needs apt-get install -y dataset-fashion-mnist)
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

MODELS = ("fmnist_cnn", "fmnist_mlp", "fmnist_mobilenetv3", "digits")


def in_mixed_float16(model):
    """The same architecture with every layer under `mixed_float16`, holding `model`'s weights."""
    import keras  # noqa: PLC0415

    def mixed(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "mixed_float16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=mixed)
    copy.set_weights(model.get_weights())
    return copy


def tflite_converter(model, samples: np.ndarray) -> str:
    """What TFLite's own full-integer conversion does with `model` (no tfq8 involved)."""
    import tensorflow as tf  # noqa: PLC0415

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    from tfq8._quiet import quiet_native_stderr, quiet_stdout  # noqa: PLC0415

    try:
        with quiet_stdout(), quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converter.convert()
    except Exception as e:  # noqa: BLE001 - report whatever the converter raises
        return f"fails ({type(e).__name__})"
    return "converts"


def main() -> None:
    names = suite.parse_models(MODELS, __doc__.splitlines()[0])
    import tfq8  # noqa: PLC0415

    print(f"{'model':<20} {'float32 top-1':>13} {'mixed top-1':>11} {'TFLite converter':>24} "
          f"{'tfq8 int8 top-1':>15} {'agree %':>8} {'SQNR dB':>8} {'same bytes':>10}")
    for name in names:
        case = suite.available()[name]()
        if case is None:
            continue
        mixed = in_mixed_float16(case.model)
        calib = case.pool[:case.calib_samples]
        own = {}
        for label, model in (("float32", case.model), ("mixed", mixed)):
            logits = np.concatenate([np.asarray(model(case.x_test[k:k + 256], training=False))
                                     for k in range(0, len(case.x_test), 256)])
            own[label] = 100 * np.mean(logits.argmax(-1) == case.y_test)
        theirs = tflite_converter(mixed, calib)
        ours = tfq8.convert(mixed, calib)
        report = tfq8.check(ours, reference=mixed, data=case.x_test, labels=case.y_test,
                            per_tensor=False)
        same = ours == tfq8.convert(case.model, calib)
        print(f"{name:<20} {own['float32']:>13.2f} {own['mixed']:>11.2f} {theirs:>24} "
              f"{100 * report.accuracy:>15.2f} {100 * report.agreement:>8.2f} "
              f"{report.outputs[0].sqnr_db:>8.2f} {str(same):>10}")


if __name__ == "__main__":
    main()

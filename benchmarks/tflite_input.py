"""A float `.tflite` as the model: the same int8 model as from its Keras source.

For each of the accuracy suite's models (`suite.py`; ResNet-8 needs `../shared`,
the Fashion-MNIST ones `dataset-fashion-mnist`) and MLPerf Tiny's VWW MobileNet
(`latency.py`), this script writes the float `.tflite` a user would have
(`tf.lite.TFLiteConverter.from_keras_model(model).convert()`), converts that
file with tfq8 (default method, the suite's calibration samples), converts the
Keras model the same way, and prints: the two files' sizes, whether the two
int8 models give identical outputs on the test images, and the `.tflite`'s
int8 top-1 (where labels exist), agreement and output SQNR against its float
model.

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/tflite_input.py --models=resnet8,digits
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import latency  # noqa: E402
import suite  # noqa: E402

MODELS = ("resnet8", "vww", "fmnist_cnn", "fmnist_mlp", "fmnist_mobilenetv3", "digits")


def main() -> None:
    names = suite.parse_models(MODELS, __doc__.splitlines()[0])
    import tensorflow as tf  # noqa: PLC0415

    import tfq8  # noqa: PLC0415
    from tfq8._quiet import quiet_native_stderr, quiet_stdout  # noqa: PLC0415
    from tfq8.harness.interpreter import ModelRunner  # noqa: PLC0415

    print(f"{'model':<20} {'float .tflite':>13} {'int8 .tflite':>12} {'same outputs as Keras':>22} "
          f"{'top-1':>7} {'agree %':>8} {'SQNR dB':>8}")
    for name in names:
        case = latency.vww() if name == "vww" else suite.available()[name]()
        if case is None:
            continue
        with quiet_stdout(), quiet_native_stderr():
            float_model = tf.lite.TFLiteConverter.from_keras_model(case.model).convert()
        calib = case.pool[:case.calib_samples]
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"{name}.tflite")
            with open(path, "wb") as f:
                f.write(float_model)
            ours = tfq8.convert(path, calib)
        from_keras = tfq8.convert(case.model, calib)
        outputs = [ModelRunner(b, backend="xnnpack").run([case.x_test])[0]
                   for b in (ours, from_keras)]
        labels = case.y_test if name != "vww" else None  # (VWW has no labels here)
        report = tfq8.check(ours, reference=float_model, data=case.x_test, labels=labels,
                            per_tensor=False)
        top1 = f"{100 * report.accuracy:.2f}" if report.accuracy is not None else "-"
        print(f"{name:<20} {len(float_model):>13,} {len(ours):>12,} "
              f"{str(np.array_equal(*outputs)) + f' ({len(case.x_test)})':>22} {top1:>7} "
              f"{100 * report.agreement:>8.2f} {report.outputs[0].sqnr_db:>8.2f}")


if __name__ == "__main__":
    main()

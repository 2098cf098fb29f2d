"""Quantization-aware training with tfmot, then `tfq8.convert` on scikit-learn's digits.

1. Train a small tf_keras CNN in float.
2. Post-training quantization for comparison: `tfq8.convert(float_model, samples)`.
3. Quantization-aware training: `tfmot.quantization.keras.quantize_model`, a
   couple of epochs of fine-tuning.
4. `tfq8.convert(qat_model)`: full-integer int8 with the ranges QAT learned
   (no calibration data needed), checked against the QAT float model.
5. Confirm that the int8 activation scales are those of TFLite's own QAT
   conversion, and write `digits_qat_int8.tflite` and `report.txt`.

Runs offline (the digits ship in scikit-learn's wheel):
    .venv/bin/python examples/qat.py --output_dir=out/qat
"""

from __future__ import annotations

import logging as pylogging
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from digits_data import load_digits  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "out/qat", "Where to write the model and the report.")
flags.DEFINE_integer("epochs", 15, "Float training epochs.")
flags.DEFINE_integer("qat_epochs", 3, "Quantization-aware fine-tuning epochs.")
flags.DEFINE_integer("seed", 0, "Seed for the split, the weights and the training.")

_log = pylogging.getLogger("examples.qat")


def build_model(seed: int):
    """The demo's CNN in tf_keras (tfmot quantizes tf_keras models, not Keras 3)."""
    import tf_keras  # noqa: PLC0415

    tf_keras.utils.set_random_seed(seed)
    L = tf_keras.layers
    return tf_keras.Sequential([
        tf_keras.Input((8, 8, 1), name="digit"),
        L.Conv2D(16, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(32, 3, strides=2, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10, name="logits"),
    ], name="digits_cnn")


def compile_model(model, learning_rate: float) -> None:
    import tf_keras  # noqa: PLC0415

    model.compile(tf_keras.optimizers.Adam(learning_rate),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def activation_scales(blob: bytes) -> list[tuple[tuple[float, ...], tuple[int, ...]]]:
    """Scales and zero points of the int8 activation tensors, in op order."""
    import tfq8  # noqa: PLC0415

    return [(t.scale, t.zero_point) for op in tfq8.inspect(blob).ops for t in op.outputs
            if t.dtype == "INT8"]


def main(argv):
    del argv
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415

    import tfq8  # noqa: PLC0415

    logging.set_verbosity(logging.WARNING)  # TensorFlow's export chatter ...
    for name in ("tfq8", "examples.qat"):     # ... but tfq8's and this example's steps
        pylogging.getLogger(name).setLevel(pylogging.INFO)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_digits(FLAGS.seed)

    _log.info("1. Training the float CNN for %d epochs.", FLAGS.epochs)
    model = build_model(FLAGS.seed)
    compile_model(model, 1e-3)
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=FLAGS.epochs,
              batch_size=32, verbose=0)

    _log.info("2. Post-training quantization with tfq8 (200 calibration samples).")
    ptq = tfq8.convert(model, x_train[:200])
    check_ptq = tfq8.check(ptq, reference=model, data=x_test, labels=y_test, per_tensor=False)

    _log.info("3. Quantization-aware training for %d epochs.", FLAGS.qat_epochs)
    qat = tfmot.quantization.keras.quantize_model(model)
    compile_model(qat, 1e-4)
    t0 = time.perf_counter()
    qat.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=FLAGS.qat_epochs,
            batch_size=32, verbose=0)
    qat_s = time.perf_counter() - t0

    _log.info("4. tfq8.convert(qat): QAT's ranges, no calibration data.")
    t0 = time.perf_counter()
    ours = tfq8.convert(qat)
    ours_s = time.perf_counter() - t0
    check_qat = tfq8.check(ours, reference=qat, data=x_test, labels=y_test)
    info = tfq8.inspect(ours)

    _log.info("5. TFLite's own QAT conversion, for the scales.")
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        theirs = converter.convert()
    same_scales = activation_scales(ours) == activation_scales(theirs)

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model_path = os.path.join(FLAGS.output_dir, "digits_qat_int8.tflite")
    tfq8.calibration.atomic_write(model_path, ours)
    lines = [
        "tfq8 + tfmot QAT: scikit-learn digits, tf_keras CNN -> full-integer int8 TFLite",
        f"float training {FLAGS.epochs} epochs; QAT fine-tuning {FLAGS.qat_epochs} epochs "
        f"in {qat_s:.1f} s",
        "",
        f"{'test digits (' + str(len(x_test)) + ')':<34} {'top-1':>7} {'agree':>7} {'SQNR dB':>8}",
        f"{'float (Keras)':<34} {check_ptq.reference_accuracy:7.4f}",
        f"{'tfq8 int8 from float (PTQ, auto)':<34} {check_ptq.accuracy:7.4f} "
        f"{check_ptq.agreement:7.4f} {check_ptq.outputs[0].sqnr_db:8.2f}   vs float",
        f"{'QAT float (Keras, FakeQuant)':<34} {check_qat.reference_accuracy:7.4f}",
        f"{'tfq8 int8 from QAT':<34} {check_qat.accuracy:7.4f} "
        f"{check_qat.agreement:7.4f} {check_qat.outputs[0].sqnr_db:8.2f}   vs QAT float",
        "",
        f"conversion of the QAT model: {ours_s:.2f} s, no calibration data; activation scales "
        f"and zero points equal TFLite's own QAT conversion: {same_scales}",
        f"full-integer: {info.full_integer} ({len(info.ops)} ops; inputs "
        f"{[t.dtype for t in info.inputs]}, outputs {[t.dtype for t in info.outputs]})",
        "",
        "worst tensors (tfq8 int8 vs QAT float):",
        *[f"  {t.name[:60]:<60} {t.sqnr_db:7.2f} dB" for t in check_qat.tensors[:5]],
        "",
        f"wrote {model_path} ({len(ours)} bytes)",
    ]
    text = "\n".join(lines)
    tfq8.calibration.atomic_write(os.path.join(FLAGS.output_dir, "report.txt"), text.encode())
    print(text)


if __name__ == "__main__":
    app.run(main)

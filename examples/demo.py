"""tfq8 end to end on scikit-learn's digits (offline; the data ships in the wheel).

1. Train a small Keras CNN with `tfq8.CalibrationCallback` collecting
   activation statistics (and int8 validation accuracy every `--epochs` // 2 epochs
   and after the last: epochs 10 and 20 by default).
2. `tfq8.convert(model)`: full-integer int8 `.tflite` from those statistics.
3. TFLite's own int8 conversion of the same model and samples, for comparison,
   and tfq8's with `bias_correction=True` (opt-in; not the model written).
4. `tfq8.check` them against float on the held-out test digits.
5. `tfq8.benchmark` the int8 model against float (single thread).
6. Write `digits_int8.tflite`, `report.txt`, `report.json` and `ranges.png`
   (`tfq8.plot_ranges`) to --output_dir.

Run: `make demo` (or `python examples/demo.py --output_dir=out`).
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from digits_data import load_digits  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "out", "Where to write the model and the report.")
flags.DEFINE_integer("epochs", 20, "Training epochs.")
flags.DEFINE_integer("seed", 0, "Seed for the split, the weights and the training.")


def build_model(seed: int):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="digit"),
        L.Conv2D(16, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(32, 3, strides=2, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10, name="logits"),
    ], name="digits_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _db(value: float | None) -> str:
    """An SQNR for the report: dB, inf for exact, '-' for none (model outputs)."""
    if value is None:
        return "-"
    return "inf dB" if value == float("inf") else f"{value:.2f} dB"


def _choice(auto) -> str:
    """Which methods' ranges the final model uses, with tensor counts."""
    counts: dict[str, int] = {}
    for method in auto.choice.values():
        counts[method] = counts.get(method, 0) + 1
    return ", ".join(f"{m} ({n} tensors)" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def main(argv):
    del argv
    import tfq8  # noqa: PLC0415
    from tfq8._quiet import quiet_native_stderr  # noqa: PLC0415

    # TensorFlow's start-up notices (no CUDA here, oneDNN) are not the demo's news;
    # an import that fails still raises with its message.
    with quiet_native_stderr():
        import keras  # noqa: PLC0415, F401
        from tfq8.pipeline import converter_int8  # noqa: PLC0415

    logging.set_verbosity(logging.WARNING)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_digits(FLAGS.seed)
    calib_x = x_train[:200]

    # 1. Train with the callback.
    import keras  # noqa: PLC0415

    model = build_model(FLAGS.seed)
    callback = tfq8.CalibrationCallback(
        calib_x, validation_data=(x_val, y_val), every_n_epochs=max(1, FLAGS.epochs // 2),
        verbose=0)
    int8_epochs = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (
        int8_epochs.append((epoch + 1, float(logs["val_int8_accuracy"])))
        if "val_int8_accuracy" in logs else None))
    t0 = time.perf_counter()
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=FLAGS.epochs,
              batch_size=32, verbose=0, callbacks=[callback, record])
    train_s = time.perf_counter() - t0

    # 2. tfq8's int8 model from the callback's statistics.
    t0 = time.perf_counter()
    ours = tfq8.convert(model)
    ours_s = time.perf_counter() - t0
    # 3. TFLite's own int8 model from the same samples.
    t0 = time.perf_counter()
    theirs = converter_int8(model, calib_x)
    theirs_s = time.perf_counter() - t0
    # tfq8 with bias correction (opt-in; the model written is `ours`).
    corrected = tfq8.convert(model, bias_correction=True)
    corrected_report = callback.calibration.last_bias_correction

    # 4. Check them against float on the test digits.
    check_ours = tfq8.check(ours, reference=model, data=x_test, labels=y_test)
    check_theirs = tfq8.check(theirs, reference=model, data=x_test, labels=y_test,
                              per_tensor=False)
    check_corrected = tfq8.check(corrected, reference=model, data=x_test, labels=y_test,
                                 per_tensor=False)
    # 5. Time int8 against float.
    bench = tfq8.benchmark(ours, reference=model, num_threads=1)
    info = tfq8.inspect(ours)

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model_path = os.path.join(FLAGS.output_dir, "digits_int8.tflite")
    tfq8.calibration.atomic_write(model_path, ours)
    plot_path = os.path.join(FLAGS.output_dir, "ranges.png")
    shown = len(tfq8.plot_ranges(callback.calibration, path=plot_path).axes)

    auto = callback.calibration.last_auto
    lines = [
        "tfq8 demo: scikit-learn digits, Keras CNN -> full-integer int8 TFLite",
        f"trained {FLAGS.epochs} epochs in {train_s:.1f} s with tfq8.CalibrationCallback; "
        f"int8 val accuracy by epoch: "
        + ", ".join(f"{e}: {a:.3f}" for e, a in int8_epochs),
        "",
        f"{'test digits (' + str(len(x_test)) + ')':<28} {'top-1':>7} {'agree':>7} {'SQNR dB':>8}",
        f"{'float (Keras)':<28} {check_ours.reference_accuracy:7.4f} {'':>7} {'':>8}",
        f"{'TFLite converter int8':<28} {check_theirs.accuracy:7.4f} "
        f"{check_theirs.agreement:7.4f} {check_theirs.outputs[0].sqnr_db:8.2f}",
        f"{'tfq8 int8 (auto)':<28} {check_ours.accuracy:7.4f} "
        f"{check_ours.agreement:7.4f} {check_ours.outputs[0].sqnr_db:8.2f}",
        f"{'tfq8 int8 + bias correction':<28} {check_corrected.accuracy:7.4f} "
        f"{check_corrected.agreement:7.4f} {check_corrected.outputs[0].sqnr_db:8.2f}",
        f"  ({corrected_report.summary()}; opt-in, see README)",
        "",
        f"conversion: tfq8 {ours_s:.2f} s (statistics from the callback), "
        f"TFLite converter {theirs_s:.2f} s",
        "auto: output SQNR (dB) of each method's ranges on the kept calibration samples: "
        + (", ".join(f"{m} {v:.2f}" for m, v in auto.scores.items()) if auto else "n/a")
        + (f"; chose {_choice(auto)}" if auto else ""),
        *(["  (no method beat the converter's own ranges clearly on this small model, so the "
           "int8 models match; benchmarks/README.md has models where they do not)"]
          if auto and set(auto.choice.values()) == {"minmax"} else []),
        f"full-integer: {info.full_integer} ({len(info.ops)} ops; inputs "
        f"{[t.dtype for t in info.inputs]}, outputs {[t.dtype for t in info.outputs]})",
        "an app quantizes the input and reads the output with (q: the integer code):",
        *[f"  {line}" for line in info.io_lines()],
        "",
        str(bench),
        "",
        "worst tensors (tfq8 int8 vs float), by the error each adds itself:",
        f"  {'added here':>10} {'up to here':>10}  tensor",
        *[f"  {_db(t.local_sqnr_db):>10} {_db(t.sqnr_db):>10}  {t.name}"
          for t in check_ours.tensors[:5]],
        "",
        f"wrote {model_path} ({len(ours)} bytes)",
        f"wrote {plot_path}: histograms of the {shown} tensors whose ranges differ most "
        "between methods, each method's range on them (auto's choice bold)",
    ]
    text = "\n".join(lines)
    report = {
        "float_accuracy": check_ours.reference_accuracy,
        "tfq8": check_ours.to_dict(),
        "converter": check_theirs.to_dict(),
        "tfq8_bias_correction": check_corrected.to_dict(),
        "benchmark": bench.to_dict(),
        "conversion_s": {"tfq8": ours_s, "converter": theirs_s},
        "int8_val_accuracy_by_epoch": int8_epochs,
        "model_path": model_path,
        "ranges_plot": plot_path,
    }
    tfq8.calibration.atomic_write(os.path.join(FLAGS.output_dir, "report.txt"), text.encode())
    tfq8.calibration.atomic_write(os.path.join(FLAGS.output_dir, "report.json"),
                                  json.dumps(report, indent=1, default=float).encode())
    print(text)


if __name__ == "__main__":
    app.run(main)

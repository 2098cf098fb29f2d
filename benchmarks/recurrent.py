"""Recurrent layers that are not unrolled, on Fashion-MNIST read row by row.

A Keras `LSTM` or `GRU` that is not unrolled is a loop: TFLite's converter
refuses it while the batch size is free (Keras' default), and with the batch
size fixed its int8 conversion crashes the process in TFLite's calibrator
(tensorflow issue 75140). tfq8 fixes the batch size at 1, keeps the calibrator
alive and carries the loop's variables in int8 (`tfq8/loops.py`). This script
trains (cached under `~/.cache/tfq8-benchmarks`) an `LSTM(64)`, a `GRU(64)` and
a `Bidirectional(LSTM(32))` that read each 28x28 image as 28 steps of 28
pixels, calibrates on 500 held-out training images (clean, and with 1%
corrupted frames as in `suite.py`), and prints, for TFLite's own int8 model
and tfq8's (`minmax`, `auto`): full-integer or not, float ops, top-1 on the
10,000 test images, top-1 agreement and output SQNR against float, and latency
relative to TFLite's model (one thread, XNNPACK, interleaved).

TFLite's own model here is what its converter makes when it does not crash:
`tfq8.pipeline.converter_int8`, which runs TFLite's converter as documented
with the two things it cannot do itself (the batch size fixed at 1, the
calibrator kept alive); its loops carry float.

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/recurrent.py --models=lstm,gru,bilstm
    (needs apt-get install -y dataset-fashion-mnist)
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402


def _recurrent(kind: str, units: int = 64, bidirectional: bool = False):
    def train(x: np.ndarray, y: np.ndarray):
        import keras  # noqa: PLC0415

        keras.utils.set_random_seed(0)
        layer = getattr(keras.layers, kind)(units)
        if bidirectional:
            layer = keras.layers.Bidirectional(layer)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Reshape((28, 28)),
                                  layer, keras.layers.Dense(10)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(x, y, epochs=3, batch_size=128, verbose=0)
        return model

    return train


MODELS = {"lstm": _recurrent("LSTM"), "gru": _recurrent("GRU"),
          "bilstm": _recurrent("LSTM", 32, bidirectional=True)}


def main() -> None:
    suite.compare_fmnist_models(MODELS, __doc__.splitlines()[0], cache_suffix="_rows")


if __name__ == "__main__":
    main()

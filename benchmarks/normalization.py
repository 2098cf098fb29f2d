"""Normalization layers on Fashion-MNIST: full-integer where TFLite's converter is not.

Keras' `LayerNormalization` lowers to a NEG, and `GroupNormalization` and
`UnitNormalization` to SQUAREs, that TFLite's quantizer leaves in float, so the
converter's "int8" model holds DEQUANTIZE -> op -> QUANTIZE for each. tfq8
rewrites NEG as a MUL by -1 and SQUARE as a MUL of x by x (`tfq8/rewrite.py`)
and the model is integer throughout. This script trains (cached under
`~/.cache/tfq8-benchmarks`):

* `transformer`: two attention blocks (patches of 4x4, 49 tokens, width 32;
  five LayerNorms);
* `groupnorm`: a CNN of two Conv-GroupNorm-swish blocks, global pooling and a
  UnitNormalization before the classifier;

calibrates on 500 held-out training images (clean, and with 1% corrupted
frames as in `suite.py`) and prints, for the converter's own int8 model and
tfq8's (`minmax`, `auto`): full-integer or not, float ops, top-1 on the 10,000
test images, top-1 agreement and output SQNR against float, and latency
relative to the converter's model (one thread, XNNPACK, interleaved).

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/normalization.py --models=transformer,groupnorm
    (needs apt-get install -y dataset-fashion-mnist)
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402



def _transformer(x: np.ndarray, y: np.ndarray):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input(x.shape[1:])
    h = L.Reshape((49, 32))(L.Conv2D(32, 4, strides=4)(inp))
    h = h + L.Embedding(49, 32)(keras.ops.arange(49))
    for _ in range(2):
        a = L.LayerNormalization()(h)
        h = h + L.MultiHeadAttention(2, 16)(a, a)
        a = L.LayerNormalization()(h)
        h = h + L.Dense(32)(L.Dense(64, activation="gelu")(a))
    out = L.Dense(10)(L.GlobalAveragePooling1D()(L.LayerNormalization()(h)))
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=128, verbose=0)
    return model


def _groupnorm(x: np.ndarray, y: np.ndarray):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        L.Conv2D(16, 3, padding="same"), L.GroupNormalization(4), L.Activation("swish"),
        L.MaxPooling2D(),
        L.Conv2D(32, 3, padding="same"), L.GroupNormalization(8), L.Activation("swish"),
        L.GlobalAveragePooling2D(), L.UnitNormalization(), L.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=128, verbose=0)
    return model


MODELS = {"transformer": _transformer, "groupnorm": _groupnorm}


def main() -> None:
    suite.compare_fmnist_models(MODELS, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

"""Tiny seeded models and data for the tests (no downloads, no ../shared).

Every factory is deterministic: the same seed gives the same weights and data.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402


def images(n: int = 64, shape=(16, 16, 3), seed: int = 0) -> np.ndarray:
    """Gaussian float32 images."""
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def cnn(seed: int = 0, input_shape=(16, 16, 3), classes: int = 10):
    """Conv + BatchNorm + ReLU CNN (Keras 3 Sequential)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(input_shape, name="image"),
        keras.layers.Conv2D(8, 3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes),
    ])
    # Non-trivial BN statistics, so folding is exercised.
    bn = model.layers[1]
    rng = np.random.default_rng(seed)
    bn.moving_mean.assign(rng.normal(0, 0.1, 8).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 8).astype(np.float32))
    return model


def skewed_channels_cnn(seed: int = 0):
    """Conv + BN + ReLU twice, then Dense, all weights drawn by numpy (the same in any
    process). BN scales spanning 100x make folded channels of very different sizes, so
    per-tensor weight rounding shifts the small ones' means: bias correction's case."""
    model = keras.Sequential([
        keras.Input((16, 16, 3), name="image"),
        keras.layers.Conv2D(8, 3), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            n = ws[0].shape[0]
            ws = [np.geomspace(0.02, 2.0, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                  rng.uniform(0.5, 2, n)]
        elif ws:
            ws = [rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1 else 0.1,
                             w.shape) for w in ws]
        layer.set_weights([np.asarray(w, np.float32) for w in ws])
    return model


def fixed_batch_cnn(seed: int = 0, batch: int = 4, classes: int = 10):
    """Conv + Flatten + Dense whose batch size is fixed (`keras.Input(batch_size=...)`)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), batch_size=batch, name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(classes)(keras.layers.Flatten()(x)))


def mlp(seed: int = 0, features: int = 20, classes: int = 5):
    """Dense MLP with GELU (Keras 3 Sequential)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((features,), name="features"),
        keras.layers.Dense(32, activation="gelu"),
        keras.layers.Dense(classes),
    ])


def two_in_two_out(seed: int = 0):
    """Functional model with inputs 'a' [8] and 'b' [4,4,1], outputs 'cls' and 'reg'."""
    keras.utils.set_random_seed(seed)
    a = keras.Input((8,), name="a")
    b = keras.Input((4, 4, 1), name="b")
    hb = keras.layers.Flatten()(keras.layers.Conv2D(4, 2, activation="relu")(b))
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(a), hb])
    cls = keras.layers.Dense(3, name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model({"a": a, "b": b}, {"cls": cls, "reg": reg})


def two_in_data(n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(n, 8)).astype(np.float32),
            "b": rng.normal(size=(n, 4, 4, 1)).astype(np.float32)}


def subclassed(seed: int = 0, features: int = 6):
    """A built Keras 3 subclassed model."""
    keras.utils.set_random_seed(seed)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = keras.layers.Dense(16, activation="relu")
            self.d2 = keras.layers.Dense(3)

        def call(self, x):
            return self.d2(self.d1(x))

    net = Net()
    net(np.zeros((1, features), np.float32))
    return net


def tf_keras_cnn(seed: int = 0, input_shape=(16, 16, 3), classes: int = 10):
    """The CNN built with tf_keras (Keras 2)."""
    import tf_keras  # noqa: PLC0415

    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([
        tf_keras.Input(input_shape, name="image"),
        tf_keras.layers.Conv2D(8, 3),
        tf_keras.layers.BatchNormalization(),
        tf_keras.layers.ReLU(),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(classes),
    ])


def tf_keras_lstm(seed: int = 0, steps: int = 6, features: int = 4, classes: int = 3):
    """A tf_keras LSTM with batch size 1, which TFLite fuses into UNIDIRECTIONAL_SEQUENCE_LSTM.

    The fused op keeps some tensors (its gate intermediates) to itself.
    """
    import tf_keras  # noqa: PLC0415

    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([
        tf_keras.layers.InputLayer((steps, features), batch_size=1),
        tf_keras.layers.LSTM(8),
        tf_keras.layers.Dense(classes),
    ])


def colour_labels(images_: np.ndarray, classes: int = 10) -> np.ndarray:
    """Labels from a fixed linear rule of each image's mean colour (a learnable task)."""
    w = np.random.default_rng(1234).normal(size=(images_.shape[-1], classes))
    return (images_.mean(axis=(1, 2)) @ w).argmax(1)


def tf_keras_qat_cnn(seed: int = 0, steps: int = 4, annotate_all: bool = True):
    """`tf_keras_cnn` after tfmot quantization-aware training, and its data.

    `annotate_all=True`: `tfmot.quantization.keras.quantize_model` (every tensor
    gets a FakeQuant range). False: only Conv2D, BatchNormalization and ReLU are
    annotated (`quantize_annotate_layer` + `quantize_apply`), so the pooling and
    Dense outputs have no QAT range. Trained for `steps` batches of 16 on
    `images` labelled by `colour_labels`.

    Returns:
        (qat_model, x, y): the model and its `16 * steps` training samples and labels.
    """
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415
    import tf_keras  # noqa: PLC0415

    qk = tfmot.quantization.keras
    if annotate_all:
        qat = qk.quantize_model(tf_keras_cnn(seed))
    else:
        L = tf_keras.layers
        tf_keras.utils.set_random_seed(seed)
        qat = qk.quantize_apply(tf_keras.Sequential([
            tf_keras.Input((16, 16, 3), name="image"),
            qk.quantize_annotate_layer(L.Conv2D(8, 3)),
            qk.quantize_annotate_layer(L.BatchNormalization()),
            qk.quantize_annotate_layer(L.ReLU()),
            L.GlobalAveragePooling2D(),
            L.Dense(10),
        ]))
    x = images(16 * steps, seed=seed)
    y = colour_labels(x)
    tf_keras.utils.set_random_seed(seed)
    qat.compile(tf_keras.optimizers.Adam(0.01),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return qat, x, y


def shared_path(*parts: str) -> str | None:
    """Path under ../shared if it exists (benchmark data), else None."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "shared", *parts)
    return path if os.path.exists(path) else None


def causal_self_attention(seed: int = 0, steps: int = 6, features: int = 4, classes: int = 3):
    """Self-attention whose causal mask (0 above nothing, -inf above the diagonal) is a
    non-trainable weight of its layer, as hand-written attention layers keep it."""
    keras.utils.set_random_seed(seed)

    class CausalScores(keras.layers.Layer):
        def build(self, shape):
            self.mask = self.add_weight(shape=(shape[1], shape[1]), initializer="zeros",
                                        trainable=False, name="causal_mask")
            self.mask.assign(np.triu(np.full((shape[1], shape[1]), -np.inf, np.float32), 1))

        def call(self, x):
            scores = keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))
            return keras.ops.softmax(scores + self.mask, axis=-1)

    inp = keras.Input((steps, features), name="steps")
    x = keras.layers.Dense(features)(inp)
    attended = keras.ops.matmul(CausalScores()(x), x)
    return keras.Model(inp, keras.layers.Dense(classes)(keras.layers.Flatten()(attended)))

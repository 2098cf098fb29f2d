"""scikit-learn's digits for the examples (offline: the data ships in the wheel)."""

from __future__ import annotations

import numpy as np


def load_digits(seed: int):
    """Digits as float32 [N, 8, 8, 1] in [0, 1]; a seeded train/val/test split.

    Returns:
        ((x_train, y_train), (x_val, y_val), (x_test, y_test)): 1,100 / 300 / 397 images.

    Example:
        >>> (x_train, y_train), _, (x_test, y_test) = load_digits(seed=0)
    """
    from sklearn.datasets import load_digits as sk_digits  # noqa: PLC0415

    d = sk_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1100], y[:1100]), (x[1100:1400], y[1100:1400]), (x[1400:], y[1400:])

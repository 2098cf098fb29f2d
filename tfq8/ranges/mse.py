"""`mse`: the range with the least expected quantize-dequantize squared error.

Each candidate `[lo, hi]` is nudged onto TFLite's asymmetric int8 grid exactly
as the quantizer will do, then scored on the histogram: rounding error
`scale**2 / 12` for every value inside the grid plus the exact integral of the
clipping error `(x - edge)**2` over the values outside. Exact zeros are left
out (0 is always representable). Both sides are searched independently, so
skewed tensors get asymmetric ranges.

Example:
    >>> rng = np.random.default_rng(0)
    >>> lo, hi = mse(Histogram().update(rng.standard_t(2, 100000)))
"""

from __future__ import annotations

import numpy as np

from tfq8.ranges import int8grid
from tfq8.ranges.registry import register
from tfq8.stats.histogram import Histogram


def mse_cost(hist: Histogram, *, downsample: int = 1):
    """Vectorized `(lo, hi) -> expected squared error` on `hist`.

    Args:
        hist: The tensor's histogram.
        downsample: Merge this many bins first (a cheaper, coarser estimate).
    """
    edges, counts = int8grid.downsample(*hist.density(), downsample)
    return lambda lo, hi: int8grid.expected_sq_error(edges, counts, lo, hi)


@register("mse")
def mse(hist: Histogram) -> tuple[float, float]:
    """Returns the range minimising the expected int8 squared error."""
    if hist.count == 0:
        raise ValueError("The histogram is empty: no values were recorded.")
    if hist.max <= hist.min or hist.count == hist.zeros:
        return float(hist.min), float(hist.max)
    return int8grid.search(
        mse_cost(hist), min(hist.min, 0.0), max(hist.max, 0.0),
        coarse_score=mse_cost(hist, downsample=8),
    )

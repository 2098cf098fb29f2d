"""`minmax`: the global extremes, which is what TFLite's converter uses.

With the same model and data this reproduces the converter's own activation
scales and zero points exactly: tfq8's collector takes the extremes from
TFLite's own calibrator (see `tfq8.stats.collect`).

Example:
    >>> minmax(Histogram().update(np.array([-1.0, 2.0])))
    (-1.0, 2.0)
"""

from __future__ import annotations

from tfq8.ranges.registry import register
from tfq8.stats.histogram import Histogram


@register("minmax")
def minmax(hist: Histogram) -> tuple[float, float]:
    """Returns the smallest and largest value recorded."""
    if hist.count == 0:
        raise ValueError("The histogram is empty: no values were recorded.")
    return float(hist.min), float(hist.max)

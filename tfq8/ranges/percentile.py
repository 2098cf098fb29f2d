"""`percentile`: clip the extreme tails at a fixed percentile.

For a non-negative tensor only the top is clipped (the bottom stays at the
minimum, usually 0); for a signed tensor both sides are clipped, each at its
own percentile (`100 - p` below, `p` above), so the range stays asymmetric like
TFLite's int8 grid.

Example:
    >>> h = Histogram().update(np.arange(10001, dtype=np.float32))
    >>> percentile(h, percentile=99.0)
    (0.0, 9900.99)
"""

from __future__ import annotations

from tfq8.ranges import int8grid
from tfq8.ranges.registry import register
from tfq8.stats.histogram import Histogram

DEFAULT_PERCENTILE = 99.99


@register("percentile")
def percentile(hist: Histogram, *, percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    """Range from the `percentile` (and `100 - percentile`) of the values.

    Args:
        hist: The tensor's histogram.
        percentile: In (50, 100]; 100 gives min/max.

    Raises:
        ValueError: If `percentile` is outside (50, 100].
    """
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(
            f"percentile must be in (50, 100]. Received: percentile={percentile!r}"
        )
    edges, counts = hist.density(drop_zeros=False)
    if hist.max <= hist.min:
        return float(hist.min), float(hist.max)
    q = float(percentile) / 100.0
    hi = int8grid.quantile(edges, counts, q) if hist.max > 0 else float(hist.max)
    lo = int8grid.quantile(edges, counts, 1.0 - q) if hist.min < 0 else float(hist.min)
    return min(lo, hist.max), max(hi, hist.min)

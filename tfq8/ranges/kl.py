"""`kl`: entropy calibration on TFLite's asymmetric int8 grid.

For a candidate range the int8 grid has 256 levels. Each level is split into
`SUBBINS` equal sub-bins and the histogram's mass is spread over them (uniform
inside each histogram bin):

    values:      |<- tail ->[ level 0 | level 1 | ... | level 255 ]<- tail ->|
    P (ref.)     tails folded into the first and last sub-bin
    Q (int8)     each level's in-range mass spread evenly over the
                 sub-bins of that level that hold any mass

The method picks the range minimising KL(P || Q): too wide a range wastes levels
(Q smears the shape inside each level), too narrow a one clips (P's edge
sub-bins hold the tails, which Q cannot). Unlike the symmetric |x| searches of
TensorRT and ONNX Runtime, the two sides are searched independently, so ReLU
outputs and skewed signed tensors get asymmetric ranges; exact zeros are
dropped first (0 is always exact on TFLite's grid), which takes care of the
ReLU spike; and a candidate must span at least `MIN_BINS_PER_RANGE` histogram
bins, so KL never scores shape it cannot resolve (the ONNX Runtime default
that collapses to min/max has a single candidate).

Example:
    >>> rng = np.random.default_rng(0)
    >>> lo, hi = kl(Histogram().update(np.abs(rng.standard_cauchy(100000))))
"""

from __future__ import annotations

import numpy as np

from tfq8.ranges import int8grid
from tfq8.ranges.registry import register
from tfq8.stats.histogram import Histogram

SUBBINS = 8
MIN_BINS_PER_RANGE = 256
_EPS = 1e-10


def kl_cost(hist: Histogram, *, chunk: int = 64, subbins: int = SUBBINS):
    """Vectorized `(lo, hi) -> KL(P || Q)` on `hist` (see module docstring).

    Args:
        hist: The tensor's histogram.
        chunk: Candidates evaluated at once (bounds memory).
        subbins: Sub-bins per int8 level (fewer: a cheaper, coarser estimate).
    """
    edges, counts = hist.density()
    at, total = int8grid.cdf(edges, counts)
    sub = (np.arange((int8grid.LEVELS + 1) * subbins + 1) - subbins / 2) / subbins

    def cost(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        lo = np.atleast_1d(lo)
        hi = np.atleast_1d(hi)
        out = np.empty(lo.shape)
        for start in range(0, lo.size, chunk):
            sl = slice(start, start + chunk)
            scale, _, rep_lo, _ = int8grid.nudge(lo[sl], hi[sl])
            # Sub-bin edges: level j spans rep_lo + (j -/+ 0.5) * scale.
            points = rep_lo[:, None] + sub[None, :] * scale[:, None]
            cum = at(points)
            inner = np.diff(cum, axis=1)  # (C, 256 * subbins)
            p = inner.copy()
            p[:, 0] += cum[:, 0]  # mass below the grid
            p[:, -1] += total - cum[:, -1]  # mass above the grid
            levels = inner.reshape(len(inner), -1, subbins)
            occupied = levels > _EPS * total
            n_occ = occupied.sum(axis=2, keepdims=True)
            q = occupied * (levels.sum(axis=2, keepdims=True) / np.maximum(n_occ, 1))
            q = q.reshape(p.shape)
            p /= np.maximum(p.sum(axis=1, keepdims=True), _EPS)
            q /= np.maximum(q.sum(axis=1, keepdims=True), _EPS)
            np.maximum(q, _EPS, out=q)
            # sum of p * log(p / q) over p > 0, in place
            terms = np.divide(p, q, out=np.ones_like(p), where=p > 0)
            np.log(terms, out=terms)
            terms *= p
            out[sl] = terms.sum(axis=1)
        return out

    return cost


@register("kl")
def kl(hist: Histogram) -> tuple[float, float]:
    """Returns the range minimising KL divergence between float and int8.

    Candidates must span at least `MIN_BINS_PER_RANGE` histogram bins, so on a
    histogram with fewer occupied bins than that (`max_bins` <= 256, or a tensor
    whose values occupy few bins) there is nothing to resolve and the result is
    the min/max range. Calibrate with the default `max_bins` for KL.
    """
    if hist.count == 0:
        raise ValueError("The histogram is empty: no values were recorded.")
    if hist.max <= hist.min or hist.count == hist.zeros:
        return float(hist.min), float(hist.max)
    min_width = MIN_BINS_PER_RANGE * hist.width
    lo_max, hi_max = min(hist.min, 0.0), max(hist.max, 0.0)
    if hi_max - lo_max <= min_width:
        return float(hist.min), float(hist.max)
    return int8grid.search(
        kl_cost(hist), lo_max, hi_max,
        valid=lambda lo, hi: (hi - lo) >= min_width,
    )

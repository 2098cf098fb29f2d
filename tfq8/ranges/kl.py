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
            points = np.multiply(sub[None, :], scale[:, None])
            points += rep_lo[:, None]
            cum = at(points)
            p = np.diff(cum, axis=1)  # (C, 256 * subbins)
            levels = p.reshape(len(p), -1, subbins)
            occupied = levels > _EPS * total
            q = occupied * (_level_sums(levels) / np.maximum(_level_counts(occupied), 1))
            q = q.reshape(p.shape)
            p[:, 0] += cum[:, 0]  # mass below the grid (Q above holds only the grid's own)
            p[:, -1] += total - cum[:, -1]  # mass above the grid
            p /= np.maximum(p.sum(axis=1, keepdims=True), _EPS)
            q /= np.maximum(q.sum(axis=1, keepdims=True), _EPS)
            np.maximum(q, _EPS, out=q)
            # sum of p * log(p / q) over p > 0 (a term of 1 where p <= 0 logs to 0)
            terms = np.where(p > 0, np.divide(p, q), 1.0)
            np.log(terms, out=terms)
            terms *= p
            out[sl] = terms.sum(axis=1)
        return out

    return cost


def _level_sums(levels: np.ndarray) -> np.ndarray:
    """`levels.sum(axis=2, keepdims=True)`, bit for bit, several times faster.

    numpy sums 8 contiguous values pairwise, `((a0 + a1) + (a2 + a3)) + ((a4 +
    a5) + (a6 + a7))`; written out, the same additions run on whole slices
    instead of one short row at a time. Other sub-bin counts use numpy's sum.
    """
    if levels.shape[2] != 8:
        return levels.sum(axis=2, keepdims=True)
    pairs = levels[:, :, 0::2] + levels[:, :, 1::2]
    quads = pairs[:, :, 0::2] + pairs[:, :, 1::2]
    return quads[:, :, :1] + quads[:, :, 1:]


def _level_counts(occupied: np.ndarray) -> np.ndarray:
    """`occupied.sum(axis=2, keepdims=True)` of a C-contiguous boolean array.

    With 8 sub-bins a level's flags are the 8 bytes of one uint64: multiplying
    by 0x0101... adds them all into its top byte (at most 8, so no carry).
    """
    if occupied.shape[2] != 8 or not occupied.flags.c_contiguous:
        return occupied.sum(axis=2, keepdims=True)
    words = occupied.view(np.uint64)
    return (words * np.uint64(0x0101010101010101)) >> np.uint64(56)


@register("kl")
def kl(hist: Histogram) -> tuple[float, float]:
    """Returns the range minimising KL divergence between float and int8.

    Candidates must span at least `MIN_BINS_PER_RANGE` histogram bins of the
    span the values occupy (exact zeros aside), so on a histogram with fewer
    occupied bins than that (`max_bins` <= 256, or a tensor
    whose values occupy few bins) there is nothing to resolve and the result is
    the min/max range. Calibrate with the default `max_bins` for KL.
    """
    if hist.count == 0:
        raise ValueError("The histogram is empty: no values were recorded.")
    if hist.max <= hist.min or hist.count == hist.zeros:
        return float(hist.min), float(hist.max)
    min_width = MIN_BINS_PER_RANGE * hist.width
    lo_data, hi_data = _value_span(hist)
    if hi_data - lo_data <= min_width:
        return float(hist.min), float(hist.max)

    def valid(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.minimum(hi, hi_data) - np.maximum(lo, lo_data) >= min_width

    return int8grid.search(kl_cost(hist), min(lo_data, 0.0), max(hi_data, 0.0), valid=valid)


def _value_span(hist: Histogram) -> tuple[float, float]:
    """The span of the bins holding nonzero values, within `[hist.min, hist.max]`.

    It is narrower than `[hist.min, hist.max]` where the extremes came from
    another observer (`Histogram.set_extremes`): TFLite's calibrator records
    the input of an in-place ADD after the ADD has overwritten it, so a
    Rescaling's MUL whose values lie in [0, 2] carries the extremes [-1, 2].
    A candidate that covers `MIN_BINS_PER_RANGE` bins of such an empty margin
    but almost none of the values leaves them all in the clipped tail, whose
    sub-bin Q matches exactly: a KL of 0, the best score, for a range that
    clips every value.
    """
    edges, counts = hist.density()
    held = np.flatnonzero(counts > 0)
    if held.size == 0:  # only exact zeros
        return float(hist.min), float(hist.max)
    return float(edges[held[0]]), float(edges[held[-1] + 1])

"""TFLite's asymmetric int8 grid and the expected error of a range on a histogram.

TFLite activations are int8 with a zero point: a range `[lo, hi]` is first
widened to include 0, then `scale = (hi - lo) / 255` and the zero point is
rounded so that 0 is exact ("nudging"). The representable values are
`(q - zero_point) * scale` for `q` in [-128, 127]. Range methods score
candidates on this exact grid rather than on an idealised symmetric one.

Example:
    >>> scale, zp, lo, hi = nudge(np.array([-1.0]), np.array([3.0]))
"""

from __future__ import annotations

import numpy as np

QMIN, QMAX = -128, 127
LEVELS = QMAX - QMIN  # 255 steps between 256 values


def nudge(lo: np.ndarray, hi: np.ndarray):
    """TFLite's nudged int8 grid for candidate ranges (vectorized).

    Args:
        lo: Candidate minima.
        hi: Candidate maxima.

    Returns:
        `(scale, zero_point, rep_lo, rep_hi)`: step, zero point and the smallest
        and largest representable values, each shaped like the inputs.
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    scale = (hi - lo) / LEVELS
    safe = np.where(scale > 0, scale, 1.0)
    zero_point = np.clip(np.round(QMIN - lo / safe), QMIN, QMAX)
    rep_lo = (QMIN - zero_point) * scale
    rep_hi = (QMAX - zero_point) * scale
    return scale, zero_point, rep_lo, rep_hi


def _rounding_antiderivative(u: np.ndarray) -> np.ndarray:
    """Antiderivative of `(u - round(u))**2` (continuous, `G(0) = 0`).

    The squared rounding error in units of the step is the periodic parabola
    `r(u)**2` with `r(u) = u - floor(u + 1/2)`; it integrates to 1/12 per step.
    """
    k = np.floor(u + 0.5)
    r = u - k
    return k / 12 + (r**3 + 0.125) / 3


def expected_sq_error(
    edges: np.ndarray,
    counts: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    chunk: int = 64,
) -> np.ndarray:
    """Mean squared quantize-dequantize error of each candidate range.

    Values are taken as uniform inside each histogram bin (a bin of zero width
    is a point mass). The error is integrated exactly under that assumption:
    inside the nudged grid, the rounding error `(x - round(x))**2` (a periodic
    parabola, see `_rounding_antiderivative`); beyond it, the clipping error
    `(x - edge)**2`. So a bin many steps wide contributes about
    `scale**2 / 12` per value, a bin narrower than a step contributes the
    error of where it actually sits on the grid, and data that already lies on
    the grid (integer pixels, for example) is scored as the exact fit it is.

    Args:
        edges: Bin edges, `len(counts) + 1`, non-decreasing.
        counts: Values per bin (exact zeros removed: they carry no error).
        lo: Candidate minima, 1-D.
        hi: Candidate maxima, 1-D, same length.
        chunk: Candidates evaluated at once (bounds memory).

    Returns:
        Expected squared error per value (zeros excluded), per candidate.
    """
    total = max(float(counts.sum()), 1.0)
    occupied = counts > 0  # empty bins add nothing: skip them
    left, right, counts = edges[:-1][occupied], edges[1:][occupied], counts[occupied]
    width = right - left
    point = width <= 0
    safe_width = np.where(point, 1.0, width)
    lo = np.atleast_1d(np.asarray(lo, np.float64))
    hi = np.atleast_1d(np.asarray(hi, np.float64))
    out = np.empty(lo.shape, np.float64)
    for start in range(0, lo.size, chunk):
        sl = slice(start, start + chunk)
        scale, zero_point, rep_lo, rep_hi = nudge(lo[sl], hi[sl])
        s = np.where(scale > 0, scale, 1.0)[:, None]
        a = rep_lo[:, None]
        b = rep_hi[:, None]
        # Clipping: (x - b)**2 above the grid, (a - x)**2 below, integrated
        # over the part of each bin beyond the grid.
        hi_cube = (np.maximum(right - b, 0.0) ** 3 - np.maximum(left - b, 0.0) ** 3) / (3 * safe_width)
        lo_cube = (np.maximum(a - left, 0.0) ** 3 - np.maximum(a - right, 0.0) ** 3) / (3 * safe_width)
        clip = np.where(point, np.maximum(left - b, 0.0) ** 2 + np.maximum(a - left, 0.0) ** 2,
                        hi_cube + lo_cube)
        # Rounding: over the part of each bin inside [a, b], in grid units.
        u1 = (np.clip(left, a, b) - a) / s
        u2 = (np.clip(right, a, b) - a) / s
        spread = (_rounding_antiderivative(u2) - _rounding_antiderivative(u1)) * s**3 / safe_width
        r = u1 - np.floor(u1 + 0.5)
        rounding = np.where(point, (r * s) ** 2, spread)
        per_bin = counts * (rounding + clip)
        out[sl] = per_bin.sum(axis=1) / total
    return out


def downsample(edges: np.ndarray, counts: np.ndarray, factor: int):
    """Merges `factor` neighbouring bins (the last group may be shorter)."""
    if factor <= 1 or len(counts) <= factor:
        return edges, counts
    n = len(counts)
    starts = np.arange(0, n, factor)
    return np.append(edges[starts], edges[-1]), np.add.reduceat(counts, starts)


def cdf(edges: np.ndarray, counts: np.ndarray):
    """Piecewise-linear cumulative count function of a histogram."""
    cum = np.concatenate([[0.0], np.cumsum(counts)])

    def at(x: np.ndarray) -> np.ndarray:
        return np.interp(x, edges, cum)

    return at, float(cum[-1])


def quantile(edges: np.ndarray, counts: np.ndarray, q: float) -> float:
    """Value below which a fraction `q` of the histogram's mass lies."""
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    if cum[-1] <= 0:
        return float(edges[0])
    target = min(max(q, 0.0), 1.0) * cum[-1]
    i = int(np.clip(np.searchsorted(cum, target, side="left") - 1, 0, len(counts) - 1))
    frac = (target - cum[i]) / counts[i] if counts[i] > 0 else 0.0
    return float(edges[i] + frac * (edges[i + 1] - edges[i]))


def search(score, lo_max: float, hi_max: float, *, coarse: int = 24, fine: int = 24,
           rounds: int = 2, min_ratio: float = 1 / 256, valid=None,
           coarse_score=None) -> tuple[float, float]:
    """Minimises `score(lo, hi)` over ranges inside `[lo_max, hi_max]`.

    Candidates shrink each side geometrically from the extreme down to
    `min_ratio` of it (a side whose extreme is 0 stays 0); the best coarse
    candidate is refined one side at a time on finer grids around it. Ties go to
    the wider range, so flat scores never clip.

    Args:
        score: Vectorized `(lo, hi) -> cost` over 1-D arrays.
        lo_max: Most negative candidate (the tensor's min, <= 0).
        hi_max: Most positive candidate (the tensor's max, >= 0).
        coarse: Candidates per side on the first grid.
        fine: Candidates per side in each refinement.
        rounds: Refinement rounds.
        min_ratio: Smallest fraction of an extreme a side may shrink to.
        valid: Optional vectorized `(lo, hi) -> bool mask` of admissible candidates.
        coarse_score: Optional cheaper approximation of `score` for the first grid.

    Returns:
        The best `(lo, hi)`.
    """
    ratios = np.concatenate([np.geomspace(min_ratio, 1.0, coarse)])
    lo_c = lo_max * ratios if lo_max < 0 else np.zeros(1)
    hi_c = hi_max * ratios if hi_max > 0 else np.zeros(1)

    def best_of(lo, hi, fn=score):
        cost = np.asarray(fn(lo, hi), np.float64)
        if valid is not None:
            cost = np.where(valid(lo, hi), cost, np.inf)
        if not np.isfinite(cost).any():
            return None
        # Ties (within float noise) go to the widest candidate.
        width = hi - lo
        best = np.min(cost)
        tied = np.flatnonzero(cost <= best * (1 + 1e-12) + 1e-300)
        i = tied[np.argmax(width[tied])]
        return float(lo[i]), float(hi[i]), float(cost[i])

    grid_lo, grid_hi = np.meshgrid(lo_c, hi_c, indexing="ij")
    found = best_of(grid_lo.ravel(), grid_hi.ravel(), coarse_score or score)
    if found is None:
        return float(lo_max), float(hi_max)
    lo, hi, _ = found
    step = ratios[1] / ratios[0] if len(ratios) > 1 else 2.0
    for _ in range(rounds):
        for side in ("hi", "lo"):
            extreme = hi_max if side == "hi" else lo_max
            current = hi if side == "hi" else lo
            if extreme == 0:
                continue
            cand = np.clip(current * np.geomspace(1 / step, step, fine),
                           min(extreme, 0), max(extreme, 0))
            cand = np.unique(np.concatenate([cand, [current]]))
            if side == "hi":
                found = best_of(np.full_like(cand, lo), cand)
            else:
                found = best_of(cand, np.full_like(cand, hi))
            if found is not None:
                lo, hi, _ = found
        step = step ** (2 / fine) if fine > 1 else step
    return lo, hi

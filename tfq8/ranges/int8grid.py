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
    cube = r * r
    cube *= r
    cube += 0.125
    cube /= 3
    k /= 12
    k += cube
    return k


def expected_sq_error(
    edges: np.ndarray,
    counts: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    chunk: int = 256,
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

    Cost: the clipping error of the bins wholly beyond the grid comes from
    prefix sums of their moments (a bin's integral of `(x - t)**2` is a
    quadratic in `t`), so only the straddling bin is integrated directly; the
    rounding error needs the antiderivative once per histogram edge and
    candidate, then one matrix product with the bin densities.

    Args:
        edges: Bin edges, `len(counts) + 1`, non-decreasing.
        counts: Values per bin (exact zeros removed: they carry no error).
        lo: Candidate minima, 1-D.
        hi: Candidate maxima, 1-D, same length.
        chunk: Candidates evaluated at once (bounds memory).

    Returns:
        Expected squared error per value (zeros excluded), per candidate.

    Example:
        >>> edges, counts = np.linspace(-1, 3, 401), np.ones(400)
        >>> expected_sq_error(edges, counts, np.array([-1.0]), np.array([3.0]))
        array([2.05...e-05])
    """
    edges = np.asarray(edges, np.float64)
    counts = np.asarray(counts, np.float64)
    total = max(float(counts.sum()), 1.0)
    lo = np.atleast_1d(np.asarray(lo, np.float64))
    hi = np.atleast_1d(np.asarray(hi, np.float64))
    scale, _, rep_lo, rep_hi = nudge(lo, hi)
    step = np.where(scale > 0, scale, 1.0)
    out = np.zeros(lo.shape, np.float64)
    width = np.diff(edges)
    point = (width <= 0) & (counts > 0)
    spread = (width > 0) & (counts > 0)
    if point.any():  # point masses: the error where each one sits
        x, c = edges[:-1][point], counts[point]
        a, b, s = rep_lo[:, None], rep_hi[:, None], step[:, None]
        u = (np.clip(x, a, b) - a) / s
        r = (u - np.floor(u + 0.5)) * s
        err = np.where(x > b, (x - b) ** 2, np.where(x < a, (a - x) ** 2, r * r))
        out += err @ c
    if spread.any():
        out += _clip_error(edges[:-1][spread], edges[1:][spread], counts[spread], rep_lo, rep_hi)
        # Rounding, over the span of edges that holds mass; empty bins weigh 0.
        first, last = np.flatnonzero(spread)[[0, -1]]
        density = np.where(spread, counts / np.where(width > 0, width, 1.0), 0.0)
        density = density[first : last + 1]
        span = edges[first : last + 2]
        for start in range(0, lo.size, chunk):
            sl = slice(start, start + chunk)
            a, b = rep_lo[sl, None], rep_hi[sl, None]
            u = np.clip(span, a, b)
            u -= a
            u /= step[sl, None]
            g = _rounding_antiderivative(u)
            out[sl] += (np.diff(g, axis=1) @ density) * step[sl] ** 3
    return out / total


def _clip_error(left: np.ndarray, right: np.ndarray, counts: np.ndarray,
                a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Summed clipping error below `a` and above `b` of uniform bins of positive width.

    A bin `[l, r]` holding `c` values wholly beyond `t` contributes
    `c * (t**2 - t*(l + r) + (l*l + l*r + r*r) / 3)`, a quadratic in `t`, so
    suffix (above) and prefix (below) sums of `c`, `c*(l + r)` and
    `c*(l*l + l*r + r*r)/3` give all such bins at once; the one bin straddling
    `t` is integrated directly. Sums run from the tail inwards, so their
    rounding error is relative to the tail, not to the whole tensor.
    """
    n = len(counts)
    density = counts / (right - left)
    moments = np.stack([counts, counts * (left + right),
                        counts * (left * left + left * right + right * right) / 3])
    below = np.concatenate([np.zeros((3, 1)), np.cumsum(moments, axis=1)], axis=1)
    above = np.concatenate([np.cumsum(moments[:, ::-1], axis=1)[:, ::-1], np.zeros((3, 1))],
                           axis=1)
    jb = np.searchsorted(left, b, "left")  # first bin wholly above b
    err = b * b * above[0, jb] - b * above[1, jb] + above[2, jb]
    kb = np.maximum(jb - 1, 0)
    err += np.where((jb > 0) & (right[kb] > b), density[kb] * np.maximum(right[kb] - b, 0) ** 3 / 3, 0)
    ja = np.searchsorted(right, a, "right")  # bins wholly below a
    err += a * a * below[0, ja] - a * below[1, ja] + below[2, ja]
    ka = np.minimum(ja, n - 1)
    err += np.where((ja < n) & (left[ka] < a), density[ka] * np.maximum(a - left[ka], 0) ** 3 / 3, 0)
    return err


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
    ratios = np.geomspace(min_ratio, 1.0, coarse)
    lo_c = lo_max * ratios if lo_max < 0 else np.zeros(1)
    hi_c = hi_max * ratios if hi_max > 0 else np.zeros(1)

    def best_of(lo, hi, fn=score):
        if valid is not None:  # score admissible candidates only
            ok = np.asarray(valid(lo, hi), bool)
            lo, hi = lo[ok], hi[ok]
        if lo.size == 0:
            return None
        cost = np.asarray(fn(lo, hi), np.float64)
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

"""A streaming, growing, mergeable histogram on a power-of-two grid.

Bin `k` covers `[k * 2**e, (k + 1) * 2**e)` for an integer exponent `e`. The
exponent is the smallest one (not below `MIN_EXPONENT`) for which the observed
range fits in `max_bins` bins. When new values widen the range, bins are added
at the same width; when the range no longer fits, neighbouring bins are merged
in pairs (the exponent grows by one). Because the grids are nested, merging
loses no counts and never moves a value to a bin it was not in, so the result
depends only on the multiset of values seen: any order, batching or merge of
partial histograms equals one pass over all the data. Memory is bounded by
`max_bins` counters whatever the number of samples.

Besides the bins the histogram keeps the exact extremes, the count and the
number of exact zeros (TFLite's int8 grid always represents 0 exactly, so range
methods treat the ReLU spike at zero as free of error).

Example:
    >>> h = Histogram()
    >>> h.update(np.array([0.0, 0.5, 1.0], np.float32))
    Histogram(count=3, min=0, max=1, bins=2049, width=2**-11)
    >>> h.update(np.array([3.0], np.float32))  # the range grows; the bins widen
    Histogram(count=4, min=0, max=3, bins=3073, width=2**-10)
    >>> h.count, h.min, h.max, h.zeros
    (4, 0.0, 3.0, 1)
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from tfq8 import _args

MIN_EXPONENT = -64
DEFAULT_MAX_BINS = 4096
MIN_BINS = 16
MAX_BINS = 1 << 16  # 512 KiB of counts per tensor
_CHUNK = 1 << 22


def _grid_index(value: float, exponent: int) -> int:
    """`floor(value / 2**exponent)`, exact also where the quotient underflows."""
    k = math.floor(math.ldexp(value, -exponent))
    return -1 if value < 0 and k >= 0 else k


class Histogram:
    """Streaming histogram with exact extremes; see the module docstring.

    Attributes:
        max_bins: Upper bound on the number of bins.
        exponent: Bin width is `2.0 ** exponent` (None until data arrives).
        offset: Grid index of the first bin.
        counts: int64 counts per bin.
        count: Number of values seen.
        zeros: Number of values exactly equal to zero.
        min: Smallest value seen (inf when empty).
        max: Largest value seen (-inf when empty).
    """

    def __init__(self, max_bins: int = DEFAULT_MAX_BINS):
        self.max_bins = _args.integer("max_bins", max_bins, minimum=MIN_BINS)
        self.exponent: int | None = None
        self.offset = 0
        self.counts = np.zeros(0, np.int64)
        self.count = 0
        self.zeros = 0
        self.min = math.inf
        self.max = -math.inf

    # ------------------------------------------------------------------ state
    @property
    def width(self) -> float:
        """Bin width."""
        if self.exponent is None:
            raise RuntimeError("The histogram is empty; update() it first.")
        return math.ldexp(1.0, self.exponent)

    @property
    def edges(self) -> np.ndarray:
        """Bin edges (len(counts) + 1), on the power-of-two grid."""
        k = np.arange(self.offset, self.offset + len(self.counts) + 1, dtype=np.float64)
        return k * self.width

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.max_bins == other.max_bins
            and self.exponent == other.exponent
            and self.offset == other.offset
            and self.count == other.count
            and self.zeros == other.zeros
            and self.min == other.min
            and self.max == other.max
            and np.array_equal(self.counts, other.counts)
        )

    def __repr__(self) -> str:
        if self.count == 0:
            return f"Histogram(empty, max_bins={self.max_bins})"
        return (
            f"Histogram(count={self.count}, min={self.min:.6g}, max={self.max:.6g}, "
            f"bins={len(self.counts)}, width=2**{self.exponent})"
        )

    # ------------------------------------------------------------- updating
    def _span(self, lo: float, hi: float, exponent: int) -> tuple[int, int]:
        return _grid_index(lo, exponent), _grid_index(hi, exponent)

    def _exponent_for(self, lo: float, hi: float) -> int:
        """Exponent >= MIN_EXPONENT whose grid holds [lo, hi] in max_bins bins.

        A deterministic function of `(lo, hi)`, monotone in the range, so the
        exponent after any sequence of updates and merges is that of the
        overall range.
        """
        # hi - lo may overflow float64 for extreme inputs: halve both first.
        span = math.ldexp(hi, -1) - math.ldexp(lo, -1)
        if span > 0:
            e = max(MIN_EXPONENT, math.ceil(math.log2(span / (self.max_bins - 1))) + 1)
        else:
            e = MIN_EXPONENT
        # Keep grid indices exact in float64 and int64 (|x| / 2**e < 2**50).
        magnitude = max(abs(lo), abs(hi))
        if magnitude > 0:
            e = max(e, math.frexp(magnitude)[1] - 50)
        # Guard the floor alignment and huge magnitudes at tiny exponents.
        while True:
            a, b = self._span(lo, hi, e)
            if b - a + 1 <= self.max_bins:
                return e
            e += 1

    def _fit(self, lo: float, hi: float, exponent: int,
             grids: tuple["Histogram", ...]) -> tuple[int, int, int]:
        """Smallest exponent >= `exponent` whose grid holds [lo, hi] and every
        occupied bin of `grids` in max_bins bins; returns (exponent, first, last).

        The existing bins are covered too, not only [lo, hi]: after
        `set_extremes` the recorded extremes may lie inside the binned values,
        and a grid computed from them alone would drop or misplace counts.
        """
        e = exponent
        while True:
            first, last = self._span(lo, hi, e)
            for g in grids:
                if g.exponent is None or not len(g.counts):
                    continue
                shift = e - g.exponent  # >= 0: grids only coarsen
                first = min(first, g.offset >> shift)
                last = max(last, (g.offset + len(g.counts) - 1) >> shift)
            if last - first + 1 <= self.max_bins:
                return e, first, last
            e += 1

    def _regrid(self, exponent: int, first: int, last: int) -> None:
        """Moves the counts onto grid `exponent` with bins `first..last`."""
        new = np.zeros(last - first + 1, np.int64)
        if len(self.counts):
            shift = exponent - self.exponent
            old = np.arange(self.offset, self.offset + len(self.counts), dtype=np.int64)
            idx = (old >> shift) - first  # floor division by 2**shift
            nz = self.counts != 0
            if nz.any() and (idx[nz].min() < 0 or idx[nz].max() >= len(new)):
                raise AssertionError("internal error: regrid would drop counts")
            np.add.at(new, idx[nz], self.counts[nz])
        self.exponent, self.offset, self.counts = exponent, first, new

    def update(self, values: np.ndarray) -> "Histogram":
        """Adds values (any shape); returns self.

        Raises:
            ValueError: If any value is NaN or infinite.
        """
        x = np.asarray(values).reshape(-1)
        if x.size == 0:
            return self
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(
                f"values must be finite. Received: {bad} NaN/Inf of {x.size} values."
            )
        new_lo, new_hi = min(lo, self.min), max(hi, self.max)
        exponent = self._exponent_for(new_lo, new_hi)
        if self.exponent is not None:
            exponent = max(exponent, self.exponent)
        self._regrid(*self._fit(new_lo, new_hi, exponent, (self,)))
        # Scaling by a power of two is exact in float32 and float64 alike, and
        # |x| / 2**e < 2**50 keeps floor() exact, so float32 data stays float32.
        # (A float32 scale must itself be a normal float32: 2**-e within range.)
        if x.dtype not in (np.float32, np.float64) or (
                x.dtype == np.float32 and not -100 < self.exponent < 100):
            x = x.astype(np.float64)
        scale = x.dtype.type(math.ldexp(1.0, -self.exponent))
        # With bins wider than 1, a tiny negative value times the scale can
        # underflow to -0.0 and floor to bin 0 instead of bin -1.
        underflow = self.exponent > 0 and lo < 0
        for start in range(0, x.size, _CHUNK):
            chunk = x[start : start + _CHUNK]
            scaled = np.multiply(chunk, scale)
            np.floor(scaled, out=scaled)
            idx = scaled.astype(np.int64)
            if underflow:
                np.minimum(idx, -1, out=idx, where=chunk < 0)
            idx -= self.offset
            self.counts += np.bincount(idx, minlength=len(self.counts))
        self.count += int(x.size)
        self.zeros += int(x.size - np.count_nonzero(x))  # no temporary array
        self.min, self.max = new_lo, new_hi
        return self

    def merge(self, other: "Histogram") -> "Histogram":
        """Adds another histogram's counts into this one; returns self."""
        if not isinstance(other, Histogram):
            raise TypeError(
                f"merge() expects a Histogram. Received: {type(other).__name__}"
            )
        if other.count == 0:
            return self
        theirs = other.copy()
        lo, hi = min(self.min, other.min), max(self.max, other.max)
        exponent = max(
            [self._exponent_for(lo, hi)]
            + [h.exponent for h in (self, theirs) if h.exponent is not None]
        )
        grid = self._fit(lo, hi, exponent, (self, theirs))
        theirs._regrid(*grid)
        self._regrid(*grid)
        self.counts += theirs.counts
        self.count += theirs.count
        self.zeros += theirs.zeros
        self.min, self.max = lo, hi
        return self

    def set_extremes(self, lo: float, hi: float) -> "Histogram":
        """Sets the exact extremes (from another observer of the same values).

        The grid is widened if needed so that every bin stays inside it; counts
        are unchanged. Used to adopt TFLite's calibrator's own rounding.
        """
        if self.count == 0:
            raise RuntimeError("The histogram is empty; update() it first.")
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"Expected finite lo <= hi. Received: lo={lo}, hi={hi}")
        new_lo, new_hi = min(lo, self.min), max(hi, self.max)
        exponent = max(self._exponent_for(new_lo, new_hi), self.exponent)
        self._regrid(*self._fit(new_lo, new_hi, exponent, (self,)))
        self.min, self.max = lo, hi
        return self

    def copy(self) -> "Histogram":
        """A deep copy."""
        h = Histogram(self.max_bins)
        h.exponent, h.offset, h.counts = self.exponent, self.offset, self.counts.copy()
        h.count, h.zeros, h.min, h.max = self.count, self.zeros, self.min, self.max
        return h

    # ------------------------------------------------------- range methods
    def density(self, *, drop_zeros: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Edges clipped to [min, max] and float counts, for range methods.

        Args:
            drop_zeros: Remove the exact zeros from the bin holding 0 (they are
                represented exactly by any TFLite int8 range).

        Returns:
            `(edges, counts)` with `len(edges) == len(counts) + 1`; values are
            assumed uniform inside each bin.
        """
        if self.count == 0:
            raise ValueError("The histogram is empty: no values were recorded.")
        edges = self.edges
        counts = self.counts.astype(np.float64)
        if drop_zeros and self.zeros:
            zero_bin = -self.offset
            if 0 <= zero_bin < len(counts):
                counts[zero_bin] -= self.zeros
        edges = np.clip(edges, self.min, self.max)
        return edges, counts

    # ------------------------------------------------------ serialization
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays for `np.savez` (no pickle)."""
        meta = [self.max_bins, -1 if self.exponent is None else 1,
                0 if self.exponent is None else self.exponent,
                self.offset, self.count, self.zeros]
        return {
            "counts": self.counts,
            "meta": np.array(meta, np.int64),
            "extremes": np.array([self.min, self.max], np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Histogram":
        """Inverse of `to_arrays`.

        Raises:
            ValueError: If the arrays are not a consistent histogram.
        """
        meta = np.asarray(arrays["meta"]).reshape(-1)
        counts = np.asarray(arrays["counts"])
        extremes = np.asarray(arrays["extremes"], np.float64).reshape(-1)
        if meta.size != 6 or extremes.size != 2 or counts.ndim != 1:
            raise ValueError(
                "Histogram arrays must hold 6 meta values, 2 extremes and 1-D counts. "
                f"Received: meta of size {meta.size}, extremes of size {extremes.size}, "
                f"counts of shape {counts.shape}"
            )
        if not (np.issubdtype(meta.dtype, np.integer) and np.issubdtype(counts.dtype, np.integer)):
            raise ValueError("Histogram arrays must hold integer meta values and counts. "
                             f"Received: meta of dtype {meta.dtype}, counts of dtype "
                             f"{counts.dtype}")
        max_bins, has_exp, exponent, offset, count, zeros = (int(v) for v in meta)
        h = cls(max_bins)
        h.exponent = exponent if has_exp == 1 else None
        h.offset, h.count, h.zeros = offset, count, zeros
        h.counts = counts.astype(np.int64, copy=True)
        h.min, h.max = float(extremes[0]), float(extremes[1])
        if (len(h.counts) > max_bins or int(h.counts.sum()) != count or (h.counts < 0).any()
                or not 0 <= zeros <= count
                or (count and (h.exponent is None or not h.min <= h.max))):
            raise ValueError(
                "Histogram arrays are inconsistent: expected at most max_bins non-negative "
                f"counts summing to count, 0 <= zeros <= count and min <= max. Received: "
                f"{len(h.counts)} bins (max_bins={max_bins}) summing to {int(h.counts.sum())}, "
                f"count={count}, zeros={zeros}, extremes=({h.min}, {h.max})"
            )
        if count and not h._holds_extremes():
            raise ValueError(
                "Histogram arrays are inconsistent: expected finite extremes inside the bins' "
                f"grid. Received: extremes=({h.min}, {h.max}), {len(h.counts)} bins of width "
                f"2**{h.exponent} from bin {h.offset}")
        return h

    def _holds_extremes(self) -> bool:
        """Whether the extremes are finite and inside the grid (as every update keeps them)."""
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or not (
                MIN_EXPONENT <= self.exponent <= 1100 and abs(self.offset) < 1 << 62):
            return False
        try:  # the grid's edges must be finite floats
            math.ldexp(abs(self.offset) + len(self.counts), self.exponent)
        except OverflowError:
            return False
        first, last = self._span(self.min, self.max, self.exponent)
        return self.offset <= first and last < self.offset + len(self.counts)

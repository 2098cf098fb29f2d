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
    >>> h.update(np.array([3.0], np.float32))
    >>> h.count, h.min, h.max, h.zeros
    (4, 0.0, 3.0, 1)
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

MIN_EXPONENT = -64
DEFAULT_MAX_BINS = 4096
_CHUNK = 1 << 22


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
        if not isinstance(max_bins, (int, np.integer)) or max_bins < 16:
            raise ValueError(
                f"max_bins must be an integer >= 16. Received: max_bins={max_bins!r}"
            )
        self.max_bins = int(max_bins)
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
        return (
            math.floor(math.ldexp(lo, -exponent)),
            math.floor(math.ldexp(hi, -exponent)),
        )

    def _exponent_for(self, lo: float, hi: float) -> int:
        """Smallest exponent >= MIN_EXPONENT whose grid holds [lo, hi] in max_bins."""
        span = hi - lo
        if span > 0:
            e = max(MIN_EXPONENT, math.ceil(math.log2(span / (self.max_bins - 1))))
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

    def _regrid(self, exponent: int, lo: float, hi: float) -> None:
        """Moves the counts onto grid `exponent` covering [lo, hi]."""
        first, last = self._span(lo, hi, exponent)
        new = np.zeros(last - first + 1, np.int64)
        if len(self.counts):
            shift = exponent - self.exponent
            old = np.arange(self.offset, self.offset + len(self.counts), dtype=np.int64)
            idx = (old >> shift) - first  # floor division by 2**shift
            nz = self.counts != 0
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
                f"Expected finite values; received {bad} NaN/Inf of {x.size}."
            )
        new_lo, new_hi = min(lo, self.min), max(hi, self.max)
        exponent = self._exponent_for(new_lo, new_hi)
        if self.exponent is not None:
            exponent = max(exponent, self.exponent)
        self._regrid(exponent, new_lo, new_hi)
        scale = math.ldexp(1.0, -exponent)
        for start in range(0, x.size, _CHUNK):
            chunk = x[start : start + _CHUNK].astype(np.float64)
            idx = np.floor(chunk * scale).astype(np.int64) - self.offset
            self.counts += np.bincount(idx, minlength=len(self.counts))
        self.count += int(x.size)
        self.zeros += int(np.count_nonzero(x == 0))
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
        theirs._regrid(exponent, lo, hi)
        self._regrid(exponent, lo, hi)
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
        self._regrid(exponent, new_lo, new_hi)
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
        """Inverse of `to_arrays`."""
        meta = [int(v) for v in np.asarray(arrays["meta"])]
        max_bins, has_exp, exponent, offset, count, zeros = meta
        h = cls(max_bins)
        h.exponent = exponent if has_exp == 1 else None
        h.offset, h.count, h.zeros = offset, count, zeros
        h.counts = np.asarray(arrays["counts"], np.int64).copy()
        lo, hi = (float(v) for v in np.asarray(arrays["extremes"]))
        h.min, h.max = lo, hi
        return h

"""Streaming histogram: growth and merge equal one pass, bounded memory, exactness.

Plain seeded numpy randomized tests (no hypothesis): every case draws data of
several scales, shuffles and splits it at random and compares with one pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfq8.stats.histogram import MIN_EXPONENT, Histogram


def _data(rng: np.random.Generator, n: int) -> np.ndarray:
    """A mix of scales, signs, exact zeros and a few outliers (float32)."""
    kind = rng.integers(4)
    if kind == 0:
        x = rng.normal(0, 10 ** rng.uniform(-3, 3), n)
    elif kind == 1:
        x = np.maximum(rng.normal(0.5, 1, n), 0)  # ReLU: spike at 0
    elif kind == 2:
        x = rng.standard_cauchy(n) * 10 ** rng.uniform(-2, 2)
    else:
        x = rng.laplace(-3, 0.1, n)  # all negative
    x[rng.integers(n, size=max(1, n // 100))] *= 10 ** rng.uniform(0, 4)
    return x.astype(np.float32)


def _one_pass(x: np.ndarray, max_bins: int) -> Histogram:
    return Histogram(max_bins).update(x)


def _random_splits(rng: np.random.Generator, x: np.ndarray) -> list[np.ndarray]:
    x = rng.permutation(x)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=rng.integers(1, 12), replace=False))
    return np.split(x, cuts)


def _check_binning(h: Histogram, x: np.ndarray) -> None:
    """Every value sits in the bin [k * w, (k + 1) * w) it belongs to."""
    idx = np.floor(x.astype(np.float64) / h.width).astype(np.int64)
    idx = np.where(x < 0, np.minimum(idx, -1), idx) - h.offset  # even if x / w underflows
    assert idx.min() >= 0 and idx.max() < len(h.counts)
    np.testing.assert_array_equal(np.bincount(idx, minlength=len(h.counts)), h.counts)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_bins", [16, 100, 4096])
def test_batched_updates_equal_one_pass(seed, max_bins):
    rng = np.random.default_rng(seed)
    x = _data(rng, int(rng.integers(50, 5000)))
    expected = _one_pass(x, max_bins)
    h = Histogram(max_bins)
    for part in _random_splits(rng, x):
        h.update(part)
        assert len(h.counts) <= max_bins
    assert h == expected
    _check_binning(h, x)


@pytest.mark.parametrize("seed", range(12))
def test_merges_of_partial_histograms_equal_one_pass(seed):
    rng = np.random.default_rng(100 + seed)
    max_bins = int(rng.choice([16, 64, 2048]))
    x = _data(rng, int(rng.integers(50, 5000)))
    parts = [Histogram(max_bins).update(p) for p in _random_splits(rng, x)]
    # Merge in a random tree order.
    while len(parts) > 1:
        i, j = rng.choice(len(parts), 2, replace=False)
        merged = parts[i].merge(parts[j])
        assert len(merged.counts) <= max_bins
        parts = [p for k, p in enumerate(parts) if k not in (i, j)] + [merged]
    assert parts[0] == _one_pass(x, max_bins)
    _check_binning(parts[0], x)


def test_merge_does_not_modify_the_other_and_handles_empty():
    a = Histogram(32).update(np.array([1.0, 2.0]))
    b = Histogram(32).update(np.array([-50.0, 3.0]))
    b_before = b.copy()
    a.merge(b)
    assert b == b_before
    assert a == Histogram(32).update(np.array([1.0, 2.0, -50.0, 3.0]))
    assert a.copy().merge(Histogram(32)) == a
    assert Histogram(32).merge(a) == a
    with pytest.raises(TypeError, match="Received: ndarray"):
        a.merge(np.zeros(3))


def test_growth_keeps_every_count_in_its_bin():
    """Growing on both sides (the regrid path) keeps all counts where they belong."""
    rng = np.random.default_rng(7)
    h, seen = Histogram(64), []
    for scale in [1e-3, 1e-2, 1.0, 1e2, 1e5]:
        x = rng.normal(scale, scale, 300).astype(np.float32)
        h.update(x)
        seen.append(x)
        _check_binning(h, np.concatenate(seen))
        assert len(h.counts) <= 64


@pytest.mark.parametrize("n", [10, 10_000, 1_000_000])
def test_memory_bounded_whatever_the_data_size(n):
    rng = np.random.default_rng(n)
    h = Histogram(256)
    for _ in range(3):
        h.update(rng.standard_cauchy(n // 3 + 1).astype(np.float32))
        assert len(h.counts) <= 256
    assert h.counts.sum() == h.count == 3 * (n // 3 + 1)


def test_resolution_not_needlessly_coarse():
    """The bin width is within a small factor of (max - min) / max_bins."""
    rng = np.random.default_rng(3)
    for max_bins in (16, 256, 4096):
        x = rng.uniform(-3, 5, 1000)
        h = Histogram(max_bins).update(x)
        span = h.max - h.min
        assert h.width <= 4 * span / (max_bins - 1)
        assert len(h.counts) > max_bins // 4


def test_exact_extremes_count_and_zeros():
    x = np.array([0.0, -0.0, 1.5, -2.25, 0.0, 7.0, 1e-30, -1e-30], np.float32)
    h = Histogram().update(x)
    assert (h.count, h.zeros, h.min, h.max) == (8, 3, -2.25, 7.0)
    assert h.counts.sum() == 8
    # Float16, integer and boolean inputs are accepted and exact.
    assert Histogram().update(np.array([1, -3, 0], np.int64)).min == -3.0
    assert Histogram().update(np.array([0.5, 2], np.float16)).max == 2.0
    assert Histogram().update(np.array([True, False])).zeros == 1


def test_empty_updates_and_empty_histogram():
    h = Histogram()
    assert h.update(np.zeros((0, 3), np.float32)) is h
    assert h.count == 0 and h.exponent is None and "empty" in repr(h)
    with pytest.raises(RuntimeError):
        _ = h.width
    with pytest.raises(ValueError, match="empty"):
        h.density()
    with pytest.raises(RuntimeError, match="empty"):
        h.set_extremes(0.0, 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected_without_changing_the_histogram(bad):
    h = Histogram().update(np.array([1.0, 2.0], np.float32))
    before = h.copy()
    with pytest.raises(ValueError, match=r"finite.*Received: 1 NaN/Inf of 3"):
        h.update(np.array([0.5, bad, 3.0], np.float32))
    assert h == before


def test_constant_tensors():
    h = Histogram().update(np.full((4, 5), 3.0, np.float32))
    assert (h.min, h.max, h.count, h.zeros, len(h.counts)) == (3.0, 3.0, 20, 0, 1)
    z = Histogram().update(np.zeros(10, np.float32))
    assert (z.min, z.max, z.zeros, len(z.counts), z.exponent) == (0.0, 0.0, 10, 1, MIN_EXPONENT)
    edges, counts = z.density()
    assert counts.sum() == 0  # all exact zeros removed
    edges, counts = z.density(drop_zeros=False)
    assert counts.sum() == 10


def test_huge_range_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=10_000).astype(np.float32)
    h = Histogram(4096).update(x).update(np.array([1e30, -1e-30], np.float32))
    assert h.max == np.float32(1e30) and h.count == 10_002 and len(h.counts) <= 4096
    assert h.counts[-1] == 1  # the outlier alone in the top bin
    # Extreme float64 ranges neither overflow nor lose counts.
    e = Histogram(64).update(np.array([-1e308, 0.0, 1e308]))
    assert (e.min, e.max, e.counts.sum()) == (-1e308, 1e308, 3)
    assert np.isfinite(e.edges).all()
    # Tiny negatives next to huge values stay below zero (no underflow to -0).
    for dtype in (np.float32, np.float64):
        big = np.finfo(dtype).max / 2
        v = np.array([-np.finfo(dtype).smallest_subnormal, big, 0.0], dtype)
        u = Histogram(64).update(v)
        _check_binning(u, v)
        assert u.counts[0] == 1 and u.edges[0] < 0
    # Float32 data added to a histogram with a float64-only grid.
    f = Histogram(64).update(np.array([-1e300, 1e300])).update(np.array([-1e-3, 2.0], np.float32))
    _check_binning(f, np.array([-1e300, 1e300, -1e-3, 2.0]))
    assert f.counts[-f.offset - 1] == 1 and f.counts[-f.offset] == 1
    # Bins are never narrower than 2**MIN_EXPONENT: tiny values share one.
    t = Histogram(64).update(np.array([5e-324, 1e-320, 1e-300]))
    assert t.exponent == MIN_EXPONENT and list(t.counts) == [3] and t.min == 5e-324


def test_density_drops_zeros_and_clips_edges():
    h = Histogram(64).update(np.array([0.0, 0.0, 0.1, 0.7, 1.3]))
    edges, counts = h.density()
    assert edges[0] == 0.0 and edges[-1] == 1.3 and len(edges) == len(counts) + 1
    assert counts.sum() == 3 and np.all(np.diff(edges) >= 0)
    assert h.density(drop_zeros=False)[1].sum() == 5


def test_set_extremes_then_update_or_merge_keeps_counts():
    """Regression: extremes set inside the binned data used to wrap counts around."""
    h = Histogram(64).update(np.array([-1.0, 1.0]))
    h.set_extremes(-0.5, 1.0)
    assert (h.min, h.max) == (-0.5, 1.0)
    other = Histogram(64).update(np.array([0.25, 0.5]))
    merged = h.copy().merge(other)
    _check_binning(merged, np.array([-1.0, 1.0, 0.25, 0.5]))
    h.update(np.array([0.5]))
    _check_binning(h, np.array([-1.0, 1.0, 0.5]))
    # Widening extremes widen the grid, counts unchanged.
    w = Histogram(64).update(np.array([0.0, 1.0])).set_extremes(-4.0, 8.0)
    assert w.edges[0] <= -4.0 and w.edges[-1] > 8.0 and w.counts.sum() == 2
    with pytest.raises(ValueError, match="Received: lo=2.0, hi=1.0"):
        w.set_extremes(2.0, 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_save_load_round_trip(tmp_path, seed):
    rng = np.random.default_rng(seed)
    h = Histogram(512).update(_data(rng, 2000))
    path = tmp_path / "h.npz"
    np.savez(path, **h.to_arrays())
    with np.load(path, allow_pickle=False) as f:
        loaded = Histogram.from_arrays(dict(f))
    assert loaded == h
    # Loaded histograms keep growing and merging exactly.
    more = _data(rng, 500)
    assert loaded.update(more) == h.copy().update(more)
    empty = Histogram.from_arrays(Histogram(32).to_arrays())
    assert empty == Histogram(32)


def test_from_arrays_rejects_inconsistent_arrays():
    arrays = Histogram(32).update(np.arange(10.0)).to_arrays()
    bad = dict(arrays, counts=arrays["counts"][:-1])
    with pytest.raises(ValueError, match="inconsistent.*Received"):
        Histogram.from_arrays(bad)
    with pytest.raises(ValueError, match="Received"):
        Histogram.from_arrays(dict(arrays, meta=arrays["meta"][:3]))


@pytest.mark.parametrize("bad", [8, 15, 2.5, "64"])
def test_max_bins_validated(bad):
    with pytest.raises(ValueError, match=f"Received: max_bins={bad!r}"):
        Histogram(bad)


def test_edges_are_on_the_power_of_two_grid():
    h = Histogram(128).update(np.random.default_rng(1).normal(size=1000))
    assert math.log2(h.width) == h.exponent
    np.testing.assert_array_equal(h.edges / h.width, np.arange(h.offset, h.offset + len(h.counts) + 1))

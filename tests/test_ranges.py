"""Per-tensor range methods against brute-force numpy references.

* minmax: exact extremes.
* percentile: np.percentile on the raw samples, within one histogram bin.
* mse: brute-force quantize-dequantize error on the raw samples, with TFLite's
  nudging, compared with the best range of a dense brute-force grid.
* kl: a loop-free but independent re-implementation of the documented KL
  definition (module docstring of tfq8.ranges.kl) on a few candidates, the
  chosen range against a brute-force grid of that reference, and behaviour.
* registry: names, errors, duplicates.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfq8.errors import ArgumentTypeError
from tfq8.ranges import available_methods, get_method, int8grid, registry
from tfq8.ranges.kl import MIN_BINS_PER_RANGE, SUBBINS, kl, kl_cost
from tfq8.ranges.minmax import minmax
from tfq8.ranges.mse import mse
from tfq8.ranges.percentile import percentile
from tfq8.stats.histogram import Histogram

N = 20_000


def _cases(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "gauss": rng.normal(size=N),
        "laplace_outlier": np.append(rng.laplace(size=N), 60.0),
        "relu": np.maximum(rng.normal(0.3, 1, N), 0),
        "t2": rng.standard_t(2, N),
        "asym": np.concatenate([rng.normal(2, 1, N // 2), -rng.exponential(0.2, N // 2)]),
        "negative": -rng.gamma(2.0, 1.0, N),
        "uniform": rng.uniform(-1, 3, N),
    }


CASES = _cases()


def _hist(x: np.ndarray, max_bins: int = 4096) -> Histogram:
    return Histogram(max_bins).update(x.astype(np.float32))


# ---------------------------------------------------------------- references
def tflite_grid(lo: float, hi: float) -> tuple[float, float]:
    """TFLite's nudging: include 0, scale = range / 255, zero point rounded."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    zero_point = float(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def qdq_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """Brute-force int8 quantize-dequantize mean squared error on raw samples."""
    scale, zp = tflite_grid(lo, hi)
    q = np.clip(np.round(x / scale) + zp, -128, 127)
    return float(np.mean((x - (q - zp) * scale) ** 2))


def brute_best_mse(x: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Best range over a dense grid (geometric per side) plus a local refinement."""
    mn, mx = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    r = np.geomspace(1 / 300, 1, 70)
    best = (np.inf, (mn, mx))

    def scan(los, his):
        nonlocal best
        for lo in los:
            for hi in his:
                e = qdq_mse(x, lo, hi)
                if e < best[0]:
                    best = (e, (float(lo), float(hi)))

    scan(mn * r if mn < 0 else [0.0], mx * r if mx > 0 else [0.0])
    for _ in range(2):
        lo0, hi0 = best[1]
        fine = np.geomspace(0.93, 1.07, 29)
        scan(np.maximum(lo0 * fine, mn) if lo0 < 0 else [0.0],
             np.minimum(hi0 * fine, mx) if hi0 > 0 else [0.0])
    return best


def kl_reference(hist: Histogram, lo: float, hi: float) -> float:
    """The documented KL(P || Q) of one candidate, written independently.

    Histogram mass (exact zeros removed, uniform inside each bin) is spread
    over 256 * SUBBINS sub-bins of the nudged grid; P folds the tails into the
    end sub-bins; Q spreads each level's in-range mass evenly over the level's
    sub-bins that hold mass.
    """
    edges, counts = hist.density()
    left, right = edges[:-1], edges[1:]
    width = right - left
    point = width <= 0  # a bin clipped to one value: a point mass there
    total = counts.sum()
    scale, zp = tflite_grid(lo, hi)
    rep_lo = (-128 - zp) * scale
    sub_edges = rep_lo + (np.arange(256 * SUBBINS + 1) / SUBBINS - 0.5) * scale

    def mass_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        overlap = np.clip(np.minimum(b[:, None], right) - np.maximum(a[:, None], left), 0, None)
        frac = np.where(point, (a[:, None] <= left) & (left < b[:, None]),
                        overlap / np.where(point, 1.0, width))
        return (frac * counts).sum(axis=1)

    inner = mass_between(sub_edges[:-1], sub_edges[1:])
    below = mass_between(np.array([-np.inf]), sub_edges[:1])[0]
    above = mass_between(sub_edges[-1:], np.array([np.inf]))[0]
    p = inner.copy()
    p[0] += below
    p[-1] += above
    q = np.zeros_like(p)
    for level in range(256):
        part = inner[level * SUBBINS:(level + 1) * SUBBINS]
        held = part > 1e-10 * total
        if held.any():
            q[level * SUBBINS:(level + 1) * SUBBINS][held] = part.sum() / held.sum()
    p, q = p / p.sum(), np.maximum(q / q.sum(), 1e-10)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


# -------------------------------------------------------------------- minmax
@pytest.mark.parametrize("name", sorted(CASES))
def test_minmax_is_exact(name):
    x = CASES[name].astype(np.float32)
    h = _hist(x)
    assert minmax(h) == (float(x.min()), float(x.max()))
    # Also after splitting into batches and merging.
    parts = [Histogram().update(p) for p in np.array_split(x, 7)]
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    assert minmax(merged) == (float(x.min()), float(x.max()))


# ---------------------------------------------------------------- percentile
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("pct", [99.0, 99.9, 99.99])
def test_percentile_matches_numpy_within_one_bin(name, pct):
    x = CASES[name].astype(np.float32).astype(np.float64)
    h = _hist(x)
    lo, hi = percentile(h, percentile=pct)
    w = h.width * (1 + 1e-9)
    s = np.sort(x)

    def near(value, q):
        """Within one bin of the order statistic of rank q * n (+-1 rank: the
        percentile definitions differ by one sample in where rank q falls)."""
        k = int(round(q * len(s)))
        a, b = s[max(k - 2, 0)], s[min(k, len(s) - 1)]
        ref = np.percentile(x, 100 * q)
        return (a - w <= value <= b + w) and abs(value - ref) <= w + (b - a)

    if x.min() < 0:  # signed: both sides clipped
        assert near(lo, 1 - pct / 100)
    else:  # non-negative: only the top
        assert lo == x.min()
    if x.max() > 0:
        assert near(hi, pct / 100)
    else:
        assert hi == x.max()
    assert x.min() <= lo <= hi <= x.max()


def test_percentile_100_is_minmax_and_options_validated():
    h = _hist(CASES["t2"])
    assert percentile(h, percentile=100) == minmax(h)
    for bad in (50, 101, -3):
        with pytest.raises(ValueError, match=f"Received: percentile={bad!r}"):
            percentile(h, percentile=bad)
    # Registered under its name and reachable with options.
    assert get_method("percentile")(h, percentile=100.0) == minmax(h)


def test_percentile_clips_the_tails_of_heavy_data():
    h = _hist(CASES["laplace_outlier"])
    lo, hi = percentile(h, percentile=99.9)
    assert hi < 10 and lo > -10  # the outlier at 60 is dropped


# ----------------------------------------------------------------------- mse
@pytest.mark.parametrize("name", ["gauss", "laplace_outlier", "relu", "t2", "asym", "negative"])
def test_mse_near_brute_force_optimum(name):
    x = CASES[name].astype(np.float32).astype(np.float64)
    lo, hi = mse(_hist(x))
    best, best_range = brute_best_mse(x)
    got = qdq_mse(x, lo, hi)
    assert got <= best * 1.02, (got, best, (lo, hi), best_range)
    assert min(x.min(), 0) <= lo <= hi <= max(x.max(), 0)


def test_mse_keeps_exact_grids():
    # Integer pixels 0..255 fit the int8 grid exactly at min/max: keep it.
    pixels = np.random.default_rng(1).integers(0, 256, 5000).astype(np.float64)
    lo, hi = mse(_hist(pixels))
    assert qdq_mse(pixels, lo, hi) == 0.0
    # A ReLU6 spike at the top edge is kept, not clipped.
    relu6 = np.clip(np.random.default_rng(2).normal(3, 3, 5000), 0, 6)
    assert mse(_hist(relu6)) == (0.0, 6.0)


@pytest.mark.parametrize("name", ["asym", "gauss"])
@pytest.mark.parametrize("max_bins", [256, 1024, 4096])
def test_expected_sq_error_matches_raw_samples(name, max_bins):
    """The histogram's error model agrees with brute force on the raw values,
    also when histogram bins are about as wide as an int8 step (regression:
    such bins used to be scored up to twice their real error)."""
    x = CASES[name].astype(np.float32).astype(np.float64)
    h = _hist(x, max_bins)
    edges, counts = h.density()
    his = np.array([x.max(), 0.9 * x.max(), 0.6 * x.max(), 0.4 * x.max()])
    los = np.array([x.min(), 0.7 * x.min(), 0.5 * x.min(), 0.3 * x.min()])
    model = int8grid.expected_sq_error(edges, counts, los, his)
    nonzero = x[x != 0]
    raw = np.array([qdq_mse(nonzero, a, b) for a, b in zip(los, his)])
    np.testing.assert_allclose(model, raw, rtol=0.03)


def sq_error_per_bin(edges, counts, lo, hi):
    """`expected_sq_error` written bin by bin: values uniform inside each bin
    (zero-width bins are point masses), the error integrated numerically on a
    fine sub-grid of each bin instead of in closed form."""
    out = []
    for a_, b_ in zip(lo, hi):
        with np.errstate(invalid="ignore"):
            scale, zp = tflite_grid(a_, b_)
        total = 0.0
        for left, right, c in zip(edges[:-1], edges[1:], counts):
            if c == 0:
                continue
            x = np.array([left]) if right <= left else \
                left + (np.arange(4000) + 0.5) / 4000 * (right - left)
            if scale == 0:  # the range [0, 0]: every value becomes 0
                total += c * np.mean(x**2)
                continue
            q = np.clip(np.round(x / scale) + zp, -128, 127)
            total += c * np.mean((x - (q - zp) * scale) ** 2)
        out.append(total / counts.sum())
    return np.array(out)


def test_expected_sq_error_matches_per_bin_integration():
    """The closed form (prefix sums for clipping, antiderivative for rounding)
    equals direct integration, for ranges inside, straddling and beyond the
    data, with empty bins, point masses and a range inside one bin."""
    rng = np.random.default_rng(3)
    edges = np.sort(np.concatenate([rng.uniform(-2, 5, 60), [0.5, 0.5, 1.25, 1.25]]))
    counts = rng.integers(0, 50, len(edges) - 1).astype(np.float64)
    counts[::7] = 0
    assert np.any((np.diff(edges) == 0) & (counts > 0))  # point masses present
    mid = (edges[30] + edges[31]) / 2
    los = np.concatenate([rng.uniform(-2.5, 0, 12), [edges[0], -1e-3, 0.0]])
    his = np.concatenate([rng.uniform(0, 6, 12), [edges[-1], mid, 0.0]])
    got = int8grid.expected_sq_error(edges, counts, los, his)
    want = sq_error_per_bin(edges, counts, los, his)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12)


# ------------------------------------------------------------------------ kl
def test_kl_cost_matches_reference_definition():
    x = CASES["asym"]
    h = _hist(x, max_bins=1024)
    los = np.array([-1.0, -1.9, -0.3, min(h.min, 0.0)])
    his = np.array([3.0, 5.0, 6.0, h.max])
    got = kl_cost(h)(los, his)
    want = [kl_reference(h, a, b) for a, b in zip(los, his)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["asym", "laplace_outlier", "relu"])
def test_kl_choice_near_best_of_reference_grid(name):
    h = _hist(CASES[name], max_bins=1024)
    lo, hi = kl(h)
    mn, mx = min(h.min, 0.0), max(h.max, 0.0)
    min_width = MIN_BINS_PER_RANGE * h.width
    r = np.geomspace(1 / 64, 1, 14)
    grid = [(a, b) for a in (mn * r if mn < 0 else [0.0]) for b in (mx * r if mx > 0 else [0.0])
            if b - a >= min_width]
    best = min(kl_reference(h, a, b) for a, b in grid)
    assert hi - lo >= min_width
    assert kl_reference(h, lo, hi) <= best * 1.01 + 1e-9


def test_kl_clips_a_heavy_tail_with_an_outlier():
    h = _hist(CASES["laplace_outlier"])
    lo, hi = kl(h)
    assert hi < 60 / 3  # minmax keeps the outlier at 60
    assert lo >= h.min
    # ... but is no collapse: it keeps well beyond the bulk of the data.
    x = CASES["laplace_outlier"]
    assert hi > np.percentile(x, 99.5) and lo < np.percentile(x, 0.5)


def test_kl_keeps_zero_for_non_negative_tensors():
    lo, hi = kl(_hist(CASES["relu"]))
    assert lo == 0.0 and 0 < hi <= CASES["relu"].max()
    lo, hi = kl(_hist(CASES["negative"]))
    assert hi == 0.0 and lo < 0


def test_kl_ignores_extremes_wider_than_the_values():
    # TFLite's calibrator records a Rescaling MUL (pixels / 127.5, in [0, 2]) after the
    # in-place ADD of -1 overwrote it: extremes [-1, 2]. kl searched that empty margin and
    # chose (-0.36, 0.008), clipping every value (MobileNetV3Small: model SQNR -0.96 dB).
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, 50000) / 127.5
    x[rng.random(x.size) < 0.6] = 0.0
    h = Histogram().update(x.astype(np.float32)).set_extremes(-1.0, 2.0)
    lo, hi = kl(h)
    assert lo == 0.0 and hi > 1.5


def test_kl_asymmetric_signed_tensor_gets_asymmetric_range():
    x = CASES["asym"].astype(np.float32)
    lo, hi = kl(_hist(x))
    assert lo < 0 < hi
    assert hi / -lo > 2  # positive side ~N(2, 1), negative ~ -Exp(0.2)
    assert lo >= x.min() and hi <= x.max()


@pytest.mark.parametrize("method", ["minmax", "percentile", "kl", "mse"])
def test_degenerate_histograms(method):
    fn = get_method(method)
    assert fn(Histogram().update(np.full(7, 3.0))) == (3.0, 3.0)
    assert fn(Histogram().update(np.zeros(7))) == (0.0, 0.0)
    assert fn(Histogram().update(np.array([0.0, 0.0, 5.0]))) == (0.0, 5.0)
    with pytest.raises(ValueError, match="empty"):
        fn(Histogram())


@pytest.mark.parametrize("method", ["percentile", "kl", "mse"])
def test_methods_are_pure_and_deterministic(method):
    h = _hist(CASES["t2"])
    before = h.copy()
    fn = get_method(method)
    assert fn(h) == fn(h.copy())
    assert h == before


# ------------------------------------------------------------------ registry
def test_registry_names_and_errors():
    assert set(available_methods()) >= {"minmax", "percentile", "kl", "mse"}
    assert list(available_methods()) == sorted(available_methods())
    assert get_method("kl") is kl
    for bad in ("KL", "minmax ", "", None, 3):
        with pytest.raises(ValueError, match=r"Expected one of .*kl.*minmax.*mse.*percentile"
                                              r".*Received: method="):
            get_method(bad)


def test_register_rejects_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="'minmax'.*already registered"):
        registry.register("minmax")(lambda h: (0.0, 1.0))
    assert get_method("minmax") is minmax
    for bad in ("", " kl"):
        with pytest.raises(ValueError, match="Received") as caught:
            registry.register(bad)
        assert not isinstance(caught.value, TypeError)
    for bad in (None, 3):  # wrong types: an ArgumentTypeError (was a plain ValueError)
        with pytest.raises(ArgumentTypeError, match=f"Received: name={bad!r}"):
            registry.register(bad)
    with pytest.raises(ArgumentTypeError, match="'_never' must be callable. Received: float"):
        registry.register("_never")(1.5)
    assert "_never" not in available_methods()
    name = "_test_only_method"
    try:
        fn = registry.register(name)(lambda h: (h.min, h.max))
        assert get_method(name) is fn and name in available_methods()
    finally:
        registry._METHODS.pop(name, None)  # pylint: disable=protected-access


def test_option_values_are_checked_against_the_defaults_kind():
    name = "_test_only_options"

    def method(h, *, scale: float = 1.0, symmetric: bool = False):
        return (-scale, scale) if symmetric else (h.min, h.max)

    try:
        registry.register(name)(method)
        registry.check_options(name, {"symmetric": True, "scale": 2})
        with pytest.raises(ValueError, match=r"scale must be a number. Received: scale='2'"):
            registry.check_options(name, {"scale": "2"})
        with pytest.raises(ValueError, match=r"scale must be a number. Received: scale=True"):
            registry.check_options(name, {"scale": True})
    finally:
        registry._METHODS.pop(name, None)  # pylint: disable=protected-access


@pytest.mark.parametrize("rows", [1, 3, 32])
def test_kl_level_helpers_equal_numpy_sums_bit_for_bit(rows):
    from tfq8.ranges.kl import _level_counts, _level_sums  # noqa: PLC0415

    rng = np.random.default_rng(rows)
    levels = rng.standard_normal((rows, 256, SUBBINS)) * np.exp(rng.uniform(-30, 30, (rows, 256, SUBBINS)))
    levels[rng.uniform(size=levels.shape) < 0.3] = 0.0
    np.testing.assert_array_equal(_level_sums(levels), levels.sum(axis=2, keepdims=True))
    occupied = levels > 0
    np.testing.assert_array_equal(_level_counts(occupied), occupied.sum(axis=2, keepdims=True))

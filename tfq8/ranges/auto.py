"""`auto` (the default): pick ranges by how well the int8 model matches float.

No single per-tensor rule wins everywhere: `mse` is best for clean,
Gaussian-like activations, `percentile` and `kl` survive corrupted calibration
frames and heavy tails, and `minmax` is right for tensors whose rare extremes
matter. So `auto` measures instead of guessing:

1. Every per-tensor method (`minmax`, `percentile`, `mse`, `kl`) proposes a
   range for every tensor, from the histograms alone.
2. Each proposal is quantized into a full int8 model and run in LiteRT on the
   calibration samples the `Calibration` kept (`Calibration.samples`, up to 256
   by default), next to the calibrated float model. Where TFLite's quantizer
   refuses a proposal because tensors that must share one int8 grid carry
   different ranges (a masked SimpleRNN), their union is what is quantized and
   scored (`tfq8.shared_grid`).
3. The score of a proposal is the output SQNR in dB over those samples, with
   signal and error energy summed over all of them (the figure users measure
   on a test set), averaged over the model's outputs. Summing energies, not
   averaging per-sample SQNR, lets the rare samples with the largest outputs
   weigh what they weigh on a test set: a range that clips them loses.
4. Corrupted calibration frames (saturated noise, hot pixels, a broken
   sensor) would decide such a sum, so they are left out of it first, judged
   from the float model alone and never from a candidate's error (the peaks
   are recorded during the statistics pass, `Calibration.sample_peaks`): a kept
   sample whose peak activations in the first third of the graph sit more than
   `OUTLIER_Z` robust standard deviations (median and MAD of the log peak
   ratio) above the other samples is a corrupted frame. Legitimate samples
   with large outputs are extreme near the output, not at the input end, so
   they stay. At most `MAX_OUTLIER_FRACTION` of the samples can be left out;
   with fewer than `MIN_SAMPLES_FOR_OUTLIERS` none are. The statistics keep
   every sample either way: this only decides which samples score.
5. `minmax` (the converter's own ranges) is always a candidate and wins unless
   another proposal is clearly better on the same samples: its score must be
   higher by more than `MINMAX_MARGIN_DB`, and higher in at least
   `CONFIDENCE` of `BOOTSTRAP` resamplings of the scored samples (a fixed
   seed, so the choice is deterministic). So on the calibration samples `auto`
   is never worse than the converter, and leaves it only for a gain that a
   few lucky samples would not explain. With fewer than
   `MIN_SAMPLES_TO_CHOOSE` samples to score, no gain is told apart from luck
   and `minmax` stays.
6. Then, tensor by tensor (those where the best and the runner-up proposals
   differ most first, within `REFINE_BUDGET` model evaluations), the
   runner-up's range is tried in place and kept when it is clearly better by
   the same test with `REFINE_MIN_GAIN_DB`; the search stops after
   `REFINE_PATIENCE` tries in a row that are not.

7. Last, each accumulator of a WHILE loop (an LSTM's cell state that is not
   unrolled, `tfq8.loops.loop_states`) shares one int8 grid over all time
   steps, so the range of its largest steps leaves its first steps few codes.
   Its recorded range is tried narrower, `LOOP_SCALES` in turn, and each
   narrowing is kept when clearly better by the same test; the search stops
   after `REFINE_PATIENCE` tries in a row that are not.

The candidates can be chosen: `method_options={"candidates": [...]}` (on the
command line `--method-option candidates=minmax,mse`) names the methods to
compare, registered ones of your own too, each a name or a `(name, options)`
pair. `minmax` is always scored, first: it is the baseline the others must
clearly beat.

Ranges the user sets (`ranges=`) are in place in every candidate: `auto`
chooses the other ranges around them and never changes them. A range that
clips an output hard can leave every candidate with the same score, and then
the rest stays at `minmax`.

Without kept samples (a Calibration saved with `keep_samples=0`), `auto` falls
back to `percentile` and says so in the log.

Example:
    >>> blob = tfq8.convert(model, x_train[:500])          # method="auto"
    >>> calib = tfq8.calibrate(model, x_train[:500])
    >>> blob = tfq8.convert(calibration=calib)
    >>> print(calib.last_auto.summary())   # the choice and the scores behind it
    >>> blob = tfq8.convert(calibration=calib, method_options={
    ...     "candidates": ["mse", ("percentile", {"percentile": 99.99})]})
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from tfq8 import _tflite
from tfq8.harness.interpreter import batch_for, run_outputs
from tfq8.errors import ArgumentTypeError
from tfq8.loops import loop_states, scale_loop_states
from tfq8.ranges.registry import check_options, get_method
from tfq8.shared_grid import Quantizer

_log = logging.getLogger("tfq8")

CANDIDATES = ("minmax", "percentile", "mse", "kl")
FALLBACK = "percentile"
OUTLIER_Z = 6.0
EARLY_FRACTION = 1 / 3
MIN_SAMPLES_FOR_OUTLIERS = 16
MIN_SAMPLES_TO_CHOOSE = 8
MAX_OUTLIER_FRACTION = 0.25
MINMAX_MARGIN_DB = 0.1
CONFIDENCE = 0.8
BOOTSTRAP = 1000
REFINE_BUDGET = 4
REFINE_PATIENCE = 2
REFINE_MIN_GAIN_DB = MINMAX_MARGIN_DB
LOOP_SCALES = tuple(2.0 ** (-k / 2) for k in range(1, 7))  # 0.71, 0.5, ..., 0.125
_CAP_DB = 120.0
# Tensor bytes (all tensors of the graph, 4 a value) per scoring batch. A scoring run
# keeps only the live tensors (no preserve_all_tensors), so its batches can sum to
# more than the cache-sized 8 MiB of `interpreter.default_batch`, which sized them
# before: scoring passes on 13 keras.applications models and the benchmark suite
# were as fast or faster everywhere, up to 1.3x on ConvNeXtTiny (batch 1 -> 13) and
# 1.7x on DenseNet121 and EfficientNetB0 (batch 2 -> 16 and 23).
_SCORE_BATCH_BYTES = 64 << 20
_MIN_LOG_SPREAD = 0.05


@dataclasses.dataclass
class AutoReport:
    """What `auto` measured: score per candidate and the per-tensor choice.

    Attributes:
        scores: Candidate method -> output SQNR (dB) over the scored samples.
        choice: Tensor index -> method whose range it uses, or `"fixed"` for a
            range set with `ranges=` (or learned by QAT), which `auto` scores
            in place and never changes.
        score: Score of the final ranges.
        excluded: Kept calibration samples (indices into `Calibration.samples`)
            judged corrupted and left out of the scores.
        method: The method chosen for the whole model, before per-tensor
            refinement.
        scored: How many kept samples scored (after `excluded`).
        ranges: Tensor index -> the (min, max) the int8 model was quantized
            with (the chosen methods' ranges and the fixed ones).
        loop_scales: Loop state (its tensor's name) -> the factor its recorded
            range was narrowed by (step 7), for those narrowed.
        candidates: Label (as in `scores` and `choice`) -> (method name, options)
            of each candidate compared (`candidate_methods`), so that a label
            such as `percentile(percentile=99.999)` gives its ranges again:
            `calib.ranges(name, **options)`.
    """

    scores: dict[str, float]
    choice: dict[int, str]
    score: float
    excluded: list[int] = dataclasses.field(default_factory=list)
    method: str = ""
    scored: int = 0
    ranges: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    loop_scales: dict[str, float] = dataclasses.field(default_factory=dict)
    candidates: dict[str, tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """One line: the choice and the scores behind it.

        Example:
            >>> calib.last_auto.summary()
            'auto chose mse: output SQNR 44.55 dB on the calibration samples (minmax 44.00, ...)'
        """
        if not self.scores:
            return f"auto chose {self.method}: no kept calibration samples to score on"
        refined = sum(1 for m in self.choice.values() if m not in (self.method, "fixed"))
        return (f"auto chose {self.method}"
                + (f" ({refined} tensor(s) refined to another method)" if refined else "")
                + (f" ({len(self.loop_scales)} loop state(s) narrowed)" if self.loop_scales
                   else "")
                + f": output SQNR {self.score:.2f} dB on the calibration samples ("
                + ", ".join(f"{m} {s:.2f}" for m, s in self.scores.items())
                + (f"; {len(self.excluded)} corrupted-looking sample(s) left out"
                   if self.excluded else "")
                + (f"; {self.scored} sample(s) scored, too few (< {MIN_SAMPLES_TO_CHOOSE}) to "
                   "leave minmax" if 0 < self.scored < MIN_SAMPLES_TO_CHOOSE else "") + ")")


def candidate_methods(candidates: Any = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """`auto`'s candidates, checked: label -> (method name, options), `minmax` first.

    Args:
        candidates: None for `CANDIDATES`; else a sequence (or a comma-separated
            string) of registered method names and `(name, options)` pairs.
            `minmax` is added first if missing. A pair's label shows its options,
            such as `percentile(percentile=99.99)`.

    Raises:
        ValueError: Naming `method_options['candidates']`, for an unknown method,
            a method listed twice or options the method refuses
            (`tfq8.errors.ArgumentTypeError` for an item of the wrong type).

    Example:
        >>> list(candidate_methods(["mse", ("percentile", {"percentile": 99.99})]))
        ['minmax', 'mse', 'percentile(percentile=99.99)']
    """
    arg = "method_options['candidates']"
    if candidates is None:
        candidates = CANDIDATES
    if isinstance(candidates, str):
        candidates = [c.strip() for c in candidates.split(",")]
    if isinstance(candidates, Mapping) or not isinstance(candidates, Sequence):
        raise ArgumentTypeError(
            f"{arg} must be a list of range method names or (name, options) pairs, such as "
            f"['mse', ('percentile', {{'percentile': 99.99}})]. Received: {candidates!r}")
    out: dict[str, tuple[str, dict[str, Any]]] = {"minmax": ("minmax", {})}
    for item in candidates:
        name, options = (item, {}) if isinstance(item, str) else (
            tuple(item) if isinstance(item, (tuple, list)) and len(item) == 2 else (None, None))
        if not isinstance(name, str) or not isinstance(options, Mapping):
            raise ArgumentTypeError(
                f"Each item of {arg} must be a method name or a (name, options dict) pair. "
                f"Received: {item!r}")
        if name == "auto":
            raise ValueError(f"{arg} lists per-tensor methods; auto cannot be one of them. "
                             f"Received: {list(candidates)!r}")
        try:
            get_method(name)
            check_options(name, options)
        except ValueError as e:
            raise type(e)(f"{arg}: {e}") from None
        label = name if not options else (
            f"{name}({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})")
        if label in out and label != "minmax":
            raise ValueError(f"{arg} lists {label!r} twice. Received: {list(candidates)!r}")
        out[label] = (name, dict(options))
    return out


def choose_and_quantize(calib: Any, *, overrides: Mapping[int, tuple[float, float]] | None = None,
                        candidates: Any = None, **quant: Any
                        ) -> tuple[dict[int, tuple[float, float]], bytes | None]:
    """Ranges chosen by `auto` for every calibrated tensor, and the int8 model built with them.

    Args:
        calib: The `Calibration`.
        overrides: Ranges fixed by the user (tensor index -> (min, max)).
        candidates: The methods to compare (`candidate_methods`; default `CANDIDATES`).
        **quant: Quantization options (`per_channel`, `input_type`, `output_type`).

    Returns:
        (ranges, model): tensor index -> (min, max), and the scored candidate's
        model, byte-identical to quantizing the calibrated model with those
        ranges (the chosen ones, tied where the quantizer needs one range for
        tensors that share an int8 grid: `tfq8.shared_grid`); None where `auto`
        scored nothing (a calibration without kept samples). The measurements
        are logged and stored on `calib.last_auto` as an `AutoReport`.
    """
    overrides = dict(overrides or {})
    methods = candidate_methods(candidates)
    labels = list(methods)
    proposals = {m: calib.ranges(name, **options) for m, (name, options) in methods.items()}
    for p in proposals.values():
        p.update(overrides)
    if calib.samples is None or len(calib.samples[0]) == 0:
        # percentile by default; else the first candidate after minmax
        fallback = FALLBACK if FALLBACK in methods else labels[min(1, len(labels) - 1)]
        _log.info("auto: the calibration kept no samples; using %s ranges.", fallback)
        chosen = dict(proposals[fallback])
        calib.last_auto = AutoReport({}, _choice(chosen, fallback, overrides), float("nan"),
                                     method=fallback, ranges=chosen, candidates=methods)
        return chosen, None

    scorer = _Scorer(calib, quant, fixed=overrides)
    scored = {m: scorer(p) for m, p in proposals.items()}  # method -> (noise, model, ranges)
    noise = {m: n for m, (n, _, _) in scored.items()}
    scores = {m: scorer.score(n) for m, n in noise.items()}
    rank = sorted(labels, key=lambda m: (-scores[m], labels.index(m)))
    eligible = [m for m in rank if m != "minmax"
                and scorer.clearly_better(noise[m], noise["minmax"], MINMAX_MARGIN_DB)]
    best = eligible[0] if eligible else "minmax"
    second = next((m for m in rank if m != best), best)  # best itself: nothing to refine
    chosen = dict(proposals[best])
    choice = _choice(chosen, best, overrides)
    current, model, used = scored[best]
    del scored

    # Per-tensor refinement: try the runner-up's range where the two differ most.
    def gap(i: int) -> float:
        (a, b), (c, d) = proposals[best][i], proposals[second][i]
        return abs(np.log((b - a + 1e-30) / (d - c + 1e-30)))

    todo = [i for i in sorted(chosen, key=gap, reverse=True)
            if i not in overrides and gap(i) > 1e-3][:REFINE_BUDGET]
    if len(scorer.keep) < MIN_SAMPLES_TO_CHOOSE:
        todo = []  # no trial could be clearly better
    misses = 0
    for i in todo:
        trial = dict(chosen)
        trial[i] = proposals[second][i]
        trial_noise, trial_model, trial_used = scorer(trial)
        if scorer.clearly_better(trial_noise, current, REFINE_MIN_GAIN_DB):
            chosen, current, model, used, misses = trial, trial_noise, trial_model, trial_used, 0
            choice[i] = second
        else:
            misses += 1
            if misses == REFINE_PATIENCE:
                break
    current, model, used, scales = _narrow_loop_states(calib, scorer, chosen, current, model,
                                                       used)
    score = scorer.score(current)
    calib.last_auto = AutoReport(scores, choice, score, list(scorer.excluded), best,
                                 len(scorer.keep), used,
                                 {state.name: scale for state, scale in scales.items()},
                                 methods)
    _log.info("auto: output SQNR (dB) on %d calibration samples %s; chose %s, %d tensor(s) "
              "from %s; final %.2f dB.", len(scorer.keep),
              {m: round(s, 2) for m, s in scores.items()}, best,
              sum(1 for m in choice.values() if m == second), second, score)
    return used, model


def _narrow_loop_states(calib: Any, scorer: "_Scorer", ranges: Mapping[int, tuple[float, float]],
                        current: np.ndarray, model: bytes, used: dict[int, tuple[float, float]]
                        ) -> tuple[np.ndarray, bytes, dict[int, tuple[float, float]], dict]:
    """Step 7: narrows each loop state's recorded range while that is clearly better.

    Returns:
        The error energy, the model and the ranges (subgraph 0) of the final
        choice, and the kept scales (`LoopState` -> factor).
    """
    scales: dict = {}
    if len(scorer.keep) < MIN_SAMPLES_TO_CHOOSE:
        return current, model, used, scales
    for state in loop_states(calib.model):
        misses = 0
        for scale in LOOP_SCALES:
            trial = {**scales, state: scale}
            noise, blob, trial_used = scorer(ranges, base=scale_loop_states(calib.model, trial))
            if scorer.clearly_better(noise, current, REFINE_MIN_GAIN_DB):
                scales, current, model, used, misses = trial, noise, blob, trial_used, 0
            else:
                misses += 1
                if misses == REFINE_PATIENCE:
                    break
    if scales:
        _log.info("auto: narrowed the range of %d loop state(s) (one int8 grid for every time "
                  "step): %s.", len(scales), {s.name: round(f, 3) for s, f in scales.items()})
    return current, model, used, scales


def _choice(ranges: Mapping[int, Any], method: str, fixed: Mapping[int, Any]) -> dict[int, str]:
    return {i: "fixed" if i in fixed else method for i in ranges}


class _Scorer:
    """Quantizes a range proposal and measures its output error against float.

    The kept samples run in batches whose tensors sum to about `_SCORE_BATCH_BYTES`,
    so memory stays bounded (XNNPACK kernels, all cores); the ranges are patched
    into the calibrated model's bytes, not rebuilt.
    """

    def __init__(self, calib: Any, quant: Mapping[str, Any], fixed: Collection[int] = ()):
        self.quantize = Quantizer(calib.model, fixed=fixed, **quant)
        self.fixed, self.quant = fixed, quant
        self.samples = list(calib.samples)
        n = len(self.samples[0])
        most = batch_for(_tflite.read_model(calib.model), _SCORE_BATCH_BYTES, n, self.samples)
        chunks = -(-n // most)
        self.batch = -(-n // chunks)  # equal batches: the last one pads least
        self.reference = run_outputs(calib.model, self.samples, self.batch)
        self.signal = signal_energy(self.reference)
        n = self.signal.shape[1]
        self.excluded = corrupted_frames(early_columns(calib))
        if self.excluded:
            _log.info("auto: %d of %d kept calibration samples look corrupted (peak "
                      "activations far above the others early in the graph) and do not "
                      "score: %s", len(self.excluded), n, self.excluded)
        self.keep = np.setdiff1d(np.arange(n), self.excluded)
        self.weights = bootstrap_weights(len(self.keep))
        if len(self.keep) < MIN_SAMPLES_TO_CHOOSE:
            _log.info("auto: %d calibration sample(s) to score on, fewer than %d: too few to "
                      "tell a gain from luck, so the converter's own ranges (minmax) stay.",
                      len(self.keep), MIN_SAMPLES_TO_CHOOSE)

    def __call__(self, ranges: Mapping[int, tuple[float, float]], *, base: bytes | None = None
                 ) -> tuple[np.ndarray, bytes, dict[int, tuple[float, float]]]:
        """Error energy per output and sample of the int8 model with `ranges`, that
        model, and the ranges it was quantized with (`ranges`, or their tie where the
        quantizer needs one: `tfq8.shared_grid`). `base` replaces the calibrated model
        (one with loop states narrowed)."""
        quantize = self.quantize if base is None else Quantizer(base, fixed=self.fixed,
                                                                  **self.quant)
        blob, used = quantize(ranges)
        outputs = run_outputs(blob, self.samples, self.batch)
        return error_energy(outputs, self.reference), blob, used

    def score(self, noise: np.ndarray) -> float:
        """Output SQNR (dB) over the scored samples."""
        return total_sqnr_db(self.signal[:, self.keep], noise[:, self.keep])

    def clearly_better(self, noise: np.ndarray, baseline: np.ndarray, margin_db: float) -> bool:
        """Whether `noise` beats `baseline` (see `clearly_better`); never on fewer
        than `MIN_SAMPLES_TO_CHOOSE` scored samples."""
        enough = len(self.keep) >= MIN_SAMPLES_TO_CHOOSE
        return enough and clearly_better(self.signal[:, self.keep], noise[:, self.keep],
                                         baseline[:, self.keep], margin_db, self.weights)


def _energy(a: np.ndarray) -> np.ndarray:
    """Sum of squares per sample (first axis)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    return np.sum(a * a, axis=1)


def signal_energy(reference: Sequence[np.ndarray]) -> np.ndarray:
    """Energy of the float outputs, shape (outputs, samples): `total_sqnr_db`'s signal."""
    return np.stack([_energy(r) for r in reference])


def error_energy(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> np.ndarray:
    """Energy of the int8 outputs' error, shape (outputs, samples): `total_sqnr_db`'s noise."""
    return np.stack([_energy(np.asarray(o, np.float64) - np.asarray(r, np.float64))
                     for o, r in zip(outputs, reference)])


def total_sqnr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """Output SQNR in dB with energies summed over samples, averaged over outputs.

    Args:
        signal: Float output energy, shape (outputs, samples).
        noise: Error energy of the int8 outputs, same shape.

    Returns:
        Mean over outputs of 10*log10(sum signal / sum noise), within +-120 dB.

    Example:
        >>> total_sqnr_db(np.array([[1.0, 3.0]]), np.array([[0.01, 0.03]]))
        20.0
    """
    return float(np.mean(_db(np.sum(signal, axis=-1), np.sum(noise, axis=-1))))


def _db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30))
    return np.clip(db, -_CAP_DB, _CAP_DB)


def bootstrap_weights(n: int, resamples: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """How often each of `n` samples is drawn in each bootstrap resample.

    Returns:
        Integer counts of shape (resamples, n), from a fixed seed.
    """
    if n == 0:
        return np.zeros((resamples, 0))
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def clearly_better(signal: np.ndarray, noise: np.ndarray, baseline: np.ndarray,
                   margin_db: float, weights: np.ndarray | None = None) -> bool:
    """Whether error `noise` beats `baseline` on the same samples beyond noise.

    Both the SQNR gain over all samples must exceed `margin_db` and the gain
    must stay positive in at least `CONFIDENCE` of the bootstrap resamples
    (`weights`, see `bootstrap_weights`), so a gain carried by one or two
    samples does not count.

    Args:
        signal: Float output energy, shape (outputs, samples).
        noise: Error energy of the candidate, same shape.
        baseline: Error energy of the current choice, same shape.
        margin_db: Minimum SQNR gain in dB.
        weights: Bootstrap counts, shape (resamples, samples).

    Returns:
        True if the candidate is clearly better.

    Example:
        >>> s = np.ones((1, 100)); b = np.full((1, 100), 0.01)
        >>> clearly_better(s, b / 2, b, 0.1)
        True
    """
    gain = total_sqnr_db(signal, noise) - total_sqnr_db(signal, baseline)
    if gain <= margin_db:
        return False
    if weights is None:
        weights = bootstrap_weights(signal.shape[-1])
    s, n, b = (weights @ a.T for a in (signal, noise, baseline))  # (resamples, outputs)
    resampled_gain = np.mean(_db(s, n) - _db(s, b), axis=1)
    return float(np.mean(resampled_gain > 0)) >= CONFIDENCE


def corrupted_frames(peaks: np.ndarray, z: float = OUTLIER_Z) -> list[int]:
    """Samples whose activations sit far above the others': corrupted frames.

    Args:
        peaks: Per-sample peak |activation|, shape (samples, tensors), from
            the tensors early in the graph (see `early_columns`).
        z: Threshold in robust standard deviations.

    Returns:
        Sorted sample indices. Empty with fewer than `MIN_SAMPLES_FOR_OUTLIERS`
        samples, or when more than `MAX_OUTLIER_FRACTION` would be flagged (then
        they are not rare outliers but part of the data).

    Example:
        >>> peaks = np.ones((40, 3)); peaks[7] = 50.0
        >>> corrupted_frames(peaks)
        [7]
    """
    peaks = np.asarray(peaks, np.float64)
    n = len(peaks)
    if n < MIN_SAMPLES_FOR_OUTLIERS or peaks.ndim != 2 or peaks.shape[1] == 0:
        return []
    typical = np.median(peaks, axis=0)
    live = typical > 0
    if not np.any(live):
        return []
    ratio = np.median(peaks[:, live] / typical[live], axis=1)
    log_ratio = np.log(np.maximum(ratio, 1e-30))
    center = np.median(log_ratio)
    spread = max(1.4826 * np.median(np.abs(log_ratio - center)), _MIN_LOG_SPREAD)
    flagged = np.flatnonzero((log_ratio - center) / spread > z)
    if len(flagged) > MAX_OUTLIER_FRACTION * n:
        _log.info("auto: %d of %d samples look like outliers; too many to be corrupted "
                  "frames, so all of them score.", len(flagged), n)
        return []
    return [int(i) for i in flagged]


def early_columns(calib: Any) -> np.ndarray:
    """`calib.sample_peaks` of the first `EARLY_FRACTION` of the tensors the graph computes.

    Without recorded peaks, an array with no columns (nothing to judge by).
    """
    peaks = calib.sample_peaks
    if peaks is None:
        return np.zeros((0, 0))
    column = {t.index: k for k, t in enumerate(calib.tensors)}
    order = [column[i] for i in _tflite.production_order(calib.model) if i in column]
    early = order[: max(2, int(np.ceil(len(order) * EARLY_FRACTION)))]
    return peaks[:, early]


__all__ = ["AutoReport", "CANDIDATES", "bootstrap_weights", "candidate_methods",
           "choose_and_quantize",
           "clearly_better", "corrupted_frames", "early_columns", "error_energy",
           "signal_energy", "total_sqnr_db"]

"""`auto` (the default): pick ranges by how well the int8 model matches float.

No single per-tensor rule wins everywhere: `mse` is best for clean,
Gaussian-like activations, `percentile` and `kl` survive corrupted calibration
frames and heavy tails, and `minmax` is right for tensors whose rare extremes
matter. So `auto` measures instead of guessing:

1. Every per-tensor method (`minmax`, `percentile`, `mse`, `kl`) proposes a
   range for every tensor, from the histograms alone.
2. Each proposal is quantized into a full int8 model and run in LiteRT on the
   calibration samples the `Calibration` kept (`Calibration.samples`, up to 128
   by default), next to the calibrated float model.
3. The score of a proposal is the trimmed mean, over samples, of the output
   SQNR in dB (int8 vs float, averaged over the model's outputs); the worst
   `TRIM` fraction of samples is left out, so a few corrupted calibration
   frames cannot decide the outcome.
4. Per tensor, the range comes from the best-scoring proposal. Then, tensor by
   tensor (those whose proposals differ most first, within a budget of
   `REFINE_BUDGET` model evaluations), the range of the runner-up proposal is
   tried in place and kept when it is clearly better (the test below, with
   `REFINE_MIN_GAIN_DB`); the search stops after `REFINE_PATIENCE` tries in a
   row that do not. The choice is per tensor, judged on the whole model.

`minmax` is always a candidate and wins unless another proposal is clearly
better on the same samples: the per-sample gains (worst `TRIM` left out) must
average more than `MINMAX_MARGIN_DB` and more than two standard errors. So on
the calibration samples `auto` is never worse than the converter's own
ranges, and it leaves them only for a gain that noise would not explain. The
per-tensor refinement uses the same test. Without kept samples (a Calibration saved with `keep_samples=0`), `auto`
falls back to `percentile` and says so in the log.

Example:
    >>> blob = tfq8.convert(model, x_train[:500])          # method="auto"
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np

from tfq8 import _tflite

_log = logging.getLogger("tfq8")

CANDIDATES = ("minmax", "percentile", "mse", "kl")
FALLBACK = "percentile"
TRIM = 0.05
MINMAX_MARGIN_DB = 0.1
REFINE_BUDGET = 8
REFINE_PATIENCE = 3
REFINE_MIN_GAIN_DB = 0.01
_CAP_DB = 120.0


@dataclasses.dataclass
class AutoReport:
    """What `auto` measured: score per candidate and the per-tensor choice.

    Attributes:
        scores: Candidate method -> trimmed-mean output SQNR (dB).
        choice: Tensor index -> method whose range it uses.
        score: Score of the final ranges.
    """

    scores: dict[str, float]
    choice: dict[int, str]
    score: float


def choose(calib: Any, *, overrides: Mapping[int, tuple[float, float]] | None = None,
           **quant: Any) -> dict[int, tuple[float, float]]:
    """Ranges chosen by `auto` for every calibrated tensor.

    Args:
        calib: The `Calibration`.
        overrides: Ranges fixed by the user (tensor index -> (min, max)).
        **quant: Quantization options (`per_channel`, `input_type`, `output_type`).

    Returns:
        Tensor index -> (min, max). The measurements are logged and stored on
        `calib.last_auto` as an `AutoReport`.
    """
    overrides = dict(overrides or {})
    proposals = {m: calib.ranges(m) for m in CANDIDATES}
    for p in proposals.values():
        p.update(overrides)
    if calib.samples is None or len(calib.samples[0]) == 0:
        _log.info("auto: the calibration kept no samples; using %s ranges.", FALLBACK)
        chosen = dict(proposals[FALLBACK])
        calib.last_auto = AutoReport({}, {i: FALLBACK for i in chosen}, float("nan"))
        return chosen

    scorer = _Scorer(calib, quant)
    per_sample = {m: scorer(p) for m, p in proposals.items()}
    scores = {m: trimmed_mean(db) for m, db in per_sample.items()}
    # The converter's ranges win unless another proposal is clearly better on
    # the same samples: see `clearly_better`.
    eligible = [m for m in CANDIDATES if m != "minmax"
                and clearly_better(per_sample[m], per_sample["minmax"], MINMAX_MARGIN_DB)]
    order = sorted(eligible, key=lambda m: (-scores[m], CANDIDATES.index(m)))
    best = order[0] if order else "minmax"
    second = (order[1] if len(order) > 1 else "minmax") if order else max(
        (m for m in CANDIDATES if m != "minmax"), key=lambda m: scores[m])
    chosen = dict(proposals[best])
    choice = {i: best for i in chosen}
    current = per_sample[best]

    # Per-tensor refinement: try the runner-up's range where the two differ most.
    def gap(i: int) -> float:
        (a, b), (c, d) = proposals[best][i], proposals[second][i]
        return abs(np.log((b - a + 1e-30) / (d - c + 1e-30)))

    todo = [i for i in sorted(chosen, key=gap, reverse=True)
            if i not in overrides and gap(i) > 1e-3][:REFINE_BUDGET]
    misses = 0
    for i in todo:
        trial = dict(chosen)
        trial[i] = proposals[second][i]
        db = scorer(trial)
        if clearly_better(db, current, REFINE_MIN_GAIN_DB):
            chosen, current, misses = trial, db, 0
            choice[i] = second
        else:
            misses += 1
            if misses == REFINE_PATIENCE:
                break
    score = trimmed_mean(current)
    calib.last_auto = AutoReport(scores, choice, score)
    _log.info("auto: scores (trimmed-mean output SQNR, dB) %s; chose %s, %d tensor(s) "
              "from %s; final %.2f dB.",
              {m: round(s, 2) for m, s in scores.items()}, best,
              sum(1 for m in choice.values() if m != best), second, score)
    return chosen


class _Scorer:
    """Quantizes a range proposal and scores its outputs against float.

    All kept samples run in one LiteRT invoke (XNNPACK kernels, all cores);
    the ranges are patched into the calibrated model's bytes, not rebuilt.
    """

    def __init__(self, calib: Any, quant: Mapping[str, Any]):
        self.writer = _tflite.RangeWriter(calib.model)
        self.quant = dict(quant)
        self.samples = list(calib.samples)
        self.reference = _run(calib.model, self.samples)

    def __call__(self, ranges: Mapping[int, tuple[float, float]]) -> np.ndarray:
        """Per-sample output SQNR (dB) of the int8 model with `ranges`."""
        blob = _tflite.quantize(self.writer.write(ranges), **self.quant)
        return per_sample_sqnr(self.reference, _run(blob, self.samples))


def _run(model: bytes, samples: list[np.ndarray]) -> list[np.ndarray]:
    """Runs `samples` through `model` (float in, float out) in one batch if allowed."""
    from tfq8.harness.interpreter import TensorIO, make_interpreter  # noqa: PLC0415 (cycle)

    interp = make_interpreter(model, backend="xnnpack", num_threads=_threads(), verified=True)
    ins = [TensorIO.from_details(d) for d in interp.get_input_details()]
    n = len(samples[0])
    batch = n if all(t.signature and t.signature[0] == -1 for t in ins) else 1
    if batch != ins[0].shape[0]:
        for t in ins:
            interp.resize_tensor_input(t.index, [batch, *t.shape[1:]])
        interp.allocate_tensors()
    outs = [TensorIO.from_details(d) for d in interp.get_output_details()]
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for start in range(0, n, batch):
        for t, a in zip(ins, samples):
            interp.set_tensor(t.index, t.quantize(a[start : start + batch]))
        interp.invoke()
        for k, t in enumerate(outs):
            results[k].append(t.dequantize(interp.get_tensor(t.index)))
    return [np.concatenate(r) for r in results]


def per_sample_sqnr(reference: list[np.ndarray], outputs: list[np.ndarray]) -> np.ndarray:
    """Output SQNR in dB per sample (mean over the model's outputs), capped at 120."""
    per_output = []
    for ref, out in zip(reference, outputs):
        ref = ref.reshape(len(ref), -1).astype(np.float64)
        err = out.reshape(len(out), -1).astype(np.float64) - ref
        signal = np.sum(ref**2, axis=1)
        noise = np.sum(err**2, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30))
        per_output.append(np.clip(db, -_CAP_DB, _CAP_DB))
    return np.mean(per_output, axis=0)


def _trimmed(values: np.ndarray, trim: float = TRIM) -> np.ndarray:
    """The values without the lowest `trim` fraction."""
    keep = max(1, int(np.ceil(len(values) * (1 - trim))))
    return np.sort(values)[::-1][:keep]


def trimmed_mean(db: np.ndarray, trim: float = TRIM) -> float:
    """Mean of per-sample dB without the worst `trim` fraction of samples."""
    return float(np.mean(_trimmed(np.asarray(db, np.float64), trim)))


def clearly_better(db: np.ndarray, baseline: np.ndarray, margin_db: float) -> bool:
    """Whether per-sample scores `db` beat `baseline` on the same samples.

    The paired differences, without their worst `TRIM` fraction (a few bad
    calibration frames may get worse), must average more than `margin_db` and
    more than two standard errors: a gain that noise on a hundred samples
    could produce does not count.
    """
    diff = _trimmed(np.asarray(db, np.float64) - np.asarray(baseline, np.float64))
    gain = float(np.mean(diff))
    se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return gain > margin_db and gain > 2 * se


def _threads() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 1


__all__ = ["AutoReport", "CANDIDATES", "choose", "clearly_better", "per_sample_sqnr",
           "trimmed_mean"]

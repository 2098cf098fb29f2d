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
   tried in place and kept when it raises the score by at least
   `REFINE_MIN_GAIN_DB`; the search stops after `REFINE_PATIENCE` tries in a
   row that do not. The choice is per tensor, judged on the whole model.

`minmax` is always a candidate and wins unless another proposal scores at
least `MINMAX_MARGIN_DB` higher, so on the calibration samples `auto` is never
worse than the converter's own ranges, and it leaves them only for a clear
gain. Without kept samples (a Calibration saved with `keep_samples=0`), `auto`
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
from tfq8.ranges.registry import get_method

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
    scores = {m: scorer(p) for m, p in proposals.items()}
    # The converter's ranges win unless another proposal is clearly better:
    # differences below MINMAX_MARGIN_DB on a hundred samples are noise.
    handicap = {m: 0.0 if m == "minmax" else MINMAX_MARGIN_DB for m in CANDIDATES}
    order = sorted(CANDIDATES, key=lambda m: (-(scores[m] - handicap[m]), CANDIDATES.index(m)))
    best, second = order[0], order[1]
    chosen = dict(proposals[best])
    choice = {i: best for i in chosen}
    score = scores[best]

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
        s = scorer(trial)
        if s > score + REFINE_MIN_GAIN_DB:
            chosen, score, misses = trial, s, 0
            choice[i] = second
        else:
            misses += 1
            if misses == REFINE_PATIENCE:
                break
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

    def __call__(self, ranges: Mapping[int, tuple[float, float]]) -> float:
        blob = _tflite.quantize(self.writer.write(ranges), **self.quant)
        return trimmed_sqnr(self.reference, _run(blob, self.samples))


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


def trimmed_sqnr(reference: list[np.ndarray], outputs: list[np.ndarray], trim: float = TRIM) -> float:
    """Trimmed mean over samples of per-sample output SQNR (dB), mean over outputs."""
    per_sample = []
    for ref, out in zip(reference, outputs):
        ref = ref.reshape(len(ref), -1).astype(np.float64)
        err = out.reshape(len(out), -1).astype(np.float64) - ref
        signal = np.sum(ref**2, axis=1)
        noise = np.sum(err**2, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30))
        per_sample.append(np.clip(db, -_CAP_DB, _CAP_DB))
    db = np.mean(per_sample, axis=0)
    keep = max(1, int(np.ceil(len(db) * (1 - trim))))
    return float(np.mean(np.sort(db)[::-1][:keep]))


def _threads() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 1


__all__ = ["AutoReport", "CANDIDATES", "choose", "get_method", "trimmed_sqnr"]

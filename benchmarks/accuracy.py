"""Accuracy, fidelity, time and memory of tfq8's methods against TFLite's converter.

For every model (see `suite.py`), calibration scenario (clean, 1% corrupted
frames, ten times more samples) and method (the converter's own int8, tfq8's
`minmax`, `percentile`, `kl`, `mse` and `auto`; a method with `+bc`, such as
`auto+bc`, adds `bias_correction=True`; `auto[mse:kl]` is `auto` comparing only
the methods named, `method_options={"candidates": ["mse", "kl"]}`, and
`auto[mse:percentile(percentile=99.999)]` gives one an option), prints: float and int8 top-1,
the drop in points, top-1 agreement with float, output SQNR against float (dB),
conversion wall time (statistics included) and its ratio to the converter's,
and the peak growth of resident memory during the conversion.

Times are measured side by side in one run: the converter's own conversion and
tfq8's `convert()` on the same model and data, one after the other. With
`--repeats=N` (N > 1) each method also runs N times more, end to end and
interleaved with the others in rotating order; the table then shows median
times and the median of the per-round ratios to the converter.

Usage:
    python benchmarks/accuracy.py                       # the whole suite
    python benchmarks/accuracy.py --models=resnet8 --scenarios=clean
    python benchmarks/accuracy.py --memory              # statistics memory vs samples
    python benchmarks/accuracy.py --models=resnet8 --scenarios=clean \
        --methods=converter,auto --repeats=7            # time ratio, median of 7 paired
    python benchmarks/accuracy.py --methods=converter,auto,auto+bc   # bias correction
    python benchmarks/accuracy.py --methods=auto,auto[mse],auto[percentile:mse]  # candidates
"""

from __future__ import annotations

import gc
import json
import logging as logging_std
import os
import re
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import suite  # noqa: E402
import tfq8  # noqa: E402
from tfq8.pipeline import converter_int8  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(suite.available()), "Cases to run.")
flags.DEFINE_list("scenarios", ["clean", "corrupt", "x10"], "Calibration scenarios.")
flags.DEFINE_list("methods", ["converter", "minmax", "percentile", "kl", "mse", "auto"],
                  "Methods; 'converter' is TFLite's own int8 conversion; METHOD+bc adds "
                  "bias_correction=True.")
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
flags.DEFINE_integer("repeats", 1, "Time every method this many more times, end to end and "
                     "interleaved; report median times and median paired ratios.",
                     lower_bound=1)
flags.DEFINE_bool("memory", False, "Measure statistics memory for 100..5000 samples instead.")


class PeakRss:
    """Samples the process' resident memory in a thread; peak growth in MiB."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(case: suite.Case, scenarios, methods) -> list[dict]:
    reference = suite.float_reference(case)
    float_acc = float(np.mean(reference.argmax(1) == case.y_test))
    # Warm up both paths (TensorFlow's first trace of a model is slower) so
    # neither pays a one-time cost inside the timed runs.
    converter_int8(case.model, case.pool[:2])
    tfq8.convert(case.model, case.pool[:2])
    rows = []
    for scen in scenarios:
        x = suite.scenario(case, scen)
        paired = _paired_times(case, x, methods) if FLAGS.repeats > 1 else None
        times = {}
        calib, t_stats = None, 0.0
        for method in methods:
            # tfq8's time is end to end: statistics (measured once per scenario,
            # shared by the methods) plus the method's own range choice and quantization.
            with PeakRss() as mem:
                if method != "converter" and calib is None:
                    t0 = time.perf_counter()
                    calib = tfq8.calibrate(case.model, x)
                    t_stats = time.perf_counter() - t0
                t0 = time.perf_counter()
                if method == "converter":
                    blob = converter_int8(case.model, x)
                else:
                    blob = tfq8.convert(calibration=calib, **_options(method))
                times[method] = time.perf_counter() - t0 + (
                    0.0 if method == "converter" else t_stats)
            row = {"model": case.name, "scenario": scen, "samples": len(x), "method": method,
                   "float_acc": float_acc, **suite.evaluate(blob, case, reference),
                   "time_s": times[method], "rss_growth_mib": mem.growth_mib,
                   "size_bytes": len(blob)}
            if method.startswith("auto") and calib.last_auto is not None:
                row["auto_scores"] = calib.last_auto.scores
            row["drop_pts"] = 100 * (float_acc - row["int8_acc"])
            rows.append(row)
        conv = times.get("converter")
        for row in rows[-len(methods):]:
            row["time_ratio"] = row["time_s"] / conv if conv else float("nan")
            if paired:
                row["time_s"], row["time_ratio"] = paired[row["method"]]
        _print_rows(rows[-len(methods):])
    return rows


def _options(method: str) -> dict:
    """`tfq8.convert` options for a method name (`auto+bc`: auto with bias correction;
    `auto[mse:kl]`: auto comparing minmax, mse and kl)."""
    base = method.removesuffix("+bc")
    options = {"method": base, "bias_correction": base != method}
    if base.startswith("auto[") and base.endswith("]"):
        candidates = []
        for item in base[5:-1].split(":"):  # NAME or NAME(KEY=VALUE)
            name, key, value = re.fullmatch(r"([\w.]+)(?:\((\w+)=([^)]+)\))?", item).groups()
            candidates.append((name, {key: float(value)}) if key else name)
        options.update(method="auto", method_options={"candidates": candidates})
    return options


def _paired_times(case: suite.Case, x: np.ndarray, methods) -> dict[str, tuple[float, float]]:
    """Median end-to-end time and median paired ratio to the converter, per method.

    Each of `--repeats` rounds runs every method once, end to end (tfq8's
    statistics included, not shared), in an order rotated by one each round,
    so no method always runs first; a method's ratio is the median over
    rounds of its time over the converter's time in the same round. Slow
    drift of the machine then cancels in each pair instead of landing on
    whichever method ran in a slow stretch.
    """
    rounds: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(FLAGS.repeats):
        order = list(methods[r % len(methods):]) + list(methods[:r % len(methods)])
        for method in order:
            gc.collect()  # no method pays for garbage the previous one left
            t0 = time.perf_counter()
            if method == "converter":
                converter_int8(case.model, x)
            else:
                tfq8.convert(case.model, x, **_options(method))
            rounds[method].append(time.perf_counter() - t0)
    for m, t in rounds.items():
        print(f"  {case.name} {len(x)} samples, {m}: " + " ".join(f"{v:.2f}" for v in t)
              + " s per round", flush=True)
    conv = np.array(rounds.get("converter", [np.nan] * FLAGS.repeats))
    return {m: (float(np.median(t)), float(np.median(np.array(t) / conv)))
            for m, t in rounds.items()}


def _print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['model']:<19} {r['scenario']:<8} {r['samples']:>5} {r['method']:<10} "
              f"{100 * r['float_acc']:6.2f} {100 * r['int8_acc']:6.2f} {r['drop_pts']:+6.2f} "
              f"{100 * r['agreement']:6.2f} {r['sqnr_db']:6.2f} {r['time_s']:7.2f} "
              f"{r['time_ratio']:5.2f} {r['rss_growth_mib']:7.1f}", flush=True)


class _WorkerPeak(logging_std.Handler):
    """Picks up the peak RSS the statistics worker reports in tfq8's debug log."""

    def __enter__(self):
        self.mib, self._logger = 0.0, logging_std.getLogger("tfq8")
        self._level, self._propagate = self._logger.level, self._logger.propagate
        self._logger.setLevel(logging_std.DEBUG)
        self._logger.propagate = False  # tfq8's other debug lines stay out of the output
        self._logger.addHandler(self)
        return self

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Statistics worker: peak RSS"):
            self.mib = float(msg.split()[4])

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
        self._logger.propagate = self._propagate


def memory_table() -> None:
    case = suite.resnet8() or suite.digits()
    print(f"statistics memory on {case.name}: samples, histogram bytes, peak RSS growth (MiB), "
          "statistics worker's peak RSS (MiB; 0 if none ran)")
    for n in (100, 1000, 5000):
        x = case.pool[:n] if len(case.pool) >= n else np.resize(case.pool, (n, *case.pool.shape[1:]))
        with PeakRss() as mem, _WorkerPeak() as worker:
            calib = tfq8.calibrate(case.model, x)
        hist_bytes = sum(t.histogram.counts.nbytes for t in calib.tensors)
        worker_mib = worker.mib
        print(f"{n:>6} {hist_bytes:>10} {mem.growth_mib:8.1f} {worker_mib:8.1f}  (data itself: "
              f"{x.nbytes / 2**20:.1f} MiB)", flush=True)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.memory:
        memory_table()
        return
    print(f"{'model':<19} {'scen.':<8} {'n':>5} {'method':<10} {'float':>6} {'int8':>6} "
          f"{'drop':>6} {'agree':>6} {'SQNR':>6} {'time':>7} {'ratio':>5} {'RSS+':>7}")
    rows = []
    loaders = suite.available()
    for name in FLAGS.models:
        if name not in loaders:
            raise app.UsageError(f"--models: unknown case {name!r}; choose from {list(loaders)}")
        case = loaders[name]()
        if case is None:
            continue
        rows += run_case(case, FLAGS.scenarios, FLAGS.methods)
    summarize(rows)
    if FLAGS.json:
        public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        tfq8.calibration.atomic_write(FLAGS.json, json.dumps(public, indent=1).encode())


def summarize(rows: list[dict]) -> None:
    """The issue's targets for `auto` against the converter, case by case."""
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["model"], r["scenario"]), {})[r["method"]] = r
    gains, ok = [], True
    print("\nauto vs converter: d_top1 (pts), d_SQNR (dB), each with its 90% bootstrap interval "
          "over the test set; drops (pts)")
    for key, m in by_case.items():
        if "auto" not in m or "converter" not in m:
            continue
        a, c = m["auto"], m["converter"]
        d_acc = 100 * (a["int8_acc"] - c["int8_acc"])
        d_db = a["sqnr_db"] - c["sqnr_db"]
        gains.append(d_db)
        bad = d_acc < -0.1 or d_db < -0.3 or (c["drop_pts"] > 1 and a["drop_pts"] > c["drop_pts"] / 2)
        ok &= not bad
        lo, hi = sqnr_gain_interval(a["_noise"], c["_noise"])
        acc_lo, acc_hi = top1_gain_interval(a["_correct"], c["_correct"])
        print(f"  {key[0]:<19} {key[1]:<8} {d_acc:+6.2f} [{acc_lo:+.2f}, {acc_hi:+.2f}] "
              f"{d_db:+6.2f} [{lo:+.2f}, {hi:+.2f}]  "
              f"{c['drop_pts']:+.2f} -> {a['drop_pts']:+.2f}{'   MISSED' if bad else ''}")
    if gains:
        print(f"mean SQNR gain {np.mean(gains):+.2f} dB over {len(gains)} cases; "
              f"targets {'met' if ok and np.mean(gains) >= 1.0 else 'NOT met'}")


def top1_gain_interval(correct: np.ndarray, baseline: np.ndarray, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """90% paired bootstrap interval of the top-1 gain of `correct` over `baseline` (points).

    Both are per-test-sample booleans for the same images. Only the images
    where exactly one model is right move the difference, so with a few dozen
    such images a difference of 0.1-0.2 points is within what resampling the
    test set gives.
    """
    diff = correct.astype(np.int8) - baseline.astype(np.int8)
    changed = diff[diff != 0].astype(np.float64)
    if changed.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    # Resampling all n images is resampling how many of the changed ones are drawn.
    n = len(diff)
    picks = rng.binomial(n, changed.size / n, resamples)
    gains = np.array([changed[rng.integers(0, changed.size, k)].sum() for k in picks]) / n
    lo, hi = np.percentile(100 * gains, [5, 95])
    return float(lo), float(hi)


def sqnr_gain_interval(noise: np.ndarray, baseline: np.ndarray, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """90% bootstrap interval of the SQNR gain of `noise` over `baseline` (dB).

    The test set is resampled with replacement; the float signal cancels in
    the difference, so only the two error energies are needed. Where a few
    test samples with very large outputs dominate the error, the interval is
    wide: that is how much the test set itself can say.
    """
    rng = np.random.default_rng(seed)
    gains = np.empty(resamples)
    for k in range(resamples):
        i = rng.integers(0, len(noise), len(noise))
        gains[k] = 10 * np.log10(max(baseline[i].sum(), 1e-30) / max(noise[i].sum(), 1e-30))
    lo, hi = np.percentile(gains, [5, 95])
    return float(lo), float(hi)


if __name__ == "__main__":
    app.run(main)

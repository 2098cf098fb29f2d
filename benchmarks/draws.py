"""How much of `auto`'s top-1 difference from the converter is the calibration draw.

`accuracy.py` scores one calibration set per case: the first `n` images of the
calibration pool. A top-1 difference between two int8 models that both agree
with float on 97-99% of the test images is decided by the few images where
they differ, and which those are depends on the calibration samples too. This
script repeats the clean case over disjoint draws of the pool (draw k is
images `k*n .. (k+1)*n`; draw 0 is `accuracy.py`'s clean case) and prints, per
draw, float, the converter's own int8 and tfq8's `auto` (top-1, output SQNR
against float, top-1 agreement with float), then the mean difference per
model and over all draws.

With `--bias_correction`, each draw also converts with
`tfq8.convert(..., bias_correction=True)` (`auto`'s ranges, then
`tfq8.bias_correction`) and prints its figures, its difference from `auto`
alone and the conversion times of both.

Nothing is asserted: this prints figures.

Usage:
    .venv/bin/python benchmarks/draws.py                    # all models, 5 draws each
    .venv/bin/python benchmarks/draws.py --models=fmnist_cnn --draws=10
    .venv/bin/python benchmarks/draws.py --bias_correction
"""

from __future__ import annotations

import json
import os
import sys
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
flags.DEFINE_integer("draws", 5, "Disjoint calibration draws per model (fewer where the "
                     "pool holds fewer).", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
flags.DEFINE_boolean("bias_correction", False, "Also convert with bias_correction=True.")


def _scores(blob: bytes, case: suite.Case, reference: np.ndarray) -> dict[str, float]:
    row = suite.evaluate(blob, case, reference)
    return {"top1": 100 * row["int8_acc"], "sqnr_db": row["sqnr_db"],
            "agreement": 100 * row["agreement"]}


def run_case(case: suite.Case, draws: int) -> list[dict]:
    reference = suite.float_reference(case)
    float_top1 = 100 * float(np.mean(reference.argmax(1) == case.y_test))
    n = case.calib_samples
    rows = []
    for k in range(min(draws, len(case.pool) // n)):
        x = case.pool[k * n:(k + 1) * n]
        conv = _scores(converter_int8(case.model, x), case, reference)
        start = time.perf_counter()
        blob = tfq8.convert(case.model, x)
        auto_s = time.perf_counter() - start
        auto = _scores(blob, case, reference)
        row = {"model": case.name, "draw": k, "samples": n, "float_top1": float_top1,
               "converter": conv, "auto": auto,
               "d_top1": auto["top1"] - conv["top1"], "d_sqnr_db": auto["sqnr_db"] - conv["sqnr_db"]}
        line = (f"{case.name:<19} {k:>4} {float_top1:6.2f}  {conv['top1']:6.2f} {conv['sqnr_db']:6.2f} "
                f"{conv['agreement']:6.2f}  {auto['top1']:6.2f} {auto['sqnr_db']:6.2f} "
                f"{auto['agreement']:6.2f}  {row['d_top1']:+6.2f} {row['d_sqnr_db']:+6.2f}")
        if FLAGS.bias_correction:
            start = time.perf_counter()
            blob = tfq8.convert(case.model, x, bias_correction=True)
            bc_s = time.perf_counter() - start
            bc = _scores(blob, case, reference)
            row.update(auto_bc=bc, auto_s=auto_s, auto_bc_s=bc_s,
                       bc_d_top1=bc["top1"] - auto["top1"], bc_d_sqnr_db=bc["sqnr_db"] - auto["sqnr_db"])
            line += (f"  | +bc {bc['top1']:6.2f} {bc['sqnr_db']:6.2f} {bc['agreement']:6.2f}  "
                     f"{row['bc_d_top1']:+6.2f} {row['bc_d_sqnr_db']:+6.2f}  {auto_s:5.1f}s {bc_s:5.1f}s")
        rows.append(row)
        print(line, flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    print("\nmean over draws (min, max): d_top1 (pts), d_SQNR (dB); draws where auto's "
          "agreement with float is at least the converter's")
    for name in dict.fromkeys(r["model"] for r in rows):
        _summary_line(name, [r for r in rows if r["model"] == name])
    _summary_line("all", rows)
    if "auto_bc" in rows[0]:
        print("\nbias_correction=True against auto alone, mean over draws (min, max); "
              "draws where its agreement with float is at least auto's; conversion time ratio")
        for name in [*dict.fromkeys(r["model"] for r in rows), "all"]:
            some = [r for r in rows if name in ("all", r["model"])]
            d1 = [r["bc_d_top1"] for r in some]
            ds = [r["bc_d_sqnr_db"] for r in some]
            closer = sum(r["auto_bc"]["agreement"] >= r["auto"]["agreement"] for r in some)
            ratio = np.median([r["auto_bc_s"] / r["auto_s"] for r in some])
            print(f"  {name:<19} {len(some):>3} draws  d_top1 {np.mean(d1):+.2f} ({min(d1):+.2f}, "
                  f"{max(d1):+.2f})  d_SQNR {np.mean(ds):+.2f} ({min(ds):+.2f}, {max(ds):+.2f})  "
                  f"agreement >= auto's in {closer}/{len(some)}  time x{ratio:.2f}")


def _summary_line(name: str, rows: list[dict]) -> None:
    d1 = [r["d_top1"] for r in rows]
    ds = [r["d_sqnr_db"] for r in rows]
    closer = sum(r["auto"]["agreement"] >= r["converter"]["agreement"] for r in rows)
    print(f"  {name:<19} {len(rows):>3} draws  d_top1 {np.mean(d1):+.2f} ({min(d1):+.2f}, "
          f"{max(d1):+.2f})  d_SQNR {np.mean(ds):+.2f} ({min(ds):+.2f}, {max(ds):+.2f})  "
          f"agreement >= converter's in {closer}/{len(rows)}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    loaders = suite.available()
    for name in FLAGS.models:
        if name not in loaders:
            raise app.UsageError(f"--models: unknown case {name!r}; choose from {list(loaders)}")
    print(f"{'model':<19} {'draw':>4} {'float':>6}  {'converter top1/SQNR/agree':>20}  "
          f"{'auto top1/SQNR/agree':>20}  {'d_top1':>6} {'d_SQNR':>6}")
    rows = []
    for name in FLAGS.models:
        case = loaders[name]()
        if case is not None:
            rows += run_case(case, FLAGS.draws)
    if rows:
        summarize(rows)
    if FLAGS.json:
        tfq8.calibration.atomic_write(FLAGS.json, json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    app.run(main)

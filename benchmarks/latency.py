"""Latency of tfq8's int8 models: int8 vs float, per op, and vs the converter's own int8.

For each model (MLPerf Tiny ResNet-8 and VWW MobileNet from `../shared`, and
the digits CNN of `suite.py`), single-threaded by default:

1. tfq8's int8 model (`tfq8.convert`, method auto) and the converter's own
   full-integer int8 model (`TFLiteConverter` with the same calibration
   samples, int8 I/O), plus the plain float model;
2. `tfq8.benchmark(int8, reference=float)`: interleaved latency, speedup and
   the per-op table of both (each op timed on its own);
3. `tfq8.benchmark(tfq8_int8, reference=converter_int8)`: the latency ratio of
   the two int8 models from one interleaved run (> 1 means tfq8's is faster);
4. sizes, and top-1 agreement of each int8 model with float (ResNet-8 also
   top-1 accuracy on CIFAR-10 test images 5000..9999).

Nothing is asserted: this prints figures. Timings on a shared machine are
noisy; interleaving makes the ratios robust, absolute times less so.

Usage:
    .venv/bin/python benchmarks/latency.py          # all models, all three kernel choices
    .venv/bin/python benchmarks/latency.py --models resnet8 --backends builtin
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

import tfq8  # noqa: E402
from tfq8.pipeline import converter_int8  # noqa: E402

def run_case(case: suite.Case, args: argparse.Namespace) -> dict:
    from tfq8.models import load_model  # noqa: PLC0415

    calib = case.pool[: case.calib_samples].astype(np.float32)
    t0 = time.monotonic()
    ours = tfq8.convert(case.model, calib)
    t_convert = time.monotonic() - t0
    theirs = converter_int8(case.model, calib)  # TFLite's own full-integer int8
    flt = load_model(case.model).to_float_tflite()
    per_backend = {}
    for backend in args.backends.split(","):
        kw = dict(num_threads=args.threads, backend=backend, time_budget_s=args.budget,
                  op_time_budget_s=args.op_budget)
        bench = tfq8.benchmark(ours, reference=flt,
                               **dict(kw, per_op=backend in args.op_backends.split(",")))
        bench_conv = tfq8.benchmark(theirs, reference=flt, **dict(kw, per_op=False))
        # tfq8 int8 / converter int8, both orders of reference (interleaved each), geometric mean.
        a = tfq8.benchmark(ours, reference=theirs, **dict(kw, per_op=False)).speedup
        b = tfq8.benchmark(theirs, reference=ours, **dict(kw, per_op=False)).speedup
        per_backend[backend] = dict(bench=bench, bench_conv=bench_conv, vs=float(np.sqrt(a / b)))
    n = min(args.eval_samples, len(case.x_test))
    labels = case.y_test[:n] if case.name != "vww" else None
    chk_ours = tfq8.check(ours, reference=flt, data=case.x_test[:n], labels=labels,
                          per_tensor=False)
    chk_theirs = tfq8.check(theirs, reference=flt, data=case.x_test[:n], labels=labels,
                            per_tensor=False)
    return dict(name=case.name, per_backend=per_backend, ours=ours, theirs=theirs, flt=flt,
                chk_ours=chk_ours, chk_theirs=chk_theirs, t_convert=t_convert, n=n)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet8,vww,digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", default="xnnpack,builtin,reference",
                        help="comma-separated: xnnpack, builtin, reference")
    parser.add_argument("--op-backends", default="xnnpack,builtin",
                        help="backends that get per-op tables")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per interleaved run")
    parser.add_argument("--op-budget", type=float, default=0.1, help="seconds per op")
    parser.add_argument("--eval-samples", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loaders = {"resnet8": suite.resnet8, "vww": suite.vww, "digits": suite.digits}
    results = []
    for name in args.models.split(","):
        case = loaders[name]()
        if case is None:
            continue
        print(f"== {name}: converting and timing ...", file=sys.stderr, flush=True)
        results.append(run_case(case, args))

    print(f"\n### Latency, {args.threads} thread(s) (`benchmarks/latency.py`)\n")
    print("| model | kernels | float ms | tfq8 int8 ms | speedup | converter int8 speedup | "
          "tfq8 / converter int8 latency |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for backend, m in r["per_backend"].items():
            b, c = m["bench"], m["bench_conv"]
            print(f"| {r['name']} | {backend} | {b.latency_ms['float']['p50']:.3f} | "
                  f"{b.latency_ms['int8']['p50']:.3f} | {b.speedup:.2f}x | {c.speedup:.2f}x | "
                  f"{m['vs']:.3f} |")
    print("\n| model | float bytes | tfq8 int8 bytes (vs float) | converter int8 bytes | "
          "top-1 agreement with float: tfq8 / converter | top-1: float / tfq8 / converter |")
    print("|---|---|---|---|---|---|")
    for r in results:
        co, ct = r["chk_ours"], r["chk_theirs"]
        top1 = (f"{_pct(co.reference_accuracy)} / {_pct(co.accuracy)} / {_pct(ct.accuracy)}"
                if co.accuracy is not None else "(no labels)")
        print(f"| {r['name']} | {len(r['flt'])} | {len(r['ours'])} "
              f"({len(r['ours']) / len(r['flt']):.2f}x) | {len(r['theirs'])} | "
              f"{_pct(co.agreement)} / {_pct(ct.agreement)} ({r['n']} samples) | {top1} |")
    print("\n(ms: median of an interleaved int8/float run; speedup = float / int8 median; "
          "tfq8 / converter: ratio of the int8 medians, geometric mean over both interleaving "
          "orders, <= 1 means tfq8's model is no slower)")
    for r in results:
        for backend, m in r["per_backend"].items():
            b = m["bench"]
            if not b.ops:
                continue
            print(f"\n#### {r['name']}, {backend}: per-op times (each op alone), int8 vs float\n")
            print(f"whole model p50: int8 {b.latency_ms['int8']['p50']:.4f} ms, float "
                  f"{b.latency_ms['float']['p50']:.4f} ms; per-op sums (+1 invoke overhead "
                  f"{b.invoke_overhead_ms:.4f} ms): int8 {b.ops_total_ms['int8']:.4f} ms, float "
                  f"{b.ops_total_ms['float']:.4f} ms\n")
            print("```")
            print(b.op_table())
            print("```")
            by_type: dict[str, list[float]] = {}
            fl = {o.output_name: o for o in b.float_ops}
            for o in b.ops:
                f = fl.get(o.output_name)
                acc = by_type.setdefault(o.op, [0.0, 0.0, 0])
                acc[0] += o.time_ms
                acc[1] += f.time_ms if f is not None else 0.0
                acc[2] += 1
            print("\nby op type (float / int8): " + "; ".join(
                f"{k} x{int(v[2])}: int8 {v[0]:.3f} ms, float {v[1]:.3f} ms"
                + (f" ({v[1] / v[0]:.2f}x)" if v[0] > 0 else "")
                for k, v in sorted(by_type.items(), key=lambda kv: -kv[1][0])))


if __name__ == "__main__":
    main()

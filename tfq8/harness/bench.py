"""`tfq8.benchmark`: how fast are the int8 kernels, against float, op by op?

How the figures are obtained:

* Whole-model latency: each model is loaded in its own LiteRT interpreter
  (`backend`: the XNNPACK delegate, TFLite's optimized builtin kernels or its
  reference kernels; `num_threads` threads), inputs are set once (random values
  in each input's range; token ids that index an embedding table from 1 to its
  rows - 1, other integer inputs 0), `warmup` invokes are discarded, then invokes are
  timed one by one with `time.perf_counter_ns` around `Interpreter.invoke()`,
  for `runs` invokes or, by default, until `time_budget_s` is spent. With a
  reference, int8 and float invokes are *interleaved* (alternating which goes
  first) so that both see the same machine state; `speedup` is the float median
  latency divided by the int8 median latency of that one interleaved run.
* Per-op table: every op is cut out of the model into a single-op model with
  the very same tensors (shapes, dtypes, scales and zero points) and constant
  buffers, fed with the values the op sees in the whole model (one run on
  random inputs), and timed on its own the same way (median of its runs). The
  cost of an invoke of an empty model (`invoke_overhead_ms`, the fixed Python
  and interpreter cost) is subtracted from each op. `ops_total_ms` (the sum of
  the ops plus one invoke overhead) is reported next to the whole-model median
  so a reader sees how well the two agree; XNNPACK may fuse or re-layout across
  ops in the whole model, which a single op cannot show.
* Sizes are the byte lengths of the flatbuffers.

Example:
    >>> bench = tfq8.benchmark(tflite_model, reference=model, num_threads=1)
    >>> bench.speedup, bench.latency_ms["int8"]["p50"]
    (3.1, 0.84)
    >>> print(bench)
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from tfq8 import _args, _tflite
from tfq8.errors import ArgumentTypeError, first_line
from tfq8.harness.interpreter import (BACKENDS, InvalidModelError, TensorIO, load_verified,
                                      make_interpreter, read_model_bytes, verify_model)
from tfq8.harness.litert import allocate, size_inputs

_log = logging.getLogger("tfq8")

_MAX_RUNS = 100_000
_MIN_RUNS = 5


@dataclasses.dataclass(frozen=True)
class OpTiming:
    """One op timed on its own.

    Attributes:
        index: Op index in the model.
        op: Op type, such as `CONV_2D`.
        inputs: (shape, dtype) of each input, constants included.
        outputs: (shape, dtype) of each output.
        output_name: Name of its first output tensor.
        time_ms: Median time of the op alone, invoke overhead subtracted.
        share: Fraction of the sum over all ops.
    """

    index: int
    op: str
    inputs: tuple[tuple[tuple[int, ...], str], ...]
    outputs: tuple[tuple[tuple[int, ...], str], ...]
    output_name: str
    time_ms: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "output_name": self.output_name,
                "inputs": [{"shape": list(s), "dtype": d} for s, d in self.inputs],
                "outputs": [{"shape": list(s), "dtype": d} for s, d in self.outputs],
                "time_ms": None if math.isnan(self.time_ms) else self.time_ms,
                "share": self.share}


@dataclasses.dataclass(frozen=True)
class BenchReport:
    """What `tfq8.benchmark` measured; `print()` it for tables, `to_dict()` for JSON.

    Attributes:
        latency_ms: `{"int8": stats, "float": stats}` (float only with a
            reference); stats has `mean`, `p50`, `p90`, `p99`, `std`, `runs`.
        speedup: Float p50 / int8 p50 from the interleaved run (None without
            a reference).
        ops: Per-op table of the int8 model, in graph order.
        float_ops: Per-op table of the float reference (empty without one).
        ops_total_ms: `{"int8": ..., "float": ...}`: sum of the per-op times
            plus one invoke overhead, to compare with the whole-model p50 (ops
            that cannot run on their own, such as WHILE, are left out).
        invoke_overhead_ms: Median invoke time of an empty model.
        size_bytes: `{"int8": ..., "float": ...}` flatbuffer sizes.
        backend: Kernels used.
        num_threads: Threads used.

    Example:
        >>> bench = tfq8.benchmark("model_int8.tflite", reference="model.keras")
        >>> bench.latency_ms["int8"]["p50"], bench.speedup
        >>> print(bench)   # latency, sizes and the per-op table
    """

    latency_ms: dict[str, dict[str, float]]
    speedup: float | None
    ops: tuple[OpTiming, ...]
    float_ops: tuple[OpTiming, ...]
    ops_total_ms: dict[str, float]
    invoke_overhead_ms: float
    size_bytes: dict[str, int]
    backend: str
    num_threads: int

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for `json.dumps`.

        Example:
            >>> bench = tfq8.benchmark("model_int8.tflite", reference=model)
            >>> sorted(bench.to_dict())
            ['backend', 'float_ops', 'invoke_overhead_ms', 'latency_ms', 'num_threads', 'ops',
             'ops_total_ms', 'size_bytes', 'speedup']
            >>> json.dump(bench.to_dict(), open("bench.json", "w"))
        """
        return {"latency_ms": self.latency_ms, "speedup": self.speedup,
                "ops": [o.to_dict() for o in self.ops],
                "float_ops": [o.to_dict() for o in self.float_ops],
                "ops_total_ms": self.ops_total_ms, "invoke_overhead_ms": self.invoke_overhead_ms,
                "size_bytes": self.size_bytes, "backend": self.backend,
                "num_threads": self.num_threads}

    def op_table(self) -> str:
        """The per-op table; with a reference, float time and speedup of the matching op.

        Example:
            >>> print(tfq8.benchmark("model_int8.tflite", reference=model).op_table())
        """
        by_name = {o.output_name: o for o in self.float_ops}
        floor = max(self.invoke_overhead_ms, 1e-3)
        head = f"  {'#':>3} {'op':<22} {'output shape':<18} {'int8 ms':>8} {'share':>6}"
        if self.float_ops:
            head += f" {'float op':<18} {'float ms':>8} {'speedup':>7}"
        lines = [head]
        for o in self.ops:
            shape = "x".join(str(d) for d in o.outputs[0][0]) if o.outputs else ""
            line = f"  {o.index:>3} {o.op:<22} {shape:<18} {o.time_ms:>8.4f} {100 * o.share:>5.1f}%"
            f = by_name.get(o.output_name)
            if f is not None:
                # Below the invoke overhead a time is mostly timer noise: no ratio.
                ratio = (f"{f.time_ms / o.time_ms:.2f}x" if min(o.time_ms, f.time_ms) >= floor
                         else "-")
                line += f" {f.op:<18} {f.time_ms:>8.4f} {ratio:>7}"
            elif self.float_ops:
                line += f" {'(none)':<18}"
            lines.append(line)
        matched = {o.output_name for o in self.ops}
        for f in self.float_ops:
            if f.output_name not in matched:
                lines.append(f"  {'':>3} {'(float only)':<22} {'':<18} {'':>8} {'':>6} "
                             f"{f.op:<18} {f.time_ms:>8.4f}")
        if self.float_ops:
            lines.append(f"  (speedup '-': an op under {floor:.4f} ms (the invoke overhead, at "
                         "least 0.001 ms) is too short to compare)")
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [f"tfq8 bench: backend {self.backend}, {self.num_threads} thread(s)"]
        lines.append(f"  {'model':<6} {'size':>10} {'mean ms':>9} {'p50':>9} {'p90':>9} {'p99':>9} "
                     f"{'std':>8} {'runs':>6}" + (f" {'per-op sum':>10}" if self.ops else ""))
        for k, s in self.latency_ms.items():
            lines.append(f"  {k:<6} {self.size_bytes.get(k, 0):>10} {s['mean']:>9.4f} "
                         f"{s['p50']:>9.4f} {s['p90']:>9.4f} {s['p99']:>9.4f} {s['std']:>8.4f} "
                         f"{int(s['runs']):>6}" + (
                             f" {self.ops_total_ms.get(k, float('nan')):>10.4f}" if self.ops
                             else ""))
        if self.speedup is not None:
            ratio = self.size_bytes["int8"] / self.size_bytes["float"]
            lines.append(f"  speedup float/int8 {self.speedup:.2f}x (interleaved p50); "
                         f"size int8/float {ratio:.2f}x")
        if self.ops:  # per_op=False times whole models only
            lines.append(f"  invoke overhead {self.invoke_overhead_ms:.4f} ms (subtracted from "
                         "each op)")
            lines.append("")
            lines.append(self.op_table())
        return "\n".join(lines)


def benchmark(
    tflite_model: bytes | str | os.PathLike,
    reference: Any = None,
    *,
    num_threads: int = 1,
    backend: str = "xnnpack",
    warmup: int = 10,
    runs: int | None = None,
    time_budget_s: float = 2.0,
    per_op: bool = True,
    op_time_budget_s: float = 0.05,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
) -> BenchReport:
    """Times an int8 `.tflite` (and its float reference) whole and op by op.

    See the module docstring for how each figure is obtained. Writes no file;
    warns (logger `"tfq8"`) where `tflite_model` is a float model and for ops
    left out of the per-op table.

    Args:
        tflite_model: The int8 model, bytes or a `.tflite` path (verified first).
        reference: The float model: a Keras model or `.keras`/`.h5`/SavedModel
            path (converted to plain float TFLite), a float `.tflite` (bytes or
            path), a `tfq8.Calibration`, or None. For a quantization-aware-trained
            model pass the float model QAT started from (a QAT model's float
            graph still holds its quantize/dequantize ops; tfq8 warns).
        num_threads: Kernel threads (1 is what a small device core sees).
        backend: `"xnnpack"` (default, LiteRT's CPU default), `"builtin"` or
            `"reference"` kernels.
        warmup: Untimed invokes first, per model.
        runs: Timed invokes per model; None for `time_budget_s`.
        time_budget_s: Seconds of timed invokes (both models together) when
            `runs` is None.
        per_op: Also time each op on its own.
        op_time_budget_s: Seconds of timed invokes per op (at least 5 runs).
        seed: Seed of the random inputs.
        progress: Called with a short message before each long step.
        input_shapes: One shape per model input (batch included), in the
            `.tflite`'s input order (the order `tfq8.inspect` lists the model
            inputs in, which may differ from the Keras model's; another order
            is taken where it is the only one that fits), to time at
            a size of your choice. Required for inputs whose height or width
            is dynamic (`keras.Input((None, None, 3))`); default: the shapes
            stored in the model.

    Returns:
        A `BenchReport`.

    Raises:
        ValueError: On a malformed model or bad arguments.
        TypeError: On arguments of the wrong type.

    Example:
        >>> bench = tfq8.benchmark("model_int8.tflite", reference="model.keras")
        >>> print(f"{bench.speedup:.2f}x faster, {bench.size_bytes['int8']} bytes")
    """
    if backend not in BACKENDS:
        raise (ValueError if isinstance(backend, str) else ArgumentTypeError)(
            f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}")
    _args.integer("warmup", warmup, minimum=0)
    _args.integer("runs", runs, optional=True)
    _args.integer("seed", seed, minimum=0, optional=True)
    _args.positive_number("time_budget_s", time_budget_s, unit="seconds")
    _args.positive_number("op_time_budget_s", op_time_budget_s, unit="seconds")
    per_op = _args.boolean("per_op", per_op)
    if progress is not None and not callable(progress):
        raise ArgumentTypeError("progress must be a callable taking a message, or None. "
                                f"Received: progress={progress!r}")
    say = progress or (lambda msg: None)
    rng = np.random.default_rng(seed)
    q_blob, q_parsed = load_verified(tflite_model)
    if not any(_tflite.tensor_type_name(t.type) in ("INT8", "UINT8", "INT16")
               for t in q_parsed.subgraphs[0].tensors):
        _log.warning("tflite_model has no quantized tensor: it is a float model, so the times "
                     "reported as int8 are a float model's. Pass the int8 model tfq8.convert() "
                     "wrote.")
    shapes = _input_shapes(q_parsed, input_shapes)
    f_blob = _reference_blob(reference)
    models = {"int8": (q_blob, q_parsed)}
    if f_blob is not None:
        models["float"] = (f_blob, verify_model(f_blob, arg="reference"))
        _check_reference(q_parsed, models["float"][1])

    say("timing the whole model" + ("s (interleaved)" if f_blob is not None else ""))
    interps = {}
    for k, (blob, _) in models.items():
        arg = "tflite_model" if k == "int8" else "reference"
        interps[k] = _sized(make_interpreter(blob, backend=backend, num_threads=num_threads,
                                             verified=True, allocate=False, arg=arg), shapes, arg)
        tokens = _token_inputs(models[k][1])
        for d in interps[k].get_input_details():
            interps[k].set_tensor(d["index"], _random(TensorIO.from_details(d), rng, tokens))
    times = _interleaved(list(interps.values()), warmup, runs, time_budget_s)
    latency = {k: _summary(t) for k, t in zip(interps, times)}
    speedup = latency["float"]["p50"] / latency["int8"]["p50"] if "float" in latency else None

    overhead = _median_invoke(make_interpreter(_empty_model(), backend=backend,
                                               num_threads=num_threads, verified=True),
                              warmup, 0.05, runs) if per_op else 0.0
    tables: dict[str, tuple[OpTiming, ...]] = {"int8": (), "float": ()}
    totals: dict[str, float] = {}
    if per_op:
        for k, (blob, parsed) in models.items():
            say(f"timing each op of the {k} model on its own")
            tables[k] = _per_op(blob, parsed, backend, num_threads, warmup, runs,
                                op_time_budget_s, overhead, rng, shapes)
            totals[k] = sum(o.time_ms for o in tables[k] if math.isfinite(o.time_ms)) + overhead
    return BenchReport(
        latency_ms=latency, speedup=speedup, ops=tables["int8"], float_ops=tables["float"],
        ops_total_ms=totals, invoke_overhead_ms=overhead,
        size_bytes={k: len(blob) for k, (blob, _) in models.items()},
        backend=backend, num_threads=int(num_threads))


# --------------------------------------------------------------------- timing
def _interleaved(interps: Sequence[Any], warmup: int, runs: int | None,
                 budget_s: float) -> list[list[float]]:
    for it in interps:
        for _ in range(warmup):
            it.invoke()
    times: list[list[float]] = [[] for _ in interps]
    deadline = time.perf_counter() + budget_s
    order = list(range(len(interps)))
    r = 0
    while True:
        if runs is not None and r >= runs:
            break
        if runs is None and r >= _MIN_RUNS and (time.perf_counter() > deadline or r >= _MAX_RUNS):
            break
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter_ns()
            interps[k].invoke()
            times[k].append((time.perf_counter_ns() - t0) / 1e6)
        r += 1
    return times


def _median_invoke(interp: Any, warmup: int, budget_s: float, runs: int | None) -> float:
    t = _interleaved([interp], warmup, runs, budget_s)[0]
    return float(np.median(t))


def _summary(t: Sequence[float]) -> dict[str, float]:
    a = np.asarray(t, np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "std": float(a.std()), "runs": int(len(a))}


def _random(t: TensorIO, rng: np.random.Generator,
            tokens: dict[int, int] | None = None) -> np.ndarray:
    shape = t.shape
    if np.issubdtype(t.dtype, np.floating):
        return rng.normal(size=shape).astype(t.dtype)
    if t.dtype in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
        info = np.iinfo(t.dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(t.dtype)
    rows = (tokens or {}).get(t.index, 0)
    if rows > 1:  # token ids 1..rows-1: valid rows, and not the padding 0 (all-0 inputs leave
        # nothing for a masked mean to divide by, which int8 DIV refuses)
        return rng.integers(1, rows, size=shape).astype(t.dtype)
    return np.zeros(shape, t.dtype)


def _token_inputs(parsed: Any) -> dict[int, int]:
    """Integer model inputs whose values a GATHER takes its indices from (an `Embedding`'s
    token ids, which Keras passes through a LESS / ADD / SELECT_V2 for negative ids first):
    input tensor index -> the fewest rows of the tables they index."""
    sg = parsed.subgraphs[0]
    ops = list(sg.operators or [])
    found: dict[int, int] = {}
    for i in (int(i) for i in sg.inputs):
        if _tflite.tensor_type_name(sg.tensors[i].type) not in ("INT32", "INT64"):
            continue
        reach = {i}
        for op in ops:  # operators are stored in execution order
            if _tflite.op_name(parsed, op) == "GATHER" and len(op.inputs) >= 2 and (
                    int(op.inputs[1]) in reach):
                shape = sg.tensors[int(op.inputs[0])].shape
                axis = getattr(op.builtinOptions, "axis", 0) or 0
                if shape is not None and len(shape) and axis == 0 and shape[0] > 0:
                    found[i] = min(found.get(i, int(shape[0])), int(shape[0]))
            if any(int(t) in reach for t in op.inputs if int(t) >= 0):
                reach.update(int(t) for t in op.outputs)
    return found


_MAX_DIM = 2**31 - 1  # LiteRT's dimensions are int32


def _input_shapes(parsed: Any, input_shapes: Sequence[Sequence[int]] | None
                     ) -> list[list[int]] | None:
    """The input shapes to time at, checked against the model's inputs.

    Returns:
        One shape per input, or None to keep the stored shapes.

    Raises:
        ValueError: If the model has dynamic height/width and no shapes were
            given, or a shape does not fit its input.
    """
    sg = parsed.subgraphs[0]
    names = [_tflite.tensor_name(sg.tensors[int(i)]) for i in sg.inputs]
    signatures = []
    for i in sg.inputs:
        t = sg.tensors[int(i)]
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        signatures.append([int(d) for d in (sig if sig is not None else [])])
    if input_shapes is None:
        dynamic = [(n, s) for n, s in zip(names, signatures) if -1 in s[1:]]
        if dynamic:
            name, sig = dynamic[0]
            example = [1] + [224 if d == -1 else d for d in sig[1:]]
            raise ValueError(
                f"Input {name!r} of tflite_model has dynamic dimensions (shape signature {sig}): "
                f"pass input_shapes with one shape per input, such as input_shapes=[{example}] "
                f"(command line: --input-shape={','.join(map(str, example))}).")
        return None
    if (isinstance(input_shapes, (str, bytes)) or not isinstance(input_shapes, Sequence)
            or len(input_shapes) != len(names)):
        raise ValueError(f"input_shapes must hold one shape per model input ({len(names)}: "
                         f"{names}). Received: input_shapes={input_shapes!r}")
    def fits(sig: list[int], shape: Any) -> bool:
        return (isinstance(shape, Sequence) and not isinstance(shape, (str, bytes))
                and len(shape) == len(sig)
                and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                        and 0 < d <= _MAX_DIM for d in shape)
                and all(s in (-1, int(d)) for s, d in zip(sig, shape)))

    given = list(input_shapes)
    if not all(fits(sig, shape) for sig, shape in zip(signatures, given)) and len(given) <= 6:
        # Shapes in another order (the Keras model's, say) are taken where only one order fits.
        orders = [p for p in itertools.permutations(range(len(given)))
                  if all(fits(sig, given[k]) for sig, k in zip(signatures, p))]
        if len(orders) == 1:
            given = [given[k] for k in orders[0]]
            _log.info("input_shapes: taken in the order that fits the model's inputs %s: %s",
                      names, given)
    for name, sig, shape in zip(names, signatures, given):
        if not fits(sig, shape):
            raise ValueError(f"input_shapes: input {name!r} takes shapes like {sig} (-1: any "
                             f"positive size up to {_MAX_DIM}). Received: {shape!r}")
    return [[int(d) for d in shape] for shape in given]


def _check_reference(q: Any, f: Any) -> None:
    """Refuses a reference that is not the int8 model's float model: another number of
    inputs or outputs, or (where neither has a dynamic size) other input or output
    shapes (batch aside; in any order, as the two graphs may order them differently)."""
    def tails(parsed: Any, which: str) -> list[list[int]]:
        sg = parsed.subgraphs[0]
        out = []
        for i in getattr(sg, which):
            t = sg.tensors[int(i)]
            sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) \
                else t.shape
            out.append([int(d) for d in (sig if sig is not None else [])][1:])
        return out

    ours = (tails(q, "inputs"), tails(q, "outputs"))
    theirs = (tails(f, "inputs"), tails(f, "outputs"))
    for a, b in zip(ours, theirs):
        static = all(-1 not in t for t in a + b)
        if len(a) != len(b) or (static and sorted(a) != sorted(b)):
            def show(io: tuple[list[list[int]], list[list[int]]]) -> str:
                return (f"inputs {[[None] + t for t in io[0]]}, "
                        f"outputs {[[None] + t for t in io[1]]}")

            raise ValueError(
                "reference must be the float model tflite_model came from, with the same "
                f"inputs and outputs (tflite_model: {show(ours)}). Received: a reference with "
                f"{show(theirs)}")


def _sized(interp: Any, shapes: list[list[int]] | None, arg: str) -> Any:
    """Resizes the inputs to `shapes` (if any) and allocates the tensors."""
    try:
        if shapes is None:
            allocate(interp)
        else:
            size_inputs(interp, shapes)
    except (RuntimeError, ValueError) as e:
        raise InvalidModelError(f"LiteRT cannot run {arg} on inputs of shape {shapes}: "
                                f"{first_line(e)}") from None
    return interp


# --------------------------------------------------------------------- per op
def _per_op(blob: bytes, parsed: Any, backend: str, num_threads: int, warmup: int,
            runs: int | None, budget_s: float, overhead: float,
            rng: np.random.Generator, shapes: list[list[int]] | None = None
            ) -> tuple[OpTiming, ...]:
    values = _all_values(blob, rng, shapes, _token_inputs(parsed))
    sg = parsed.subgraphs[0]
    rows = []

    def sig(ids: Any) -> tuple[tuple[tuple[int, ...], str], ...]:
        # The shapes the op ran at (the stored ones are placeholders where dynamic).
        return tuple((tuple(int(d) for d in (values[int(i)].shape if int(i) in values
                                             else sg.tensors[i].shape)),
                      _tflite.tensor_type_name(sg.tensors[i].type)) for i in ids if int(i) >= 0)

    for k, op in enumerate(sg.operators):
        name = _tflite.op_name(parsed, op)
        out_name = _tflite.tensor_name(sg.tensors[int(op.outputs[0])]) if len(op.outputs) else ""
        options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        if any(field.endswith("SubgraphIndex") for field in options):
            _log.warning("Op %d (%s) runs other subgraphs (a loop's body, a branch), so it is not "
                         "timed on its own and is left out of the per-op table; the whole "
                         "model's latency includes it.", k, name)
            rows.append([k, name, sig(op.inputs), sig(op.outputs), out_name, math.nan])
            continue
        single, feeds = single_op_model(parsed, k)
        try:  # (verified again)
            it = make_interpreter(single, backend=backend, num_threads=num_threads,
                                  arg=f"op {k} ({name}) alone", allocate=False)
            size_inputs(it, [values[orig].shape if orig in values
                             else list(sg.tensors[orig].shape) for _, orig in feeds])
            for local, orig in feeds:
                if orig in values:
                    it.set_tensor(local, values[orig])
            ms = max(0.0, _median_invoke(it, min(warmup, 3), budget_s, runs) - overhead)
        except (InvalidModelError, RuntimeError, ValueError) as e:
            _log.warning("Op %d (%s) cannot run on its own, left out of the per-op table: %s",
                         k, name, e)
            ms = math.nan
        rows.append([k, name, sig(op.inputs), sig(op.outputs), out_name, ms])
    total = sum(r[5] for r in rows if not math.isnan(r[5])) or 1.0
    return tuple(OpTiming(*r, share=(0.0 if math.isnan(r[5]) else r[5] / total)) for r in rows)


def _all_values(blob: bytes, rng: np.random.Generator, shapes: list[list[int]] | None,
                tokens: dict[int, int]) -> dict[int, np.ndarray]:
    """Every tensor's value in one builtin-kernel run of the model on random inputs
    (`tokens`: `_token_inputs` of the model)."""
    it = _sized(make_interpreter(blob, backend="builtin", preserve_all_tensors=True, verified=True,
                                 allocate=False), shapes, "tflite_model")
    for d in it.get_input_details():
        it.set_tensor(d["index"], _random(TensorIO.from_details(d), rng, tokens))
    it.invoke()
    out = {}
    for d in it.get_tensor_details():
        try:
            out[int(d["index"])] = np.array(it.get_tensor(d["index"]))
        except ValueError:
            continue
    return out


def single_op_model(model: Any, op_index: int) -> tuple[bytes, list[tuple[int, int]]]:
    """Cuts op `op_index` of subgraph 0 out of `model` into a model of its own.

    The op keeps its tensors (shapes, dtypes, quantization) and its constant
    buffers; its non-constant inputs become the model's inputs, its outputs the
    model's outputs.

    Args:
        model: A parsed model (`schema.ModelT`).
        op_index: The op to cut out.

    Returns:
        The single-op `.tflite` bytes, and (new tensor index, original tensor
        index) for each of its inputs.

    Example:
        >>> blob, feeds = single_op_model(_tflite.read_model(int8_blob), 0)
    """
    schema = _tflite.schema
    sg = model.subgraphs[0]
    op = sg.operators[op_index]
    used: list[int] = []
    for i in list(op.inputs) + list(op.outputs) + list(
            op.intermediates if op.intermediates is not None else []):
        i = int(i)
        if i >= 0 and i not in used:
            used.append(i)
    remap = {orig: new for new, orig in enumerate(used)}
    new = schema.ModelT()
    new.version = model.version
    new.description = "tfq8 single-op model"
    new.buffers = [schema.BufferT()]
    tensors = []
    feeds = []
    for orig in used:
        t = copy.copy(sg.tensors[orig])
        buf = model.buffers[t.buffer]
        constant = buf is not None and buf.data is not None and len(buf.data) > 0
        if constant:
            new.buffers.append(copy.copy(buf))
            t.buffer = len(new.buffers) - 1
        else:
            new.buffers.append(schema.BufferT())
            t.buffer = len(new.buffers) - 1
            if orig in [int(i) for i in op.inputs] and not t.isVariable:
                feeds.append((remap[orig], orig))
        tensors.append(t)
    new_op = copy.copy(op)
    new_op.opcodeIndex = 0
    new_op.inputs = np.array([remap[int(i)] if int(i) >= 0 else -1 for i in op.inputs], np.int32)
    new_op.outputs = np.array([remap[int(i)] for i in op.outputs], np.int32)
    if op.intermediates is not None:
        new_op.intermediates = np.array([remap[int(i)] for i in op.intermediates], np.int32)
    new.operatorCodes = [copy.copy(model.operatorCodes[op.opcodeIndex])]
    new_sg = schema.SubGraphT()
    new_sg.name = "main"
    new_sg.tensors = tensors
    new_sg.operators = [new_op]
    new_sg.inputs = np.array([local for local, _ in feeds], np.int32)
    new_sg.outputs = np.array(new_op.outputs, np.int32)
    new.subgraphs = [new_sg]
    return _tflite.write_model(new), feeds


def _empty_model() -> bytes:
    """A model with one int8 [1] tensor and no op: the fixed cost of an invoke."""
    schema = _tflite.schema
    m = schema.ModelT()
    m.version = 3
    m.buffers = [schema.BufferT(), schema.BufferT()]
    t = schema.TensorT()
    t.shape = np.array([1], np.int32)
    t.type = schema.TensorType.INT8
    t.buffer = 1
    t.name = "x"
    sg = schema.SubGraphT()
    sg.tensors = [t]
    sg.inputs = np.array([0], np.int32)
    sg.outputs = np.array([0], np.int32)
    sg.operators = []
    m.subgraphs = [sg]
    m.operatorCodes = []
    return _tflite.write_model(m)


def _reference_blob(reference: Any) -> bytes | None:
    from tfq8.calibration import Calibration  # noqa: PLC0415
    from tfq8.models import is_keras_model, is_tflite_source, load_reference  # noqa: PLC0415

    if reference is None:
        return None
    if isinstance(reference, Calibration):
        return reference.model
    if is_tflite_source(reference):
        return read_model_bytes(reference, arg="reference")
    if is_keras_model(reference) or isinstance(reference, (str, os.PathLike)):
        from tfq8.qat import is_qat  # noqa: PLC0415 (tfmot is imported lazily)

        handle = load_reference(reference)  # a bad file's error names reference
        if is_qat(handle):
            _log.warning(
                "reference is a quantization-aware-trained model: its float TFLite graph still "
                "simulates int8 with quantize/dequantize ops, so the float times and the "
                "speedup are not those of the plain float model. Pass the float model QAT "
                "started from as reference= for those.")
        return handle.to_float_tflite()
    raise TypeError(
        "reference must be a Keras model, a .keras/.h5/SavedModel path, a float .tflite (bytes "
        f"or path), a tfq8.Calibration or None. Received: {type(reference).__name__}")

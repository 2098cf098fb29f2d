"""The statistics pass in a second process, while TFLite's calibrator runs.

TFLite's calibrator runs the samples one at a time on one core and holds
Python's GIL while it does, so tfq8's own pass (`tfq8.stats.sweep`) cannot run
beside it in a thread. It can in another process: `StatsWorker` starts a
Python process running `main` when calibration begins (it imports numpy and
LiteRT, never TensorFlow, so it is ready in a fraction of a second), sends it
the float model as soon as the converter has built it, and reads the
histograms back when the calibrator is done. On two cores this hides the pass
behind the calibrator.

Messages on the worker's stdin and stdout are `.npz` archives (a JSON header
plus arrays, read with `allow_pickle=False`), each after a 4-byte tag and its
length.

`tfq8.stats.collect.BackgroundCollect` decides when to use the worker and falls
back to the in-process pass whenever it cannot, or when the worker has not
answered long after the calibrator finished (`WORKER_WAIT_FACTOR`); set the environment variable
`TFQ8_STATS_WORKER=0` to always collect in-process.

Example:
    >>> with StatsWorker.start() as w:
    ...     w.submit(float_model, [x], tensors, batch=64, max_bins=4096, track=[0, 9])
    ...     stats = w.result()           # tensor index -> TensorStats
"""

from __future__ import annotations

import io
import json
import logging
import os
import selectors
import struct
import subprocess
import sys
import tempfile
from typing import Any, BinaryIO, Sequence

import numpy as np

from tfq8.stats.histogram import Histogram
from tfq8.stats.sweep import TensorStats, sweep

_log = logging.getLogger("tfq8")

ENV = "TFQ8_STATS_WORKER"
# Longest wait for a new worker to import numpy and LiteRT and say it is ready.
READY_TIMEOUT_S = 30.0
_MAGIC = b"tfq8"
_LENGTH = struct.Struct("<Q")


class WorkerError(RuntimeError):
    """The worker could not start or did not answer; collect in-process instead."""


class WorkerTimeout(WorkerError):
    """The worker did not answer in the time given: it is stuck."""


# ----------------------------------------------------------------- messages
def _write(stream: BinaryIO, header: dict, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    data = buf.getbuffer()
    stream.write(_MAGIC + _LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read(stream: BinaryIO) -> tuple[dict, dict[str, np.ndarray]]:
    raw = _read_exactly(stream, len(_MAGIC) + _LENGTH.size)
    if not raw.startswith(_MAGIC):
        raise ValueError(f"not a tfq8 worker message (it starts with {raw[:4]!r})")
    data = _read_exactly(stream, _LENGTH.unpack(raw[len(_MAGIC):])[0])
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(bytes(arrays.pop("header")).decode()), arrays


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError(f"the stream ended {left} bytes short of a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ----------------------------------------------------------------- the worker
def main() -> int:
    """Worker entry: answer one job from stdin on stdout."""
    # Nothing but messages on the pipe to the parent: the messages get their own
    # descriptor, and descriptor 1 (native code's stdout) and sys.stdout go to stderr.
    source, sink = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _write(sink, {"ready": True}, {})
    try:
        job, arrays = _read(source)
    except EOFError:  # the parent did not need us after all
        return 0
    try:
        inputs = [arrays[f"input{k}"] for k in range(job["num_inputs"])]
        track = arrays["track"]
        stats = {int(i): TensorStats(int(i), name, Histogram(job["max_bins"]), producer,
                                     np.zeros(len(track)) if len(track) else None)
                 for i, name, producer in job["tensors"]}
        sweep(bytes(arrays["model"]), inputs, stats, batch=job["batch"], threads=job["threads"],
              track=track)
    except ValueError as e:  # data the model cannot take, or not-finite tensors: say so
        _write(sink, {"error": str(e)}, {})
        return 0
    out: dict[str, np.ndarray] = {}
    for k, s in enumerate(stats.values()):
        for key, value in s.histogram.to_arrays().items():
            out[f"t{k}_{key}"] = value
        if s.peaks is not None:
            out[f"t{k}_peaks"] = s.peaks
    _write(sink, {"tensors": [s.index for s in stats.values()], "peak_rss_kib": _peak_rss_kib()},
           out)
    return 0


def _peak_rss_kib() -> int | None:
    """This process' peak resident memory (Linux's VmHWM), or None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# ----------------------------------------------------------------- the parent's side
class StatsWorker:
    """A running worker process; see the module docstring.

    Use it as a context manager: leaving the block stops the process.
    """

    def __init__(self, process: subprocess.Popen, stderr: Any):
        self._process = process
        self._stderr = stderr  # a temporary file, quoted in the debug log when it fails
        self._ready = False

    @classmethod
    def start(cls) -> "StatsWorker":
        """Starts the worker process (does not wait for it).

        The worker sees the parent's `sys.path` (the working directory as an
        absolute path) and interpreter flags, so it imports the same numpy and
        LiteRT, and it loads this very `tfq8` package by location, whatever
        else is on the path.

        Raises:
            WorkerError: If no Python interpreter can be started here.
        """
        if not sys.executable or getattr(sys, "frozen", False) or os.name != "posix":
            raise WorkerError("no plain Python interpreter to start (frozen or embedded "
                              "application, or not a POSIX system)")
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = [os.path.abspath(p or os.curdir) for p in sys.path]
        code = (
            "import importlib.util, sys\n"
            f"sys.path[:] = {path!r}\n"
            f"spec = importlib.util.spec_from_file_location('tfq8', {os.path.join(package, '__init__.py')!r}, "
            f"submodule_search_locations=[{package!r}])\n"
            "sys.modules['tfq8'] = module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "from tfq8.stats.worker import main\n"
            "sys.exit(main())\n")
        flags = getattr(subprocess, "_args_from_interpreter_flags", lambda: [])()
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = None
        try:
            log = tempfile.TemporaryFile()
            process = subprocess.Popen([sys.executable, *flags, "-c", code],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=log, env=env, close_fds=True)
        except OSError as e:
            if log is not None:
                log.close()
            raise WorkerError(f"could not start {sys.executable}: {e}") from None
        return cls(process, log)

    def submit(self, model: bytes, inputs: Sequence[np.ndarray],
               tensors: Sequence[tuple[int, str, str]], *, batch: int, max_bins: int,
               track: Sequence[int] = (), threads: int = 1) -> None:
        """Sends the job: histogram `tensors` (index, name, producer) of `model` over `inputs`.

        Raises:
            WorkerError: If the worker is not running.
        """
        arrays = {f"input{k}": np.ascontiguousarray(a) for k, a in enumerate(inputs)}
        arrays["model"] = np.frombuffer(model, np.uint8)
        arrays["track"] = np.asarray(track, np.int64)
        job = {"num_inputs": len(inputs), "tensors": [list(t) for t in tensors],
               "batch": int(batch), "max_bins": int(max_bins), "threads": int(threads)}
        try:
            self._expect_ready()
            _write(self._process.stdin, job, arrays)
            self._process.stdin.close()
        except (OSError, EOFError, ValueError) as e:
            raise self._failed(f"could not send the job: {e}") from None

    def result(self, timeout: float | None = None) -> dict[int, TensorStats]:
        """Waits for the histograms: tensor index -> `TensorStats`.

        Args:
            timeout: Seconds to wait for the answer to begin (None: no limit).
                The worker is stopped when they pass.

        Raises:
            ValueError: The worker's message when the data or model failed
                (for example a tensor that is not finite).
            WorkerTimeout: If no answer began within `timeout` seconds.
            WorkerError: If the worker died or answered nonsense.
        """
        if timeout is not None:
            with selectors.DefaultSelector() as sel:
                sel.register(self._process.stdout, selectors.EVENT_READ)
                if not sel.select(timeout):  # (a dead worker's pipe reads as ready: EOF)
                    self.close()
                    raise WorkerTimeout(f"no answer within {timeout:.3g} s")
        try:
            header, arrays = _read(self._process.stdout)
        except (OSError, EOFError, ValueError) as e:
            raise self._failed(f"no result: {e}") from None
        try:
            self._process.wait(timeout=10)  # it exits after answering
        except subprocess.TimeoutExpired:
            pass  # close() kills it
        if "error" in header:
            raise ValueError(header["error"])
        if header.get("peak_rss_kib") is not None:
            _log.debug("Statistics worker: peak RSS %.1f MiB.", header["peak_rss_kib"] / 1024)
        try:
            out = {}
            for k, index in enumerate(header["tensors"]):
                h = Histogram.from_arrays({key: arrays[f"t{k}_{key}"]
                                           for key in ("counts", "meta", "extremes")})
                peaks = arrays.get(f"t{k}_peaks")
                out[int(index)] = TensorStats(int(index), "", h, "", peaks)
        except (KeyError, TypeError, ValueError) as e:
            raise self._failed(f"an answer that does not parse: {type(e).__name__}: {e}") from None
        return out

    def _expect_ready(self) -> None:
        """Waits up to `READY_TIMEOUT_S` for the worker's first message."""
        if self._ready:
            return
        with selectors.DefaultSelector() as sel:
            sel.register(self._process.stdout, selectors.EVENT_READ)
            if not sel.select(READY_TIMEOUT_S):
                raise EOFError(f"the worker did not start within {READY_TIMEOUT_S:g} s")
        header, _ = _read(self._process.stdout)
        if not header.get("ready"):
            raise EOFError("the worker did not say it was ready")
        self._ready = True

    def _failed(self, what: str) -> WorkerError:
        self._end_process()  # so that its stderr is complete
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        self.close()
        return WorkerError(f"statistics worker: {what}" + (f"; its stderr: {tail}" if tail else ""))

    def _end_process(self) -> None:
        p = self._process
        for stream in (p.stdin, p.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if p.poll() is None:
            p.kill()
        p.wait()

    def close(self) -> None:
        """Stops the worker (if still running) and releases its pipes and files."""
        self._end_process()
        self._stderr.close()

    def __enter__(self) -> "StatsWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

if __name__ == "__main__":
    sys.exit(main())

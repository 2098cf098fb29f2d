"""The `tfq8` command line: convert, check, bench, inspect.

Usage::

    tfq8 convert MODEL --data FILE [--method auto] [--output OUT.tflite] [--calibration-out stats.npz] [--plot ranges.png]
    tfq8 convert QAT_MODEL.h5 [--output OUT.tflite]   (quantization-aware-trained: no data needed)
    tfq8 check OUT.tflite --data FILE [--reference MODEL] [--labels FILE] [--json]
    tfq8 bench OUT.tflite [--reference MODEL] [--threads 1] [--input-shape 1,96,96,3] [--json]
    tfq8 inspect OUT.tflite [--json] [--strict]

MODEL is a `.keras`/`.h5` file, a SavedModel folder or a float `.tflite`; FILE is
a `.npy` array, a `.npz` archive (key `x`, or one key per model input; `y` or
`labels` holds labels), or a folder of images (one subfolder per class gives
labels).
`tfq8 COMMAND --help` lists a command's flags. Errors are one line on stderr
and a non-zero exit status; `--verbosity=1` adds the traceback.

Example:
    $ tfq8 convert model.keras --data calib.npy --output model_int8.tflite
    $ tfq8 check model_int8.tflite --reference model.keras --data test.npz --json
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import logging
import math
import os
import re
import sys
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

from absl import app, flags

from tfq8._quiet import filtering

FLAGS = flags.FLAGS
_log = logging.getLogger("tfq8.cli")
_F = flags.FlagValues()  # the running command's flags (see `_define`)
# The real standard output while a command runs, when `convert --output` names it
# (/dev/stdout, say): the model goes there and the report to stderr (see `_main`).
_MODEL_TO_STDOUT: Any = None

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_INTEGER = 3

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

_COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("MODEL", "Convert a Keras model (.keras/.h5/SavedModel) or a float .tflite to a "
                         "full-integer int8 .tflite with tfq8's ranges."),
    "check": ("TFLITE", "Check an int8 .tflite against its float reference: accuracy, agreement, "
                        "SQNR per output and error per tensor (worst first)."),
    "bench": ("TFLITE", "Time an int8 .tflite (and its float reference, interleaved): latency "
                        "percentiles, speedup, per-op times, sizes."),
    "inspect": ("TFLITE", "List a .tflite's ops with their dtypes and flag every op that is not "
                          "integer."),
}


def _define(command: str) -> flags.FlagValues:
    """A fresh FlagValues with the flags of one command (only those, so `--help` shows them)."""
    fv = flags.FlagValues()

    def _d(definer: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        definer(*args, flag_values=fv, **kwargs)

    if command == "convert":
        _d(flags.DEFINE_string, "data", None, "Calibration data: .npy, .npz or a folder of "
           "images (a quantization-aware-trained model needs none).")
        _d(flags.DEFINE_string, "method", "auto", "Range method: auto, or a per-tensor method of "
           "tfq8.ranges.available_methods() (minmax, percentile, kl, mse, ...).")
        _d(flags.DEFINE_string, "output", None, "Where to write the .tflite (default: MODEL's name "
                                            "with _int8.tflite).")
        _d(flags.DEFINE_string, "calibration-out", None, "Also save the calibration statistics (.npz).")
        _d(flags.DEFINE_string, "plot", None, "Also draw the histograms of the tensors whose ranges "
           "differ most between methods, each method's range on them (auto's choice bold), into "
           "this .png, .svg or .pdf (needs matplotlib).")
        _d(flags.DEFINE_string, "calibration", None, "Reuse statistics saved by --calibration-out "
           "(or Calibration.save) instead of calibrating on --data.")
        _d(flags.DEFINE_multi_string, "range", [], "Set one tensor's range: NAME=MIN,MAX (TFLite "
           "tensor name, as `tfq8 check` lists them); repeat for more.")
        _d(flags.DEFINE_multi_string, "method-option", [], "Option of the range method: KEY=VALUE, "
           "such as percentile=99.9; repeat for more. With --method auto: candidates=NAME,NAME,... "
           "(the methods auto compares; minmax is always one).")
        _d(flags.DEFINE_integer, "num-samples", None, "Calibrate on at most this many samples.",
                             lower_bound=1)
        _d(flags.DEFINE_enum, "input-type", "int8", ["int8", "uint8", "float32"], "Model input dtype.")
        _d(flags.DEFINE_enum, "output-type", "int8", ["int8", "uint8", "float32"], "Model output dtype.")
        _d(flags.DEFINE_boolean, "per-channel", True, "Per-channel weight quantization.")
        _d(flags.DEFINE_boolean, "allow-float", False, "Keep ops that cannot be quantized in float.")
        _d(flags.DEFINE_boolean, "bias-correction", False, "Move each convolution's and dense "
           "layer's bias so its int8 output's mean matches float's (tfq8.bias_correction).")
    if command == "check":
        _d(flags.DEFINE_string, "reference", None, "Float model: .keras/.h5/SavedModel or float .tflite.")
        _d(flags.DEFINE_string, "data", None, "Evaluation data: .npy, .npz or a folder of images.")
        _d(flags.DEFINE_string, "labels", None, "Labels (.npy, or .npz with y/labels, or one "
                                            "array per output name, for --label-output); "
                                            "default: those in --data if any.")
        _d(flags.DEFINE_integer, "num-samples", None, "Evaluate at most this many samples.",
                             lower_bound=1)
        _d(flags.DEFINE_integer, "batch-size", None, "Samples per invoke (default: automatic).",
                             lower_bound=1)
        _d(flags.DEFINE_string, "label-output", "0", "Output (index in the Keras model's order, or name) the labels refer to.")
        _d(flags.DEFINE_enum, "backend", "builtin", ["builtin", "reference", "xnnpack"],
                          "Kernels (per-tensor errors need builtin or reference).")
        _d(flags.DEFINE_integer, "threads", None, "Kernel threads (default: all CPUs).", lower_bound=1)
        _d(flags.DEFINE_integer, "top", 15, "Tensors to list in the table (worst first; --json has "
                                        "all).", lower_bound=0)
    if command == "bench":
        _d(flags.DEFINE_string, "reference", None, "Float model: .keras/.h5/SavedModel or float .tflite.")
        _d(flags.DEFINE_integer, "threads", 1, "Kernel threads.", lower_bound=1)
        _d(flags.DEFINE_enum, "backend", "xnnpack", ["xnnpack", "builtin", "reference"],
                          "XNNPACK delegate, optimized builtin kernels or reference kernels.")
        _d(flags.DEFINE_integer, "runs", None, "Timed invokes per model (default: --time-budget).",
                             lower_bound=1)
        _d(flags.DEFINE_float, "time-budget", 2.0, "Seconds of timed invokes when --runs is unset.",
                           lower_bound=0.001)
        flags.register_validator("time-budget", math.isfinite, "must be a finite number",
                                 flag_values=fv)
        _d(flags.DEFINE_integer, "warmup", 10, "Untimed invokes first.", lower_bound=0)
        _d(flags.DEFINE_boolean, "per-op", True, "Also time every op on its own.")
        _d(flags.DEFINE_multi_string, "input-shape", [], "Time at this input shape, such as "
           "1,96,96,3; once per input, in the order `tfq8 inspect` lists the model inputs (another "
           "order is taken where only it fits; needed for dynamic height and width).")
    if command == "inspect":
        _d(flags.DEFINE_boolean, "strict", False, f"Exit with status {EXIT_NOT_INTEGER} unless the "
                                              "model is full-integer.")
    if command in ("convert", "check"):
        _d(flags.DEFINE_float, "image-scale", 1.0, "Images from a folder: pixel * scale + offset.")
        _d(flags.DEFINE_float, "image-offset", 0.0, "Images from a folder: pixel * scale + offset.")
        for name in ("image-scale", "image-offset"):  # nan or inf would make every pixel so
            flags.register_validator(name, math.isfinite, "must be a finite number",
                                     flag_values=fv)
    _d(flags.DEFINE_boolean, "json", False, "Print machine-readable JSON on stdout.")
    _d(flags.DEFINE_boolean, "progress", True, "Show progress of long steps on stderr.")
    return fv


# --------------------------------------------------------------------- entry point
def run(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `tfq8` console script (`tfq8 = tfq8.cli:run`).

    Args:
        argv: Command line including the program name (default: `sys.argv`).

    Called from Python (a notebook, a test), it leaves the process as it found it:
    the logging setup the command needs (absl's handler on the root logger, with
    one-line warnings; quieter levels) lasts only while it runs (see
    `_restoring_logging`), and absl's global `FLAGS`, which the command parses,
    are then as they were (`_restoring_flags`).

    Raises:
        SystemExit: With the command's exit status (0 on success), whatever happens
            in the command.
        TypeError: If `argv` holds something other than strings and paths.

    Example:
        >>> run(["tfq8", "inspect", "model_int8.tflite", "--json"])  # prints JSON
        Traceback (most recent call last):
        SystemExit: 0
    """
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else a
            for a in (sys.argv if argv is None else argv)]  # a path is its string
    bad = [a for a in argv if not isinstance(a, str)]
    if bad:
        raise TypeError("argv must be the command line as strings (paths are taken too), "
                        "program name first, such as ['tfq8', 'inspect', 'model.tflite']. "
                        f"Received: {bad[0]!r} of type {type(bad[0]).__name__} in argv={argv!r}")
    with _restoring_logging(), _restoring_flags():
        _run(argv)


@contextlib.contextmanager
def _restoring_logging() -> Iterator[None]:
    """Gives the command absl's logging handler, and puts back what it changed.

    absl's `app.run` puts its handler on the root logger (taking off handlers
    that write to stderr, such as `logging.basicConfig`'s) and enables
    `faulthandler`, only on its first call in a process; `_main` sets the
    handler's formatter, absl's verbosity, the levels of the root, `tfq8`,
    `tensorflow`, `absl` and `h5py` loggers, and `TF_CPP_MIN_LOG_LEVEL`.
    Inside, the root logger's handlers are what `app.run`'s first call makes
    them, on every call; on the way out, by return or by exception (`run`
    always exits with `SystemExit`), the handlers, the absl handler's
    formatter, the verbosity, the levels, `faulthandler` and the environment
    variable are as they were.
    """
    from absl import logging as absl_logging  # noqa: PLC0415

    root = logging.getLogger()
    handler = absl_logging.get_absl_handler()
    handlers, formatter = list(root.handlers), handler.python_handler.formatter
    levels = {name: logging.getLogger(name).level
              for name in ("", "tfq8", "tensorflow", "absl", "h5py")}
    verbosity, faults = absl_logging.get_verbosity(), faulthandler.is_enabled()
    tf_log_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    for h in handlers:  # as absl's use_absl_handler() does: its handler writes there
        if isinstance(h, logging.StreamHandler) and h.stream == sys.stderr:
            root.removeHandler(h)
    if handler not in root.handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)  # first: it sets levels of its own
        root.handlers[:] = handlers
        handler.setFormatter(formatter)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if not faults:
            faulthandler.disable()
        if tf_log_level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = tf_log_level


@contextlib.contextmanager
def _restoring_flags() -> Iterator[None]:
    """Puts absl's global `FLAGS` back as they were: each flag's value, whether it was
    given and whether it holds its default, and whether `FLAGS` were parsed.

    Each command parses its flags into `FLAGS` afresh (`_parse_flags` unparses them
    first), which would otherwise leave the flags of a program calling `run`, an
    absl app's among them, at their defaults. Flags the run defined (absl's
    `--helpfull` and the like, on its first `app.run`) stay defined.
    """
    parsed = FLAGS.is_parsed()
    saved = {name: (FLAGS[name].value, FLAGS[name].present, FLAGS[name].using_default_value)
             for name in FLAGS}
    try:
        yield
    finally:
        if not parsed and FLAGS.is_parsed():
            FLAGS.unparse_flags()
        for name, (value, present, default) in saved.items():
            flag = FLAGS[name]
            if flag.value != value:  # (the verbosity flag sets absl's levels when set)
                flag.value = value
            flag.present, flag.using_default_value = present, default
        if parsed:
            FLAGS.mark_as_parsed()


def _run(argv: list[str]) -> None:
    """`run`'s body, inside `_restoring_logging`."""
    args = argv[1:]
    if not args or args[0] in ("-h", "--help", "--helpfull", "--helpshort", "help"):
        sys.stdout.write(_usage())
        sys.exit(0 if args else EXIT_USAGE)
    if args[0] == "--version":
        from tfq8 import __version__  # noqa: PLC0415

        sys.stdout.write(f"tfq8 {__version__}\n")
        sys.exit(0)
    command = args[0]
    if command not in _COMMANDS:
        _fail(f"unknown command {command!r}; expected one of {', '.join(_COMMANDS)}. "
              "Run `tfq8 --help`.", code=EXIT_USAGE)
    global _F
    _F = _define(command)
    if any(a in ("-h", "--help", "--helpshort", "--helpfull", "-?") for a in args[1:]):
        sys.stdout.write(_command_help(command))
        sys.exit(0)
    app.run(lambda a: _main(command, a[1:]), argv=[f"tfq8 {command}"] + args[1:],
            flags_parser=_parse_flags(command))


def _usage() -> str:
    lines = ["usage: tfq8 COMMAND [ARGS] [--flags]   (or: tfq8 --version)", "", "commands:"]
    for name, (arg, doc) in _COMMANDS.items():
        lines.append(f"  {name:<8} {arg:<7} {doc}")
    lines += ["", "Run `tfq8 COMMAND --help` for a command's flags. Errors are one line on stderr "
                  "(--verbosity=1 adds the traceback).", ""]
    return "\n".join(lines)


def _command_help(command: str) -> str:
    arg, doc = _COMMANDS[command]
    text = [f"usage: tfq8 {command} {arg} [--flags]", "", doc, "", "flags:"]
    for flag in (_F[name] for name in sorted(_F)):
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        text.append(f"  --{flag.name}: {flag.help}{default}")
    text.append("  --verbosity: 1 shows tracebacks and info logs (default: -1)")
    return "\n".join(text) + "\n"


def _parse_flags(command: str) -> Callable[[list[str]], list[str]]:
    def parse(argv: list[str]) -> list[str]:
        try:
            rest = _F(argv, known_only=True)  # this command's flags
            FLAGS.unparse_flags()  # a fresh parse when run twice in one process (tests)
            return FLAGS(rest)  # absl's own (--verbosity); rejects unknown flags
        except flags.Error as e:
            _fail(f"{_one_line(str(e))} (see `tfq8 {command} --help`)", command, EXIT_USAGE)
        return []  # unreachable

    return parse


def _fail(message: str, command: str | None = None, code: int = EXIT_ERROR) -> None:
    prefix = f"tfq8 {command}: error: " if command else "tfq8: error: "
    sys.stderr.write(prefix + _one_line(message) + "\n")
    sys.stderr.flush()
    sys.exit(code)


def _one_line(message: str) -> str:
    return " ".join(str(message).split()) or "unknown error"


def _main(command: str, positional: list[str]) -> int:
    verbose = FLAGS["verbosity"].value >= 1

    logging.getLogger("tfq8").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # TensorFlow's export chatter (INFO) is not for the user
        for name in ("tensorflow", "absl", "h5py"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger().setLevel(logging.WARNING)
        from absl import logging as absl_logging  # noqa: PLC0415

        absl_logging.set_verbosity(absl_logging.WARNING)
        # One line per warning, like the progress and error lines (absl's prefix, with its
        # time, thread and source line, is for --verbosity=1).
        absl_logging.get_absl_handler().setFormatter(
            logging.Formatter(f"tfq8 {command}: warning: %(message)s"))
    arg = _COMMANDS[command][0]
    if len(positional) != 1:
        _fail(f"expected exactly one {arg} argument. Received: {positional or 'none'}",
              command, EXIT_USAGE)
    if not verbose:  # nor its import chatter (CUDA probes, CPU notes); FATAL still shows
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from tfq8._quiet import quiet_native_stderr  # noqa: PLC0415

        with quiet_native_stderr():
            import tensorflow  # noqa: F401, PLC0415
    global _MODEL_TO_STDOUT
    # Before stdout is sent to stderr, when /dev/stdout still names the real one.
    model_to_stdout = command == "convert" and _names_stdout(_F.output)
    try:
        with _stdout_to_stderr() as out:
            _MODEL_TO_STDOUT = out if model_to_stdout else None
            result, text, code = _COMMAND_FUNCS[command](positional[0])
            report = sys.stderr if model_to_stdout else out  # stdout carries the model
            report.write(json.dumps(result, indent=2, allow_nan=False) + "\n" if _F.json
                         else text + "\n")
            report.flush()
        return code
    except KeyboardInterrupt:
        _fail("interrupted", command, 130)
    except Exception as e:  # noqa: BLE001 - every error is one line unless verbose
        if verbose:
            traceback.print_exc()
        _fail(f"{type(e).__name__ + ': ' if not isinstance(e, (ValueError, TypeError, OSError)) else ''}"
              f"{e}", command)
    finally:
        _MODEL_TO_STDOUT = None
    return EXIT_ERROR


def _names_stdout(path: str | None) -> bool:
    """True if `path` is this process's standard output (`/dev/stdout`, `/proc/self/fd/1`, or
    the file stdout is redirected to)."""
    if not path:
        return False
    try:
        named, stdout = os.stat(path), os.fstat(1)
    except (OSError, ValueError):
        return False
    return (named.st_dev, named.st_ino) == (stdout.st_dev, stdout.st_ino)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[Any]:
    """Sends everything written to stdout (by Python or C++) to stderr meanwhile.

    Yields a file writing to the real stdout, so `--json` output stays clean;
    it is closed on the way out (an error's traceback would keep it open).
    """
    sys.stdout.flush()
    saved = os.dup(1)
    real = os.fdopen(os.dup(saved), "w")
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        real.close()


# --------------------------------------------------------------------- progress
class _Progress:
    def __init__(self, command: str):
        self.command = command
        self.enabled = _F.progress
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def step(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(f"tfq8 {self.command}: {message}\n")
            sys.stderr.flush()

    def counter(self, label: str) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            if not self.enabled:
                return
            now = time.monotonic()
            if done < total and now - self.last < (0.2 if self.tty else 2.0):
                return
            self.last = now
            end = "\n" if done >= total or not self.tty else ""
            start = "\r" if self.tty else ""
            sys.stderr.write(f"{start}tfq8 {self.command}: {label} {done}/{total}{end}")
            sys.stderr.flush()

        return update


# --------------------------------------------------------------------- commands
def _convert(model_path: str) -> tuple[dict, str, int]:
    import tfq8  # noqa: PLC0415
    from tfq8.models import load_model  # noqa: PLC0415
    from tfq8.calibration import check_output_path  # noqa: PLC0415
    from tfq8.pipeline import check_convert_options  # noqa: PLC0415
    from tfq8.qat import is_qat  # noqa: PLC0415

    p = _Progress("convert")
    if _F.calibration and _F.data:  # flags that do not go together: before loading the model
        raise ValueError("Pass either --data or --calibration, not both. Received: "
                         f"--data {_F.data} --calibration {_F.calibration}")
    if _F.calibration and _F["num-samples"].value is not None:
        raise ValueError("--num-samples chooses samples of --data; the statistics in "
                         "--calibration were already taken. Received: --num-samples "
                         f"{_F['num-samples'].value} with --calibration {_F.calibration}")
    if _F.calibration and _F["calibration-out"].value:  # it would not be written
        raise ValueError("--calibration-out saves the statistics taken on --data; with "
                         "--calibration they are in that file already. Pass one of them. "
                         f"Received: --calibration {_F.calibration} --calibration-out "
                         f"{_F['calibration-out'].value}")
    p.step(f"loading {model_path}")
    handle = load_model(model_path)
    output = _F.output or _default_output(model_path)
    to_stdout = _MODEL_TO_STDOUT  # written there below, not through a file of that name
    options = dict(method=_F.method, per_channel=_F["per-channel"].value,
                   input_type=_F["input-type"].value, output_type=_F["output-type"].value,
                   allow_float=_F["allow-float"].value,
                   bias_correction=_F["bias-correction"].value,
                   output_path=output if to_stdout is None else None,
                   ranges=_parse_ranges(_F["range"].value) or None,
                   method_options=_parse_method_options(_F["method-option"].value) or None)
    read = {"MODEL": model_path, "--data": _F.data, "--calibration": _F.calibration}
    try:  # before calibrating; the message names the flags, not convert()'s arguments
        check_convert_options(**options, inputs=read)
    except (ValueError, TypeError, OSError) as e:
        raise _in_flags(e) from None
    written = {**read, "--output": output}
    if _F["calibration-out"].value:
        check_output_path(_F["calibration-out"].value, arg="--calibration-out", inputs=written)
    if _F.plot:
        from tfq8.harness.plot import check_plot_path  # noqa: PLC0415

        check_plot_path(_F.plot, arg="--plot",
                        inputs={**written, "--calibration-out": _F["calibration-out"].value})
    calib = None
    if _F.calibration:
        calib = tfq8.Calibration.load(_F.calibration)
        if calib.fingerprint not in (None, handle.fingerprint()):
            raise ValueError(f"--calibration {_F.calibration} holds statistics of another model, "
                             f"or of {model_path} before its weights changed (their weight "
                             "fingerprints differ), so tfq8 will not use them. Calibrate again "
                             "with --data FILE (--calibration-out saves the new statistics).")
        p.step(f"reusing statistics of {calib.num_samples} samples; choosing ranges "
               f"({_F.method}) and quantizing")
    elif _F.data:
        data, _ = _load_data(_F.data, [s.shape for s in handle.specs],
                             [s.name for s in handle.specs])
        p.step("calibrating (TFLite calibrator, then histograms in LiteRT)")
        t0 = time.monotonic()
        calib = tfq8.calibrate(handle, data, num_samples=_F["num-samples"].value)
        p.step(f"calibrated on {calib.num_samples} samples in {time.monotonic() - t0:.1f}s; "
               f"choosing ranges ({_F.method}) and quantizing")
        if _F["calibration-out"].value:
            calib.save(_F["calibration-out"].value)
    elif not is_qat(handle):
        raise ValueError("convert needs calibration data: pass --data FILE (.npy, .npz or a "
                         "folder of images) or --calibration stats.npz; only a quantization-"
                         "aware-trained model converts without. Received: no --data")
    elif _F["calibration-out"].value or _F.plot:
        flag, what = ("--calibration-out", "save") if _F["calibration-out"].value else ("--plot",
                                                                                         "draw")
        raise ValueError(f"{flag} needs --data: without data there are no statistics to "
                         f"{what}. Received: no --data")
    else:
        p.step("quantization-aware-trained model: converting with the ranges QAT learned")
    # The model goes along with saved statistics too: convert() refuses another model's.
    try:
        with filtering(_FlagNames()):
            blob = tfq8.convert(handle, calibration=calib, **options)
    except (ValueError, TypeError, OSError) as e:  # tfq8.UnsupportedOpError is a ValueError
        raise _in_flags(e) from None
    if to_stdout is not None:
        to_stdout.flush()
        to_stdout.buffer.write(blob)
        to_stdout.buffer.flush()
    num_samples = calib.num_samples if calib is not None else 0
    info = tfq8.inspect(blob)
    result = {"output": os.path.abspath(output), "size_bytes": len(blob), "method": _F.method,
              "num_samples": num_samples, "full_integer": info.full_integer,
              "num_ops": len(info.ops),
              "calibration_out": _F["calibration-out"].value and os.path.abspath(
                  _F["calibration-out"].value)}
    result["io"] = [{"tensor": t.name, "kind": kind, "dtype": t.dtype, "scale": list(t.scale),
                     "zero_point": list(t.zero_point)}
                    for kind, tensors in (("input", info.inputs), ("output", info.outputs))
                    for t in tensors]
    text = "\n".join([f"wrote {output}: {len(blob)} bytes, {len(info.ops)} ops, "
                      f"{info.verdict()}", *info.io_lines()])
    report = calib.last_auto if calib is not None and _F.method == "auto" else None
    if report is not None:
        result["auto"] = {"method": report.method, "score_db": _finite(report.score),
                          "scores_db": report.scores, "excluded_samples": report.excluded,
                          "choice": {calib.tensor(i).name: m for i, m in report.choice.items()},
                          "loop_scales": report.loop_scales}
        text += "\n" + report.summary()
    corrected = calib.last_bias_correction if calib is not None and options[
        "bias_correction"] else None
    if corrected is not None:
        result["bias_correction"] = {"kept": corrected.kept, "changed": corrected.changed,
                                     "ops": len(corrected.ops), "samples": corrected.samples,
                                     "sqnr_before_db": _finite(corrected.sqnr_before),
                                     "sqnr_after_db": _finite(corrected.sqnr_after)}
        text += "\n" + corrected.summary()
    if _F.plot:
        from tfq8.harness.plot import save_figure  # noqa: PLC0415

        figure = tfq8.plot_ranges(calib)
        save_figure(figure, _F.plot, arg="--plot")
        result["plot"] = os.path.abspath(_F.plot)
        text += f"\nwrote {_F.plot}: {len(figure.axes)} tensor histograms with each method's range"
    return result, text, 0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


_FLAGS = {"output_path": "--output", "method_options": "--method-option", "method": "--method",
          "input_type": "--input-type", "output_type": "--output-type",
          "num_samples": "--num-samples"}


class _FlagNames(logging.Filter):
    """Says `convert()`'s warnings in the command line's words (`_as_flags`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _as_flags(record.getMessage()), ()
        return True


def _in_flags(e: Exception) -> Exception:
    """`e` (from `convert()` or its checks) with its message in the command line's words."""
    if isinstance(e, OSError) and e.errno is not None:  # a path that cannot be written
        return type(e)(e.errno, _as_flags(e.strerror or str(e)))
    return type(e)(_as_flags(str(e)))


def _as_flags(message: str) -> str:
    """`convert()`'s argument names in a message -> the command line's flags
    (`method` only as `method=`: the bare word is prose)."""
    for python, flag in (("allow_float=True", "--allow-float"), ("ranges[", "--range ["),
                         ("bias_correction=True", "--bias-correction"),
                         ("ranges=", "--range")):
        message = message.replace(python, flag)

    def flag(m: re.Match) -> str:
        name, equals = m.group(1), m.group(2)
        if name == "method" and not equals:
            return m.group(0)
        return _FLAGS[name] + (" " if equals else "")

    text = re.sub(r"(?<![\w-])(" + "|".join(_FLAGS) + r")\b(=?)", flag, message)
    return re.sub(r" {2,}", " ", text)


def _in_words(e: Exception, names: dict[str, str]) -> Exception:
    """`e` (from `check()` or `benchmark()`) in the command line's words: an error about
    one of `names` (argument -> flag) that starts with it, and `tflite_model` (TFLITE)."""
    message = str(e).replace("tflite_model", "TFLITE")
    for python, flag in names.items():
        if re.match(rf"{python}\b", message):
            message = flag + message[len(python):]
        # "Received: output=3", "pass output= to name ...": the flag, wherever it is
        message = re.sub(rf"(?<![\w-]){python}=(\s?)", lambda m: flag + " ", message)
    return type(e)(re.sub(r" {2,}", " ", message))


def _parse_ranges(items: list[str]) -> dict[str, tuple[float, float]]:
    """`--range NAME=MIN,MAX` values -> {name: (min, max)} (the name may hold `=` and `,`)."""
    out = {}
    for item in items:
        name, sep, pair = item.rpartition("=")
        lo, comma, hi = pair.partition(",")
        try:
            if not (sep and name and comma):
                raise ValueError
            out[name] = (float(lo), float(hi))
        except ValueError:
            raise ValueError(f"--range must be NAME=MIN,MAX, such as 'logits=-8,8'. "
                             f"Received: --range {item!r}") from None
    return out


def _parse_method_options(items: list[str]) -> dict[str, Any]:
    """`--method-option KEY=VALUE` values -> keyword options (numbers parsed)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key.strip()):
            raise ValueError(f"--method-option must be KEY=VALUE, such as 'percentile=99.9'. "
                             f"Received: --method-option {item!r}")
        if key.strip() in out:
            raise ValueError(f"--method-option sets {key.strip()!r} twice. Received: "
                             + " ".join(f"--method-option {i}" for i in items))
        try:
            out[key.strip()] = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _check(tflite_path: str) -> tuple[dict, str, int]:
    import tfq8  # noqa: PLC0415
    from tfq8.data import short_name  # noqa: PLC0415

    p = _Progress("check")
    if not _F.data:
        raise ValueError("check needs data: pass --data FILE (.npy, .npz or a folder of images). "
                         "Received: no --data")
    info = _inspect_tflite(tflite_path)
    # The signature's sizes: a dynamic height and width (-1) are stored as 1, and images
    # resized to 1x1 would fail deep in the model; unknown, they are refused as in convert.
    shapes = [tuple(None if d < 0 else d for d in (t.shape_signature or t.shape))
              for t in info.inputs]
    data, labels = _load_data(_F.data, shapes, [short_name(t.name) for t in info.inputs])
    if _F.labels:
        labels = _load_labels(_F.labels)
    output: int | str = _F["label-output"].value
    output = int(output) if str(output).isdigit() else output
    if _F.reference:
        p.step(f"loading reference {_F.reference}")
    try:
        report = tfq8.check(tflite_path, reference=_F.reference, data=data, labels=labels,
                            output=output, num_samples=_F["num-samples"].value,
                            batch_size=_F["batch-size"].value, backend=_F.backend,
                            num_threads=_F.threads, progress=p.counter("samples"))
    except (ValueError, TypeError) as e:
        names = {"output": "--label-output", "reference": "--reference"}
        if _F.labels:  # else the labels came with --data
            names["labels"] = "--labels"
        raise _in_words(e, names) from None
    top = _F.top
    shown = dataclasses.replace(report, tensors=report.tensors[:top])
    text = str(shown)
    if len(report.tensors) > top:
        text += f"\n  ... {len(report.tensors) - top} more tensor(s) (--top, or --json for all)"
    return report.to_dict(), text, 0


def _bench(tflite_path: str) -> tuple[dict, str, int]:
    import tfq8  # noqa: PLC0415

    p = _Progress("bench")
    try:
        report = tfq8.benchmark(tflite_path, reference=_F.reference, num_threads=_F.threads,
                                backend=_F.backend, warmup=_F.warmup, runs=_F.runs,
                                time_budget_s=_F["time-budget"].value,
                                per_op=_F["per-op"].value, progress=p.step,
                                input_shapes=_parse_shapes(_F["input-shape"].value))
    except (ValueError, TypeError) as e:
        # "pass input_shapes with one shape per input, such as input_shapes=[[1, 224, 224, 3]]
        # (command line: --input-shape=1,224,224,3)": here only the command line's form
        e = type(e)(re.sub(r"input_shapes with one shape per input, such as input_shapes=\[.*?\]\] "
                           r"\(command line: (--input-shape=[^)\s]+)\)",
                           r"--input-shape once per input, such as \1", str(e)))
        raise _in_words(e, {"input_shapes": "--input-shape", "reference": "--reference"}) from None
    return report.to_dict(), str(report), 0


def _parse_shapes(items: list[str]) -> list[list[int]] | None:
    """`--input-shape 1,96,96,3` values -> shapes (None when the flag is not given)."""
    shapes = []
    for item in items:
        try:
            shapes.append([int(d) for d in item.split(",")])
        except ValueError:
            raise ValueError(f"--input-shape must be sizes separated by commas, such as "
                             f"'1,96,96,3'. Received: --input-shape {item!r}") from None
    return shapes or None


def _inspect_tflite(tflite_path: str) -> Any:
    """`tfq8.inspect(tflite_path)`; its errors name TFLITE, the command's argument, as bench's
    do (`tfq8.inspect` calls it `model`)."""
    import tfq8  # noqa: PLC0415

    try:
        return tfq8.inspect(tflite_path)
    except (ValueError, TypeError) as e:
        message = re.sub(r"^model\b", "TFLITE", str(e))
        raise type(e)(re.sub(r"(?<![\w-])model=", "TFLITE=", message)) from None


def _inspect(tflite_path: str) -> tuple[dict, str, int]:
    info = _inspect_tflite(tflite_path)
    code = EXIT_NOT_INTEGER if _F.strict and not info.full_integer else 0
    return info.to_dict(), str(info), code


_COMMAND_FUNCS = {"convert": _convert, "check": _check, "bench": _bench, "inspect": _inspect}


# --------------------------------------------------------------------- data files
def _default_output(model_path: str) -> str:
    base = os.path.normpath(model_path)
    if os.path.basename(base) in (os.curdir, os.pardir):  # beside the folder, not in it
        base = os.path.abspath(base)
    for ext in (".keras", ".h5", ".hdf5", ".tflite"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base + "_int8.tflite"


def _load_data(path: str, shapes: Sequence[Sequence[int | None]],
               names: Sequence[str]) -> tuple[Any, Any]:
    """--data -> (data for tfq8, labels found alongside or None)."""
    if os.path.isdir(path):
        return _load_images(path, shapes)
    if not os.path.isfile(path):
        raise ValueError(f"--data must be a .npy or .npz file or a folder of images; no such file. "
                         f"Received: --data={path}")
    if path.lower().endswith(".npy"):
        return _read_arrays(path, "--data"), None
    if path.lower().endswith(".npz"):
        arrays = _read_arrays(path, "--data")
        labels = arrays.pop("y", None)
        if labels is None:
            labels = arrays.pop("labels", None)
        if "x" in arrays:
            return arrays["x"], labels
        if set(names) <= set(arrays):
            return {n: arrays[n] for n in names}, labels
        if len(arrays) == 1 and (len(names) == 1 or not set(arrays) & set(names)):
            return next(iter(arrays.values())), labels
        raise ValueError(f"--data .npz must hold 'x' (and optionally 'y'), or one array per model "
                         f"input {list(names)}. Received keys: {sorted(arrays)}")
    raise ValueError(f"--data must be a .npy or .npz file or a folder of images. "
                     f"Received: --data={path}")


def _load_labels(path: str) -> Any:
    if not os.path.isfile(path) or not path.lower().endswith((".npy", ".npz")):
        raise ValueError(f"--labels must be a .npy file or a .npz holding 'y' or 'labels'. "
                         f"Received: --labels={path}")
    arrays = _read_arrays(path, "--labels")
    if path.lower().endswith(".npy"):
        return arrays
    for key in ("y", "labels"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if arrays:  # one array per output name: --label-output chooses (check() names the keys)
        return arrays
    raise ValueError(f"--labels .npz must hold 'y' or 'labels', or one array per output name. "
                     f"Received keys: {sorted(arrays)}")


def _read_arrays(path: str, flag: str) -> Any:
    """A .npy file's array or a .npz file's arrays (name -> array), read in full.

    Raises:
        ValueError: Naming `flag` and the file, if it cannot be read (truncated,
            not numpy's format, or holding Python objects).
    """
    import numpy as np  # noqa: PLC0415

    npz = path.lower().endswith(".npz")
    magic = b"PK" if npz else b"\x93NUMPY"
    try:
        with open(path, "rb") as f:
            head = f.read(len(magic))
    except OSError as e:
        raise ValueError(f"{flag}: cannot read {path!r}: {e.strerror or e}. "
                         f"Received: {flag}={path}") from None
    if head != magic:
        raise ValueError(f"{flag}: {path!r} is not a numpy {'.npz' if npz else '.npy'} file (it "
                         f"does not start with numpy's header). Received: {flag}={path}")
    try:
        if npz:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any damage to the file: one clear error
        raise ValueError(f"{flag}: could not read {path!r} as a numpy {path[-4:]} file of numeric "
                         f"arrays (damaged, truncated or holding Python objects): "
                         f"{str(e) or type(e).__name__}. Received: {flag}={path}") from None


def _load_images(folder: str, shapes: Sequence[Sequence[int | None]]) -> tuple[Any, Any]:
    """A folder of images (or of class subfolders) -> float pixels [N,H,W,C] and labels."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    if len(shapes) != 1 or len(shapes[0]) != 4 or None in tuple(shapes[0][1:]):
        raise ValueError("--data as a folder of images needs a model with one image input "
                         f"[N, H, W, C] of fixed size. Received: model input shapes {list(shapes)}")
    h, w, c = (int(d) for d in shapes[0][1:])

    def listing(directory: str) -> list[str]:
        try:
            return sorted(os.listdir(directory))
        except OSError as e:
            raise ValueError(f"--data: cannot list the folder {directory}: "
                             f"{e.strerror or e}") from None

    top = listing(folder)
    classes = [d for d in top if os.path.isdir(os.path.join(folder, d))]
    files: list[tuple[str, int]] = []
    for k, cls in enumerate(classes):
        sub = os.path.join(folder, cls)
        files += [(os.path.join(sub, f), k) for f in listing(sub)
                  if f.lower().endswith(_IMAGE_EXTS)]
    flat = [(os.path.join(folder, f), -1) for f in top
            if f.lower().endswith(_IMAGE_EXTS)]
    if files and flat:
        _log.warning("--data: %d image(s) at the top of %s are left out: beside class "
                     "subfolders, only the subfolders' images are read (with their class).",
                     len(flat), folder)
    labelled = bool(files)
    if not files:
        files = flat
    if not files:
        raise ValueError(f"--data folder holds no images ({', '.join(_IMAGE_EXTS)}), directly or "
                         f"in class subfolders. Received: --data={folder}")
    limit = _F["num-samples"].value
    separate_labels = "labels" in _F and _F.labels  # they follow the files' order: keep it
    if limit is not None and 0 < limit < len(files) and not separate_labels:
        # spread over the classes, and decode no more
        files = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, limit).round()
                                             .astype(np.int64))]
    images = np.empty((len(files), h, w, c), np.float32)
    for i, (f, _) in enumerate(files):
        try:
            img = tf.io.decode_image(tf.io.read_file(f), channels=c, expand_animations=False)
        except (tf.errors.OpError, ValueError) as e:
            reason = re.sub(r"\{\{.*?\}\}\s*", "", _one_line(str(e)))  # TF's op-node tags
            reason = re.sub(r"\s*\[Op:\w+\].*$", "", reason)  # and its "[Op:DecodeImage] name:"
            raise ValueError(f"--data: cannot decode image {f}: {reason[:120]}") from None
        img = tf.image.resize(tf.cast(img, tf.float32), (h, w))
        images[i] = img.numpy()
    images = images * _F["image-scale"].value + _F["image-offset"].value
    labels = np.array([k for _, k in files]) if labelled else None
    return images, labels


if __name__ == "__main__":  # pragma: no cover
    run()

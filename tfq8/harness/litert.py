"""LiteRT interpreters, built without importing TensorFlow.

The one place tfq8 constructs an `ai_edge_litert` interpreter. It stays free
of TensorFlow so that the statistics worker process (`tfq8.stats.worker`)
starts in a fraction of a second; `tfq8.harness.interpreter.make_interpreter`
adds model verification on top.

Example:
    >>> interp = new_interpreter(blob, backend="xnnpack", num_threads=1)
    >>> size_inputs(interp, [[8, 32, 32, 3]])
"""

from __future__ import annotations

from typing import Any, Sequence

from tfq8._quiet import ignoring_warnings, quiet_native_stderr

BACKENDS = ("xnnpack", "builtin", "reference")
"""Kernel choices: the XNNPACK delegate (LiteRT's default on CPU), TFLite's
optimized builtin kernels without any delegate, or its reference kernels."""


def new_interpreter(model: bytes, *, backend: str, num_threads: int,
                    preserve_all_tensors: bool = False) -> Any:
    """An unallocated LiteRT interpreter for `model` (not verified here).

    Args:
        model: `.tflite` bytes.
        backend: `"xnnpack"` (XNNPACK delegate), `"builtin"` (optimized builtin
            kernels, no delegate) or `"reference"` (reference kernels).
        num_threads: Threads for the kernels.
        preserve_all_tensors: Keep intermediate tensors readable.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        ValueError: On an unknown `backend`, or from LiteRT.
        RuntimeError: From LiteRT, if it cannot load the model.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: PLC0415

    resolvers = {"xnnpack": OpResolverType.AUTO, "builtin":
                 OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": OpResolverType.BUILTIN_REF}
    if backend not in resolvers:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}")
    # Quiet: LiteRT announces "Created TensorFlow Lite XNNPACK delegate" on
    # stderr; its errors reach Python as exceptions with their message.
    # preserve_all_tensors is asked for on purpose.
    with ignoring_warnings(".*experimental_preserve_all_tensors"), quiet_native_stderr():
        return Interpreter(
            model_content=bytes(model),
            experimental_op_resolver_type=resolvers[backend],
            experimental_preserve_all_tensors=preserve_all_tensors,
            num_threads=int(num_threads),
        )


def size_inputs(interpreter: Any, shapes: Sequence[Sequence[int]]) -> None:
    """Gives the inputs these shapes (in input order), then allocates the tensors.

    Dynamic dimensions (height and width stored as 1) and the batch follow
    the data this way.

    Raises:
        RuntimeError, ValueError: From LiteRT, if the model cannot take them.
    """
    for d, shape in zip(interpreter.get_input_details(), shapes):
        if list(d["shape"]) != list(shape):
            interpreter.resize_tensor_input(d["index"], list(shape))
    allocate(interpreter)


def allocate(interpreter: Any) -> None:
    """`interpreter.allocate_tensors()`, quiet (XNNPACK announces itself when applied).

    Raises:
        RuntimeError, ValueError: From LiteRT, if the model cannot be prepared.
    """
    with quiet_native_stderr():
        interpreter.allocate_tensors()


def invoke(interpreter: Any) -> None:
    """`interpreter.invoke()` from the model's first state, as Keras runs every batch.

    TFLite's fused LSTM (`UNIDIRECTIONAL_SEQUENCE_LSTM`, what a tf_keras `LSTM`
    becomes) keeps its state in variable tensors, which each run leaves holding
    its last state: without a reset, each run (each sample, where the batch size
    is fixed at 1) would start from the one before it. Other models have no
    variable tensors, and the reset costs them nothing.
    """
    interpreter.reset_all_variables()
    interpreter.invoke()

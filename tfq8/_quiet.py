"""Silencing the chatter of TensorFlow, Keras and the quantizer (no TensorFlow import).

Keras prints `Saved artifact at ...` while exporting, the quantizer writes
`fully_quantize: ...` from native code on every call, and importing TensorFlow
logs CUDA probes on machines without a GPU. None of it is for the user; errors
still raise with their message.

Example:
    >>> with quiet_stdout(), quiet_native_stderr():
    ...     blob = converter.convert()
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Swallows Python-level stdout, and the quantizer's warning that input
    statistics are missing (tfq8 always provides them)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        yield


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silences what native code writes to file descriptor 2; Python's own
    `sys.stderr` object is untouched."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

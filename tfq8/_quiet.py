"""Silencing the chatter of TensorFlow, Keras and the quantizer (no TensorFlow import).

Keras prints `Saved artifact at ...` while exporting, the quantizer writes
`fully_quantize: ...` from native code on every call, and LiteRT announces
its XNNPACK delegate. None of it is for the user; errors still raise with
their message.

Example:
    >>> with quiet_stdout(), quiet_native_stderr():
    ...     blob = converter.convert()
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from typing import Callable, Iterator

_lock = threading.Lock()
_depth = 0  # threads inside quiet_native_stderr
_saved_fd: int | None = None
_sink = None  # the file descriptor 2 points at while redirected


class _Deferred(logging.Filter):
    """Holds tfq8's log records back while stderr is silenced; they are replayed after."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


#: tfq8's child loggers (its modules log on `tfq8` or on one of these).
CHILD_LOGGERS = ("tfq8.callbacks", "tfq8.cli")


def tfq8_loggers() -> list[logging.Logger]:
    """The `tfq8` logger and its children.

    A logger's filters see only the records logged on that very logger, not those
    its children pass up, so a filter meant for all of tfq8's records goes on each.
    The known children are created here if need be, so a module first imported
    while a filter is on still has it.
    """
    names = {"tfq8", *CHILD_LOGGERS}
    names.update(n for n in logging.root.manager.loggerDict if n.startswith("tfq8."))
    return [logging.getLogger(n) for n in sorted(names)]


@contextlib.contextmanager
def filtering(log_filter: logging.Filter) -> Iterator[None]:
    """Applies `log_filter` to all of tfq8's log records while inside."""
    loggers = tfq8_loggers()
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)


_deferred: _Deferred | None = None


_out_lock = threading.Lock()
_out_depth = 0  # threads inside quiet_stdout
_saved_stdout = None
_filter = None  # the warnings filter quiet_stdout installed


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Swallows Python-level stdout, and the quantizer's warning that input
    statistics are missing (tfq8 always provides them), while any thread is inside.

    Nested and concurrent uses share one redirection and one warnings filter,
    as `quiet_native_stderr` does (`contextlib.redirect_stdout` and
    `warnings.catch_warnings` are not safe across threads: two overlapping
    uses can leave `sys.stdout` redirected for good). The last one out
    restores both.
    """
    global _out_depth, _saved_stdout, _filter
    with _out_lock:
        if _out_depth == 0:
            _saved_stdout, sys.stdout = sys.stdout, io.StringIO()
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs",
                                    module="tensorflow.lite.python.convert")
            _filter = warnings.filters[0]
        _out_depth += 1
    try:
        yield
    finally:
        with _out_lock:
            _out_depth -= 1
            if _out_depth == 0:
                sys.stdout, _saved_stdout = _saved_stdout, None
                if _filter in warnings.filters:  # gone if a catch_warnings block ended since
                    warnings.filters.remove(_filter)
                _filter = None


_ignore_lock = threading.Lock()
# message -> (threads inside, the filter, where an equal filter of the program's own was)
_ignoring: dict[str, tuple[int, tuple, int | None]] = {}


@contextlib.contextmanager
def ignoring_warnings(message: str) -> Iterator[None]:
    """Ignores the warnings whose message matches `message` (a regular expression,
    as for `warnings.filterwarnings`) while any thread is inside.

    Nested and concurrent uses share one filter, which the last one out removes,
    and no other filter is touched: `warnings.catch_warnings` puts back a copy of
    the whole list on the way out, so two overlapping uses in threads leave one
    thread's filter in place for good (and drop any other filter added meanwhile).
    A filter of the program's own equal to this one (`warnings.filterwarnings`
    moves it to the front) is put back where it was, not removed.
    """
    with _ignore_lock:
        depth, added, was_at = _ignoring.get(message, (0, None, None))
        if depth == 0:
            before = list(warnings.filters)
            warnings.filterwarnings("ignore", message=message)
            added = warnings.filters[0]
            was_at = next((i for i, f in enumerate(before) if f == added), None)
        _ignoring[message] = (depth + 1, added, was_at)
    try:
        yield
    finally:
        with _ignore_lock:
            depth, added, was_at = _ignoring.pop(message)
            if depth > 1:
                _ignoring[message] = (depth - 1, added, was_at)
            else:
                at = next((i for i, f in enumerate(warnings.filters) if f is added), None)
                if at is not None:  # gone if a catch_warnings block ended since
                    del warnings.filters[at]
                    if was_at is not None:
                        warnings.filters.insert(min(was_at, len(warnings.filters)), added)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[Callable[[], str]]:
    """Points file descriptor 2 at a temporary file while any thread is inside.

    This silences native code (which writes to the descriptor directly) and,
    for that time, anything else written to the process' stderr, Python's
    included. tfq8's own log records are held back meanwhile and handled when
    the last thread leaves, so none is lost. Nested and concurrent uses share
    one redirection: the first in redirects, the last out restores.

    Yields:
        A function returning what was written to the descriptor since this
        block began (TFLite's quantizer explains its failures only there).
    """
    global _depth, _saved_fd, _deferred, _sink
    with _lock:
        if _depth == 0:
            _deferred = _Deferred()
            for logger in tfq8_loggers():
                logger.addFilter(_deferred)
            try:
                saved = os.dup(2)
            except OSError:  # no file descriptor 2: nothing to silence
                saved = None
            if saved is not None:
                try:
                    _sink = tempfile.TemporaryFile()
                except OSError:  # no writable temporary folder: silence only
                    _sink = open(os.devnull, "wb")  # noqa: SIM115 - closed on the way out
                os.dup2(_sink.fileno(), 2)
            _saved_fd = saved
        start = _sink_size()
        _depth += 1

    def said() -> str:
        with _lock:
            if _sink is None:
                return ""
            end = _sink_size()
            if end <= start:
                return ""
            return os.pread(_sink.fileno(), end - start, start).decode("utf-8", "replace")

    try:
        yield said
    finally:
        with _lock:
            _depth -= 1
            held = []
            if _depth == 0:
                if _saved_fd is not None:
                    os.dup2(_saved_fd, 2)
                    os.close(_saved_fd)
                    _saved_fd = None
                if _sink is not None:
                    _sink.close()
                    _sink = None
                for logger in tfq8_loggers():
                    logger.removeFilter(_deferred)
                held, _deferred = _deferred.records, None
        for record in held:  # outside the lock: a handler may log again
            logging.getLogger(record.name).handle(record)


def _sink_size() -> int:
    """Bytes written to the redirected descriptor so far (0 when not redirected)."""
    if _sink is None:
        return 0
    try:
        return os.fstat(_sink.fileno()).st_size
    except OSError:
        return 0

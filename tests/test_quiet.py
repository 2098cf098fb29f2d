"""tfq8._quiet: native stderr is silenced while inside, and always restored."""

import logging
import os
import sys
import threading
import warnings

from tfq8._quiet import (CHILD_LOGGERS, filtering, ignoring_warnings, quiet_native_stderr,
                         quiet_stdout)


def _fd2():
    st = os.fstat(2)
    return st.st_dev, st.st_ino


def test_nested_and_concurrent_uses_restore_stderr():
    before = _fd2()
    with quiet_native_stderr():
        sink = _fd2()
        assert sink != before
        with quiet_native_stderr():
            assert _fd2() == sink  # one redirection shared
        assert _fd2() == sink  # the inner exit does not restore
    assert _fd2() == before

    barrier = threading.Barrier(4)

    def work():
        with quiet_native_stderr():
            barrier.wait(timeout=10)  # all four inside at once
        for _ in range(50):
            with quiet_native_stderr():
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _fd2() == before


def test_overlapping_quiet_stdout_in_threads_restores_stdout():
    before = sys.stdout
    start = threading.Barrier(2)
    first_out, second_in = threading.Event(), threading.Event()
    quiet_inside = []

    def first():  # in, then out while the second is still in
        with quiet_stdout():
            start.wait(timeout=10)
            second_in.wait(timeout=10)
        first_out.set()

    def second():
        start.wait(timeout=10)
        with quiet_stdout():
            second_in.set()
            first_out.wait(timeout=10)
            quiet_inside.append(sys.stdout is not before)  # still quiet after the first left
    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert quiet_inside == [True]
    assert sys.stdout is before


def test_interpreters_made_in_overlapping_threads_leave_the_warning_filters_alone(monkeypatch):
    """Each LiteRT interpreter is made ignoring its preserve_all_tensors warning; with
    `warnings.catch_warnings` (which puts back a copy of the whole list), one made in
    a thread while another thread was making one left that filter in place for good."""
    import ai_edge_litert.interpreter as litert_interpreter

    from tfq8.harness.litert import new_interpreter

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    class Interpreter:  # the first is made while the second starts, which ends last
        def __init__(self, model_content, **kwargs):
            if model_content == b"first":
                first_in.set()
                second_in.wait(timeout=10)
            else:
                second_in.set()
                first_out.wait(timeout=10)

    monkeypatch.setattr(litert_interpreter, "Interpreter", Interpreter)
    before = list(warnings.filters)

    def first():
        new_interpreter(b"first", backend="builtin", num_threads=1)
        first_out.set()

    def second():
        first_in.wait(timeout=10)
        new_interpreter(b"second", backend="builtin", num_threads=1)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert warnings.filters == before


def test_ignoring_warnings_shares_one_filter_and_the_last_out_removes_it():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        inside = list(warnings.filters)
        with ignoring_warnings("noisy"):
            with ignoring_warnings("noisy"):
                assert len(warnings.filters) == len(inside) + 1
                warnings.warn("noisy here")
            warnings.warn("noisy still")  # the inner exit keeps the filter
        assert warnings.filters == inside
        warnings.warn("noisy after")
    assert [str(w.message) for w in seen] == ["noisy after"]
    assert warnings.filters == before


def test_ignoring_warnings_keeps_a_users_own_filter_for_the_same_message():
    """A program that ignores LiteRT's preserve_all_tensors warning itself, with the very
    filter tfq8 uses: `warnings.filterwarnings` moved that filter to the front, and the
    way out removed it (`warnings.catch_warnings` put the user's list back)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        warnings.filterwarnings("ignore", message="another of the program's")
        users = list(warnings.filters)
        with ignoring_warnings(".*experimental_preserve_all_tensors"):
            assert warnings.filters[0] == users[1]
        assert warnings.filters == users  # the same filters, in the same order
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("the experimental_preserve_all_tensors warning")
        assert seen == []


def test_quiet_stdout_filters_the_quantizer_warning_only_while_inside():
    def warn():
        warnings.warn_explicit("Statistics for quantized inputs were expected", UserWarning,
                               "convert.py", 846, module="tensorflow.lite.python.convert")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_stdout():
            with quiet_stdout():
                warn()
            warn()                      # the inner exit keeps the filter
        warn()
    assert len(seen) == 1


def test_tfq8_log_records_inside_are_handled_after_not_lost(capfd):
    class Fd2Handler(logging.Handler):  # writes to descriptor 2, as a console handler does
        def emit(self, record):
            os.write(2, (self.format(record) + "\n").encode())

    log = logging.getLogger("tfq8")
    handler = Fd2Handler()
    log.addHandler(handler)
    try:
        with quiet_native_stderr():
            os.write(2, b"native chatter\n")
            log.warning("said while silenced")
            logging.getLogger("tfq8.callbacks").warning("and by a child logger")
            assert "said" not in capfd.readouterr().err
        err = capfd.readouterr().err
        # The chatter stays silenced; a child logger's record is held too, not lost.
        assert err == "said while silenced\nand by a child logger\n"
        log.warning("said after")
        assert capfd.readouterr().err == "said after\n"  # and nothing is held back any more
    finally:
        log.removeHandler(handler)


def test_filtering_applies_to_tfq8s_child_loggers_while_inside(caplog):
    class Upper(logging.Filter):
        def filter(self, record):
            record.msg = str(record.msg).upper()
            return True

    child = logging.getLogger("tfq8.cli")
    with caplog.at_level(logging.INFO, logger="tfq8"):
        with filtering(Upper()):
            logging.getLogger("tfq8").info("parent")
            child.info("child")  # a filter on "tfq8" alone never sees this record
        child.info("after")
    assert [r.getMessage() for r in caplog.records] == ["PARENT", "CHILD", "after"]
    assert not logging.getLogger("tfq8").filters and not child.filters


def test_every_child_logger_tfq8_names_is_known_to_the_filters():
    import re
    root = os.path.join(os.path.dirname(__file__), "..", "tfq8")
    named = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    named.update(re.findall(r'getLogger\("(tfq8\.[\w.]+)"\)', f.read()))
    assert named and named <= set(CHILD_LOGGERS)


def test_what_native_code_wrote_is_readable_inside():
    with quiet_native_stderr() as outer:
        os.write(2, b"before\n")
        with quiet_native_stderr() as inner:
            os.write(2, b"quantizer: error: why\n")
            assert inner() == "quantizer: error: why\n"
        assert outer() == "before\nquantizer: error: why\n"

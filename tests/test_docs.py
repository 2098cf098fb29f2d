"""The docstring examples that need no model or data run, and print what they say.

Examples that need a user's model (`tfq8.convert(model, x_train)`) are
illustrations; the ones here are self-contained and kept true by this test.
"""

import doctest
import importlib

import numpy as np
import pytest

SELF_CONTAINED = [
    "tfq8._args",
    "tfq8.stats.histogram",
    "tfq8.ranges.minmax",
    "tfq8.ranges.percentile",
    "tfq8.ranges.kl",
    "tfq8.ranges.mse",
    "tfq8.ranges.int8grid",
    "tfq8.ranges.registry",
    "tfq8.ranges.auto.clearly_better",
    "tfq8.ranges.auto.corrupted_frames",
    "tfq8.ranges.auto.total_sqnr_db",
]


def _tests(name):
    module_name, _, attr = name.partition(".ranges.auto.")
    if attr:
        module = importlib.import_module("tfq8.ranges.auto")
        return doctest.DocTestFinder().find(getattr(module, attr), name=name, module=module)
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(name)) if t.examples]


@pytest.mark.parametrize("name", SELF_CONTAINED)
def test_docstring_examples_run(name):
    tests = _tests(name)
    assert tests and any(t.examples for t in tests), f"{name} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        t.globs.update(np=np)
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"

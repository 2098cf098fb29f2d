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
    "tfq8.shared_grid.tie_ranges",
]
# Modules whose own examples need a model: only the functions listed above run.
_BY_FUNCTION = ("tfq8.ranges.auto.", "tfq8.shared_grid.")


def _tests(name):
    if name.startswith(_BY_FUNCTION):
        module_name, _, attr = name.rpartition(".")
        module = importlib.import_module(module_name)
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


def test_public_names_load_lazily_and_match_the_type_checking_imports():
    import ast
    import pathlib

    import tfq8

    source = pathlib.Path(tfq8.__file__).read_text()
    checked = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                for alias in imp.names:
                    checked.add(alias.name)
                    assert tfq8._EXPORTS[alias.name] == imp.module, alias.name
    assert checked == set(tfq8.__all__) == set(tfq8._EXPORTS)
    for name in tfq8.__all__:
        assert getattr(tfq8, name).__name__ == name
    assert callable(tfq8.convert)  # not the submodule tfq8.pipeline's old name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tfq8.nope

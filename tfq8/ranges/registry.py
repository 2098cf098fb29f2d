"""Range methods by name: method name -> pure function of a histogram.

A range method takes a `Histogram` (plus keyword options) and returns the
`(min, max)` range TFLite should quantize that tensor with. Adding a method is
one module with one `@register("name")` line, imported before converting (a
built-in one: its import in `tfq8/ranges/__init__.py`, and then `tfq8 convert
--method` takes it too). `tfq8.convert(..., method="name")`,
`Calibration.ranges`, `plot_ranges(methods=...)` and `CalibrationCallback`
take it; `auto` compares the built-in methods (`auto.CANDIDATES`) unless
`method_options={"candidates": [...]}` names others.

Example:
    >>> from tfq8.ranges import registry
    >>> fn = registry.get_method("minmax")
    >>> {"kl", "minmax", "mse", "percentile"} <= set(registry.available_methods())
    True
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from tfq8.errors import ArgumentTypeError
from tfq8.stats.histogram import Histogram


class RangeMethod(Protocol):
    """A pure function `histogram -> (min, max)`."""

    def __call__(self, hist: Histogram, **options: float) -> tuple[float, float]:
        ...


_METHODS: dict[str, RangeMethod] = {}


def register(name: str) -> Callable[[RangeMethod], RangeMethod]:
    """Decorator registering a range method under `name`.

    The method takes the tensor's `Histogram` and keyword-only options with
    defaults, and returns a finite `(min, max)`; it must not read anything else
    (the model, the data), so that ranges are a pure function of the statistics.

    Raises:
        ValueError: If `name` is empty or has surrounding spaces, or is already
            registered. `tfq8.errors.ArgumentTypeError` (a TypeError and a
            ValueError) if `name` is not a string or the decorated object is
            not callable.

    Example:
        >>> # In a module of yours, imported before converting:
        >>> @register("half_minmax")  # doctest: +SKIP
        ... def half_minmax(hist, *, fraction: float = 0.5) -> tuple[float, float]:
        ...     return min(0.0, hist.min * fraction), max(0.0, hist.max * fraction)
        >>> blob = tfq8.convert(model, x, method="half_minmax",
        ...                     method_options={"fraction": 0.7})  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise (ValueError if isinstance(name, str) else ArgumentTypeError)(
            f"Range method names must be non-empty strings without surrounding spaces. "
            f"Received: name={name!r}"
        )

    def wrap(fn: RangeMethod) -> RangeMethod:
        if not callable(fn):
            raise ArgumentTypeError(
                f"Range method {name!r} must be callable. Received: {type(fn).__name__}"
            )
        if name in _METHODS:
            raise ValueError(
                f"Range method {name!r} is already registered (by "
                f"{getattr(_METHODS[name], '__module__', '?')}). Received: name={name!r}"
            )
        _METHODS[name] = fn
        return fn

    return wrap


def available_methods() -> tuple[str, ...]:
    """Names of the registered per-tensor methods, sorted."""
    return tuple(sorted(_METHODS))


def get_method(name: str) -> RangeMethod:
    """Returns the method registered as `name`.

    Raises:
        ValueError: Naming the valid methods, if `name` is unknown
            (`tfq8.errors.ArgumentTypeError` if it is not a string).
    """
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise (ValueError if isinstance(name, str) else ArgumentTypeError)(
            f"Unknown range method. Expected one of {', '.join(available_methods())}. "
            f"Received: method={name!r}"
        ) from None


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Checks that the method registered as `name` takes every keyword in `options`,
    and takes their values: it runs once on a small histogram.

    Raises:
        ValueError: Naming the method's options if one is not among them, or
            the method's own complaint about a value (`tfq8.errors.ArgumentTypeError`
            for a value that is not a number where the option's default is one).

    Example:
        >>> check_options("percentile", {"percentile": 99.9})
    """
    params = list(inspect.signature(get_method(name)).parameters.values())[1:]  # after the histogram
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params):
        raise ValueError(
            f"Range method {name!r} takes no option {', '.join(map(repr, unknown))}; its "
            f"options: {', '.join(accepted) or 'none'}. Received: {dict(options)}")
    if not options:
        return
    for p in params:  # a number's option takes a number, not its text
        v = options.get(p.name)
        if p.name in options and isinstance(p.default, (int, float)) and not isinstance(
                p.default, bool) and (
                isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
            raise ArgumentTypeError(f"Options of range method {name!r}: {p.name} must be a number. "
                             f"Received: {p.name}={v!r}")
    try:  # the values too: a dry run on a small histogram, before any statistics exist
        get_method(name)(Histogram().update(np.linspace(-1.0, 3.0, 401)), **options)
    except (ValueError, TypeError) as e:
        received = "" if "Received" in str(e) else f" Received: {dict(options)}"
        raise ValueError(f"Options of range method {name!r}: {e}.{received}") from None

"""Checks of public arguments: one message shape for every bad option.

Every message names the argument, says what was expected and shows what was
received, as `keras` does: `batch_size must be a positive integer. Received:
batch_size='8'`.

Example:
    >>> from tfq8 import _args
    >>> _args.integer("batch_size", 32)
    32
    >>> _args.boolean("allow_float", "no")
    Traceback (most recent call last):
    ...
    tfq8.errors.ArgumentTypeError: allow_float must be True or False. Received: allow_float='no'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfq8.errors import ArgumentTypeError


def integer(name: str, value: Any, *, minimum: int = 1, optional: bool = False,
            hint: str = "", maximum: int | None = None) -> int | None:
    """`value` as an int, refused unless it is an integer >= `minimum` (or None if optional).

    Args:
        name: The argument's name, for the message.
        value: What the caller passed.
        minimum: Smallest allowed value.
        optional: Whether None is allowed (and returned).
        maximum: Largest allowed value, if any.
        hint: Appended to the expectation, such as ", or None for all".

    Raises:
        ValueError: Naming `name`, the expectation and `value`; an
            `ArgumentTypeError` (a TypeError and a ValueError) if it is not an integer.
    """
    if value is None and optional:
        return None
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if wrong_type or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        if optional and not hint:
            hint = " or None"
        error = ArgumentTypeError if wrong_type else ValueError
        raise error(f"{name} must be {what}{hint}. Received: {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}. Received: {name}={value!r}")
    return int(value)


def positive_number(name: str, value: Any, *, unit: str = "") -> float:
    """`value` as a float, refused unless it is a finite number > 0.

    Raises:
        ValueError: Naming `name`, the expectation (with `unit`) and `value`
            (`ArgumentTypeError` if it is not a number).
    """
    wrong_type = isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating))
    if wrong_type or not 0 < value < float("inf"):
        error = ArgumentTypeError if wrong_type else ValueError
        raise error(f"{name} must be a positive number{' of ' + unit if unit else ''}. "
                    f"Received: {name}={value!r}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """`value` as a bool: True/False (numpy's too) or the integers 1/0.

    A string such as 'no' or 'False' is refused, not read as true.

    Raises:
        ValueError: Naming `name` and `value` (`ArgumentTypeError` if it is
            neither a bool nor an integer).
    """
    if not (isinstance(value, (bool, np.bool_))
            or (isinstance(value, (int, np.integer)) and value in (0, 1))):
        error = ValueError if isinstance(value, (int, np.integer)) else ArgumentTypeError
        raise error(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)

"""Exceptions tfq8 raises beyond the built-in ones, and how their messages are shortened."""

import re


class UnsupportedOpError(ValueError):
    """An op cannot be converted, or cannot be quantized to integers.

    Raised by `tfq8.convert` when the model uses an op TFLite's builtin ops do
    not cover, or when an op would stay in float and `allow_float` is False.
    The message names the op(s).

    Attributes:
        problem: What went wrong (the message without `remedy`).
        remedy: What the caller can pass to go on (such as `allow_float=True`), or "".

    Example:
        >>> try:
        ...     blob = tfq8.convert(model, x)
        ... except tfq8.UnsupportedOpError as e:
        ...     print(e.problem)
        ...     blob = tfq8.convert(model, x, allow_float=True)  # those ops stay float
    """

    def __init__(self, problem: str, *, remedy: str = ""):
        super().__init__(f"{problem} {remedy}" if remedy else problem)
        self.problem = problem
        self.remedy = remedy

    def with_remedy(self, remedy: str) -> "UnsupportedOpError":
        """The same problem with the remedy said in the caller's terms (its own argument).

        Example:
            >>> e = UnsupportedOpError("Op 3 (ELU) stays float.", remedy="Pass allow_float=True.")
            >>> str(e.with_remedy("Pass --allow-float."))
            'Op 3 (ELU) stays float. Pass --allow-float.'
        """
        return UnsupportedOpError(self.problem, remedy=remedy)


class NonFiniteWeightsError(ValueError):
    """A Keras model's weights hold NaN, or trainable ones Inf: training diverged.

    Raised by `tfq8.calibrate` (so by `tfq8.convert` with data): the activations
    of such weights are NaN, with no range to calibrate.

    Attributes:
        weights: The weights' paths or names (`tfq8.models.nonfinite_weights`).

    Example:
        >>> try:
        ...     calib = tfq8.calibrate(model, x)
        ... except tfq8.errors.NonFiniteWeightsError as e:
        ...     print(e.weights)
        ['sequential/dense/kernel']
    """

    def __init__(self, message: str, *, weights: list[str]):
        super().__init__(message)
        self.weights = list(weights)


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type, such as `num_samples="100"` or `method=3`.

    A `TypeError`, as Python's convention asks for a value of the wrong type,
    and a `ValueError` too, so that code catching `ValueError` for tfq8's bad
    arguments catches every one (numpy's `AxisError` is both in the same way).

    Example:
        >>> try:
        ...     tfq8.convert(model, x, num_samples="100")
        ... except TypeError as e:
        ...     print(e)
        num_samples must be a positive integer or None. Received: num_samples='100'
    """


def first_line(error: BaseException | str) -> str:
    """The first meaningful line of an error's message, for one-line reports.

    Native errors from TFLite start with a source location
    (`tensorflow/lite/kernels/gather.cc:61 ...`), which is dropped.

    Example:
        >>> first_line(RuntimeError("kernels/gather.cc:61 index out of bounds\\nNode 3"))
        'index out of bounds'
    """
    text = str(error)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^\S+\.cc:\d+ ", "", line)
    return line or (type(error).__name__ if isinstance(error, BaseException) else "unknown error")

"""Exceptions tfq8 raises beyond the built-in ones."""


class UnsupportedOpError(ValueError):
    """An op cannot be converted, or cannot be quantized to integers.

    Raised by `tfq8.convert` when the model uses an op TFLite's builtin ops do
    not cover, or when an op would stay in float and `allow_float` is False.
    The message names the op(s).
    """

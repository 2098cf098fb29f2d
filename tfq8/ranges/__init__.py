"""Range methods: pure functions from a histogram to a `(min, max)` range."""

from tfq8.ranges import kl, minmax, mse, percentile  # noqa: F401  (registration)
from tfq8.ranges.registry import available_methods, check_options, get_method, register

__all__ = ["available_methods", "check_options", "get_method", "register"]

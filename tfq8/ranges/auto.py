"""`auto`: placeholder, replaced below."""
from __future__ import annotations


def choose(calib, *, overrides, **quant):
    r = calib.ranges("mse")
    r.update(overrides)
    return r

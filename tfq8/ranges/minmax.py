"""`minmax`: the global extremes, which is what TFLite's converter uses.

With the same model and data `tfq8.convert(..., method="minmax")` gives the
converter's own activation scales and zero points: tfq8's collector takes the
extremes from TFLite's own calibrator (see `tfq8.stats.collect`). The file is
finished as the converter finishes it (`_tflite.finish_as_converter`), so on
most models it is the converter's `.tflite` byte for byte. Exceptions: where
tfq8 makes an op integer that the converter leaves float (`tfq8.rewrite`),
and a fused LSTM, whose two unreferenced buffers tfq8 zeroes (TFLite's
quantizer fills them with bytes that depend on what it quantized before in
the process; see `_tflite.clear_unreferenced_buffers`). Where the converter
fails because its quantizer refuses the ranges of tensors that must share one
int8 grid (a masked SimpleRNN), tfq8 gives those tensors the union of their
ranges (`tfq8.shared_grid`), and there is no converter model to match.

Example:
    >>> minmax(Histogram().update(np.array([-1.0, 2.0])))
    (-1.0, 2.0)
"""

from __future__ import annotations

from tfq8.ranges.registry import register
from tfq8.stats.histogram import Histogram


@register("minmax")
def minmax(hist: Histogram) -> tuple[float, float]:
    """Returns the smallest and largest value recorded."""
    if hist.count == 0:
        raise ValueError("The histogram is empty: no values were recorded.")
    return float(hist.min), float(hist.max)

"""Statistics: streaming histograms (histogram.py) filled by a LiteRT pass (collect.py)."""

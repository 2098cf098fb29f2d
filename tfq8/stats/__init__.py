"""Statistics: streaming histograms (histogram.py) filled by a LiteRT pass (sweep.py),
run in a worker process beside TFLite's calibrator (worker.py) or in this one (collect.py)."""

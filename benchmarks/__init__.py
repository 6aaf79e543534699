"""``zotheory bench``: speed and memory of the kernels, measured against floors and anchors.

Each module measures one thing and returns a tidy ``pandas.DataFrame`` (one row per measured
quantity); :mod:`zotheory.benchmarks.timing` holds the one timing rule they share (median of
``reps`` repetitions after warm-up, every comparison timed in the same process run).
"""

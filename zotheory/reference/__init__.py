"""Literal, one-run, float64 transcriptions of the pseudocode, used by tests as ground truth."""

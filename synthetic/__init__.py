"""Synthetic testbed (importable as ``zotheory.synthetic``): problems with exactly known constants,
the batched runner and the rate experiments."""

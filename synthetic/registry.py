"""Problem families by name, so a run's configuration is plain data (a dict)."""

from __future__ import annotations

from typing import Any, Mapping

from .fw_problems import Logistic, Quadratic, SinePL, SquaredHinge
from .problems import (
    CauchyRegression,
    EntrywiseCosineMatrix,
    KinkedQuadratic,
    MatrixSensing,
    Problem,
    SeparableCosine,
)

FAMILIES: dict[str, type[Problem]] = {
    "separable_cosine": SeparableCosine,
    "entrywise_cosine_matrix": EntrywiseCosineMatrix,
    "kinked_quadratic": KinkedQuadratic,
    "cauchy_regression": CauchyRegression,
    "matrix_sensing": MatrixSensing,
    # issue 14 (FW / projected GD with JAGUAR, arXiv 2409.10442): synthetic/fw_problems.py
    "quadratic": Quadratic,
    "logistic": Logistic,
    "squared_hinge": SquaredHinge,
    "sine_pl": SinePL,
}


def make_problem(spec: Mapping[str, Any]) -> Problem:
    """Build a problem from ``{"family": name, **constructor arguments}``."""
    if "family" not in spec:
        raise ValueError(f"problem spec needs a 'family' key (one of {sorted(FAMILIES)}), got {dict(spec)}")
    family = spec["family"]
    if family not in FAMILIES:
        raise ValueError(f"unknown problem family {family!r}; valid: {sorted(FAMILIES)}")
    kwargs = {k: v for k, v in spec.items() if k != "family"}
    try:
        return FAMILIES[family](**kwargs)
    except TypeError as e:  # unknown / missing keyword: name it
        raise ValueError(f"bad arguments for problem family {family!r}: {e}") from None

"""zotheory: zero-order optimizers (JAGUAR SignSGD / JAGUAR Muon and baselines), exactly as their pseudocode.

The core never imports transformers; the LLM side lives in ``zotheory.llm``.

``import zotheory`` itself imports nothing heavy (no torch): the names below are loaded on first
use, so ``zotheory --help`` and ``zotheory --version`` start fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CoordinateEstimate", "DirectionEstimate", "split_coordinates", "__version__"]

_FROM_ESTIMATES = ("CoordinateEstimate", "DirectionEstimate", "split_coordinates")
_UNKNOWN_VERSION = "0+unknown"


def package_version() -> str:
    """The installed distribution's version (``importlib.metadata``); ``0+unknown`` when the
    package is not installed (e.g. imported from a bare source tree) or its metadata is unreadable."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return _UNKNOWN_VERSION
    try:
        return version("zotheory") or _UNKNOWN_VERSION
    except (PackageNotFoundError, OSError, ValueError):
        return _UNKNOWN_VERSION


def __getattr__(name: str) -> Any:  # PEP 562: lazy attributes
    if name in _FROM_ESTIMATES:
        from . import estimates

        value = getattr(estimates, name)
    elif name == "__version__":
        value = package_version()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

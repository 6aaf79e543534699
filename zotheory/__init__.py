"""zotheory: zero-order optimizers (JAGUAR SignSGD / JAGUAR Muon and baselines), exactly as their pseudocode.

The core never imports transformers; the LLM side lives in ``zotheory.llm``.
"""

from .estimates import CoordinateEstimate, DirectionEstimate, split_coordinates

__version__ = "0.1.0"

__all__ = ["CoordinateEstimate", "DirectionEstimate", "split_coordinates", "__version__"]

"""spin_capture: attention-access traces from real models (docs/trace-capture.md)."""

from . import hooks, rules, tiny_llama
from .capture import Capture, CaptureOptions
from .rules import AlgorithmSpec, CaptureError

__all__ = ["Capture", "CaptureOptions", "AlgorithmSpec", "CaptureError", "hooks", "rules",
           "tiny_llama"]

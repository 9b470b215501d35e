"""ReID heads: the official GLTR training head and the strong-baseline BNNeck."""

from .bnneck import BNNeck
from .gltr_head import GLTRHead

__all__ = ["BNNeck", "GLTRHead"]

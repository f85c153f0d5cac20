"""Model files, one per architecture; each reads top to bottom."""
from .mlp import MLP

__all__ = ["MLP"]

"""PaddleDetection 2.x -> 1.x names (see detx.weights.ppdet2)."""
from detx.weights.ppdet2 import Rename  # noqa: F401

RENAMES: dict = {}

"""Architectures: time-conditioned networks for score models and flows."""

from ._concat_squash import ConcatSquashLinear as ConcatSquashLinear
from ._concat_squash import ConcatSquashMLP as ConcatSquashMLP

"""Evaluation: bits per dimension with dequantisation at any number of levels.

The evaluation protocol (KL against exact densities, importance-sampled likelihoods,
sample metrics) is added here by the evaluation issue.
"""

from ._bits_per_dim import BitsPerDimResult as BitsPerDimResult
from ._bits_per_dim import bin_centres as bin_centres
from ._bits_per_dim import bits_per_dim as bits_per_dim
from ._bits_per_dim import uniform_dequantiser as uniform_dequantiser

"""Distributions whose noisy marginals are exact under every scoreflow SDE."""

from ._conditional import conditional as conditional
from ._gaussian import Gaussian as Gaussian
from ._mixture import GaussianMixture as GaussianMixture
from ._mixture import NoisyMixture as NoisyMixture

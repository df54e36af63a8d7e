"""Distributions whose noisy marginals are exact under every scoreflow SDE."""

from ._classes import ClassMixture as ClassMixture
from ._classes import NoisyClassMixture as NoisyClassMixture
from ._classes import NoisyMixtureClassifier as NoisyMixtureClassifier
from ._conditional import conditional as conditional
from ._gaussian import Gaussian as Gaussian
from ._mixture import GaussianMixture as GaussianMixture
from ._mixture import NoisyMixture as NoisyMixture

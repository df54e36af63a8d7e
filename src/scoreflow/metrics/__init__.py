"""Evaluation: likelihoods, sample metrics and the shipped digits feature network.

Every function is jittable and works in float64; pairwise metrics run on tiles, so no
`n x m` matrix is held whole; a figure that is an estimate comes with its standard error.
The digits protocol that puts them in one table is `scoreflow.evaluation`.
"""

from ._bits_per_dim import BitsPerDimResult as BitsPerDimResult
from ._bits_per_dim import bin_centres as bin_centres
from ._bits_per_dim import bits_per_dim as bits_per_dim
from ._bits_per_dim import uniform_dequantiser as uniform_dequantiser
from ._digits_classifier import DigitsClassifier as DigitsClassifier
from ._digits_classifier import digits_accuracy as digits_accuracy
from ._digits_classifier import digits_features as digits_features
from ._digits_classifier import digits_logits as digits_logits
from ._digits_classifier import fd_digits as fd_digits
from ._digits_classifier import is_digits as is_digits
from ._digits_classifier import kid_digits as kid_digits
from ._digits_classifier import load_digits_classifier as load_digits_classifier
from ._estimate import Estimate as Estimate
from ._frechet import frechet_distance as frechet_distance
from ._frechet import gaussian_frechet_distance as gaussian_frechet_distance
from ._kernels import AbstractKernel as AbstractKernel
from ._kernels import GaussianKernel as GaussianKernel
from ._kernels import InverseMultiquadricKernel as InverseMultiquadricKernel
from ._kernels import PolynomialKernel as PolynomialKernel
from ._kid import kid as kid
from ._kid import kid_subsets as kid_subsets
from ._likelihood import ImportanceEstimate as ImportanceEstimate
from ._likelihood import importance_log_likelihood as importance_log_likelihood
from ._likelihood import kl_divergence as kl_divergence
from ._manifold import DensityCoverage as DensityCoverage
from ._manifold import PrecisionRecall as PrecisionRecall
from ._manifold import density_coverage as density_coverage
from ._manifold import knn_radii as knn_radii
from ._manifold import precision_recall as precision_recall
from ._mmd import MMDTest as MMDTest
from ._mmd import mmd2 as mmd2
from ._mmd import mmd_test as mmd_test
from ._modes import ModeCoverage as ModeCoverage
from ._modes import mode_coverage as mode_coverage
from ._samples import drop_nonfinite as drop_nonfinite

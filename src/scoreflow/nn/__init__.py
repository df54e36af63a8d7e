"""Architectures: time-conditioned networks for score models, flows and classifiers; energies."""

from ._classifier import TimeConvClassifier as TimeConvClassifier
from ._concat_squash import ConcatSquashLinear as ConcatSquashLinear
from ._concat_squash import ConcatSquashMLP as ConcatSquashMLP
from ._conditioning import LogNoiseLevel as LogNoiseLevel
from ._conditioning import ScaledScore as ScaledScore
from ._edm import EDMPrecond as EDMPrecond
from ._embeddings import GaussianFourierEmbedding as GaussianFourierEmbedding
from ._embeddings import SinusoidalEmbedding as SinusoidalEmbedding
from ._energy import EnergyMLP as EnergyMLP
from ._heads import AbstractPixelHead as AbstractPixelHead
from ._heads import Bernoulli as Bernoulli
from ._heads import Categorical as Categorical
from ._heads import DiscretisedLogisticMixture as DiscretisedLogisticMixture
from ._heads import Gaussian as Gaussian
from ._labels import LabelEmbedding as LabelEmbedding
from ._latent import GaussianEncoder as GaussianEncoder
from ._latent import MonotoneMLP as MonotoneMLP
from ._latent import PixelDecoder as PixelDecoder
from ._latent import ResidualMLP as ResidualMLP
from ._latent import soft_clamp as soft_clamp
from ._mlp import TimeMLP as TimeMLP
from ._unet import UNet as UNet

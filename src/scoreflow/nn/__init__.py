"""Architectures: networks for score models, flows, classifiers, energies, PixelCNN, GANs."""

from ._classifier import TimeConvClassifier as TimeConvClassifier
from ._concat_squash import ConcatSquashLinear as ConcatSquashLinear
from ._concat_squash import ConcatSquashMLP as ConcatSquashMLP
from ._conditioning import LogNoiseLevel as LogNoiseLevel
from ._conditioning import ScaledScore as ScaledScore
from ._edm import EDMPrecond as EDMPrecond
from ._embeddings import GaussianFourierEmbedding as GaussianFourierEmbedding
from ._embeddings import SinusoidalEmbedding as SinusoidalEmbedding
from ._energy import EnergyMLP as EnergyMLP
from ._gan import DCGANDiscriminator as DCGANDiscriminator
from ._gan import DCGANGenerator as DCGANGenerator
from ._gan import MLPDiscriminator as MLPDiscriminator
from ._gan import MLPGenerator as MLPGenerator
from ._heads import AbstractPixelHead as AbstractPixelHead
from ._heads import Bernoulli as Bernoulli
from ._heads import Categorical as Categorical
from ._heads import DiscretisedLogisticMixture as DiscretisedLogisticMixture
from ._heads import Gaussian as Gaussian
from ._labels import LabelEmbedding as LabelEmbedding
from ._mlp import TimeMLP as TimeMLP
from ._pixelcnn import GatedPixelCNNNetwork as GatedPixelCNNNetwork
from ._pixelcnn import MaskedConv2d as MaskedConv2d
from ._pixelcnn import PixelCNNNetwork as PixelCNNNetwork
from ._unet import UNet as UNet

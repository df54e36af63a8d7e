"""Pure losses: score matching, noisy classifiers, contrastive divergence, NCE, GANs, ELBO."""

from ._adversarial import ADVERSARIAL_LOSSES as ADVERSARIAL_LOSSES
from ._adversarial import discriminator_loss as discriminator_loss
from ._adversarial import generator_loss as generator_loss
from ._adversarial import gradient_penalty as gradient_penalty
from ._adversarial import r1_penalty as r1_penalty
from ._classifier import noisy_classifier_loss as noisy_classifier_loss
from ._contrastive import contrastive_divergence as contrastive_divergence
from ._contrastive import noise_contrastive_estimation as noise_contrastive_estimation
from ._dsm import denoising_score_matching as denoising_score_matching
from ._elbo import gaussian_kl as gaussian_kl
from ._elbo import iwae_bound as iwae_bound
from ._options import AbstractTimeSampling as AbstractTimeSampling
from ._options import AbstractWeighting as AbstractWeighting
from ._options import DiscreteTime as DiscreteTime
from ._options import EDMWeighting as EDMWeighting
from ._options import LikelihoodWeighting as LikelihoodWeighting
from ._options import LogNormalTime as LogNormalTime
from ._options import LogSNRUniformTime as LogSNRUniformTime
from ._options import LowDiscrepancyTime as LowDiscrepancyTime
from ._options import SigmaSquaredWeighting as SigmaSquaredWeighting
from ._options import UniformTime as UniformTime
from ._options import UnitWeighting as UnitWeighting
from ._replay import ReplayBuffer as ReplayBuffer
from ._ssm import implicit_score_matching as implicit_score_matching
from ._ssm import sliced_score_matching as sliced_score_matching

"""The model zoo on one contract (`AbstractGenerativeModel`, see `_base.py`)."""

from ._base import METHODS as METHODS
from ._base import AbstractExactLikelihood as AbstractExactLikelihood
from ._base import AbstractGenerativeModel as AbstractGenerativeModel
from ._base import AbstractLikelihoodBound as AbstractLikelihoodBound
from ._base import AbstractStatefulModel as AbstractStatefulModel
from ._base import AbstractUnnormalisedLikelihood as AbstractUnnormalisedLikelihood
from ._conditional import AbstractConditionalModel as AbstractConditionalModel
from ._conditional import ConditionalDDPM as ConditionalDDPM
from ._conditional import ConditionalScoreSDE as ConditionalScoreSDE
from ._conditional import NoisyClassifier as NoisyClassifier
from ._ddpm import DDPM as DDPM
from ._ebm import EBM as EBM
from ._ebm import AbstractEBMTraining as AbstractEBMTraining
from ._ebm import ContrastiveDivergence as ContrastiveDivergence
from ._ebm import EnergyScoreMatching as EnergyScoreMatching
from ._ebm import NoiseContrastive as NoiseContrastive
from ._ebm import gaussian_noise as gaussian_noise
from ._ffjord import FFJORD as FFJORD
from ._gmm import GMM as GMM
from ._gmm import EMResult as EMResult
from ._gmm import fit_gmm as fit_gmm
from ._ncsn import NCSN as NCSN
from ._ncsn import geometric_sigmas as geometric_sigmas
from ._ncsn import ladder_sde as ladder_sde
from ._realnvp import RealNVP as RealNVP
from ._score_sde import ScoreSDE as ScoreSDE

"""The model zoo on one contract (`AbstractGenerativeModel`, see `_base.py`)."""

from ._base import METHODS as METHODS
from ._base import AbstractExactLikelihood as AbstractExactLikelihood
from ._base import AbstractGenerativeModel as AbstractGenerativeModel
from ._base import AbstractLikelihoodBound as AbstractLikelihoodBound
from ._ddpm import DDPM as DDPM
from ._ffjord import FFJORD as FFJORD
from ._ncsn import NCSN as NCSN
from ._ncsn import geometric_sigmas as geometric_sigmas
from ._ncsn import ladder_sde as ladder_sde
from ._realnvp import RealNVP as RealNVP
from ._score_sde import ScoreSDE as ScoreSDE

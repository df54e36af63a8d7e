"""The model zoo: thin modules over the shared losses and solvers."""

from ._ddpm import DDPM as DDPM
from ._ddpm import DiscreteVPSDE as DiscreteVPSDE
from ._ddpm import cosine_betas as cosine_betas
from ._ddpm import linear_betas as linear_betas
from ._ncsn import NCSN as NCSN
from ._ncsn import geometric_sigmas as geometric_sigmas
from ._ncsn import ladder_sde as ladder_sde
from ._score_sde import ScoreSDE as ScoreSDE

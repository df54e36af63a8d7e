"""The model zoo: generative models with `loss`, `sample` and `log_prob`."""

from ._ddpm import DDPM as DDPM
from ._ddpm import DiscreteVPSDE as DiscreteVPSDE
from ._ddpm import cosine_betas as cosine_betas
from ._ddpm import linear_betas as linear_betas
from ._ffjord import FFJORD as FFJORD
from ._mle import fit_maximum_likelihood as fit_maximum_likelihood
from ._ncsn import NCSN as NCSN
from ._ncsn import geometric_sigmas as geometric_sigmas
from ._ncsn import ladder_sde as ladder_sde
from ._realnvp import RealNVP as RealNVP
from ._score_sde import ScoreSDE as ScoreSDE

"""The model zoo: generative models with `loss`, `sample` and `log_prob`."""

from ._ffjord import FFJORD as FFJORD
from ._mle import fit_maximum_likelihood as fit_maximum_likelihood
from ._realnvp import RealNVP as RealNVP

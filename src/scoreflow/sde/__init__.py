"""SDEs of score-based generative modelling and their diffrax terms."""

from ._base import AbstractSDE as AbstractSDE
from ._langevin import langevin_terms as langevin_terms
from ._parameterisation import Prediction as Prediction
from ._parameterisation import convert as convert
from ._subvp import SubVPSDE as SubVPSDE
from ._terms import ScalarNoiseTerm as ScalarNoiseTerm
from ._terms import forward_sde_terms as forward_sde_terms
from ._terms import probability_flow_term as probability_flow_term
from ._terms import reverse_sde_terms as reverse_sde_terms
from ._ve import EDMSDE as EDMSDE
from ._ve import VESDE as VESDE
from ._vp import VPSDE as VPSDE

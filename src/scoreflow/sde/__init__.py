"""SDEs of score-based generative modelling, their diffrax terms, and predictions."""

from ._base import AbstractSDE as AbstractSDE
from ._conditional import AbstractConditionalPrediction as AbstractConditionalPrediction
from ._conditional import AbstractNoisyClassifier as AbstractNoisyClassifier
from ._conditional import Conditioned as Conditioned
from ._discrete_vp import DiscreteVPSDE as DiscreteVPSDE
from ._discrete_vp import cosine_betas as cosine_betas
from ._discrete_vp import linear_betas as linear_betas
from ._langevin import langevin_terms as langevin_terms
from ._learned import LearnedVPSDE as LearnedVPSDE
from ._parameterisation import AbstractPrediction as AbstractPrediction
from ._parameterisation import AbstractWrappedPrediction as AbstractWrappedPrediction
from ._parameterisation import Prediction as Prediction
from ._parameterisation import convert as convert
from ._subvp import SubVPSDE as SubVPSDE
from ._terms import AbstractModelTerm as AbstractModelTerm
from ._terms import ProbabilityFlowTerm as ProbabilityFlowTerm
from ._terms import ReverseDriftTerm as ReverseDriftTerm
from ._terms import ScalarNoiseTerm as ScalarNoiseTerm
from ._terms import forward_sde_terms as forward_sde_terms
from ._terms import probability_flow_term as probability_flow_term
from ._terms import reverse_sde_terms as reverse_sde_terms
from ._ve import EDMSDE as EDMSDE
from ._ve import VESDE as VESDE
from ._vp import VPSDE as VPSDE

"""The solver core: samplers, time grids and Brownian paths."""

from ._bits_per_dim import BitsPerDimResult as BitsPerDimResult
from ._bits_per_dim import bits_per_dim as bits_per_dim
from ._bits_per_dim import uniform_dequantiser as uniform_dequantiser
from ._brownian import GridBrownianPath as GridBrownianPath
from ._grids import AbstractGrid as AbstractGrid
from ._grids import CustomGrid as CustomGrid
from ._grids import KarrasGrid as KarrasGrid
from ._grids import LogSNRGrid as LogSNRGrid
from ._grids import UniformGrid as UniformGrid
from ._likelihood import AugmentedDynamics as AugmentedDynamics
from ._likelihood import AugmentedState as AugmentedState
from ._likelihood import FlowSolution as FlowSolution
from ._likelihood import LikelihoodResult as LikelihoodResult
from ._likelihood import log_likelihood as log_likelihood
from ._likelihood import solve_augmented as solve_augmented
from ._sample import SampleResult as SampleResult
from ._sample import evals_per_step as evals_per_step
from ._sample import sample as sample
from ._sample import solve_probability_flow as solve_probability_flow
from ._sample import solve_reverse_sde as solve_reverse_sde

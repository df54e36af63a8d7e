"""The solver core: samplers, time grids and Brownian paths."""

from ._brownian import GridBrownianPath as GridBrownianPath
from ._grids import AbstractGrid as AbstractGrid
from ._grids import CustomGrid as CustomGrid
from ._grids import KarrasGrid as KarrasGrid
from ._grids import LogSNRGrid as LogSNRGrid
from ._grids import UniformGrid as UniformGrid
from ._sample import SampleResult as SampleResult
from ._sample import evals_per_step as evals_per_step
from ._sample import sample as sample
from ._sample import solve_probability_flow as solve_probability_flow
from ._sample import solve_reverse_sde as solve_reverse_sde
from ._solvers import DDIM as DDIM
from ._solvers import AbstractDiffusionSolver as AbstractDiffusionSolver
from ._solvers import DDPMAncestral as DDPMAncestral
from ._solvers import DenoiserTerm as DenoiserTerm
from ._solvers import DPMSolverPP as DPMSolverPP
from ._solvers import EDMHeun as EDMHeun
from ._solvers import ExponentialAdamsPC as ExponentialAdamsPC
from ._solvers import exponential_weights as exponential_weights
from ._solvers import is_stochastic as is_stochastic

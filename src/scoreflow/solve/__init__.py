"""The solver core: samplers, likelihoods, Langevin chains, time grids, Brownian paths.

A flat public namespace over private folders by concept (as diffrax does): `_solvers/`
(every solver, MALA and predictor–corrector included, with their base classes),
`_likelihood/` (augmented dynamics, trace estimators, `log_likelihood`), `_langevin/`
(the Langevin family), `_grids/` (fixed grids and their calibration) and `_shared/`
(batching, save points, evaluation counts, diffrax's reversed time, input checks).
"""

from ._grids._calibrate import CalibratedGrid as CalibratedGrid
from ._grids._calibrate import calibrate_grid as calibrate_grid
from ._grids._grids import AbstractGrid as AbstractGrid
from ._grids._grids import CustomGrid as CustomGrid
from ._grids._grids import KarrasGrid as KarrasGrid
from ._grids._grids import LogSNRGrid as LogSNRGrid
from ._grids._grids import UniformGrid as UniformGrid
from ._grids._shipped import OptimisedGrid as OptimisedGrid
from ._langevin._ais import AbstractAISKernel as AbstractAISKernel
from ._langevin._ais import AISResult as AISResult
from ._langevin._ais import HMCKernel as HMCKernel
from ._langevin._ais import MALAKernel as MALAKernel
from ._langevin._ais import ais as ais
from ._langevin._ais import sigmoid_schedule as sigmoid_schedule
from ._langevin._annealed import annealed_langevin as annealed_langevin
from ._langevin._annealed import ladder_times as ladder_times
from ._langevin._chains import mala as mala
from ._langevin._chains import ula as ula
from ._langevin._chains import underdamped_langevin as underdamped_langevin
from ._langevin._common import LangevinResult as LangevinResult
from ._langevin._step import langevin_step as langevin_step
from ._likelihood._augmented import AugmentedDynamics as AugmentedDynamics
from ._likelihood._augmented import AugmentedState as AugmentedState
from ._likelihood._augmented import FlowSolution as FlowSolution
from ._likelihood._augmented import augmented_error_norm as augmented_error_norm
from ._likelihood._augmented import solve_augmented as solve_augmented
from ._likelihood._log_likelihood import LikelihoodResult as LikelihoodResult
from ._likelihood._log_likelihood import default_time_variable as default_time_variable
from ._likelihood._log_likelihood import log_likelihood as log_likelihood
from ._likelihood._trace import AbstractTrace as AbstractTrace
from ._likelihood._trace import Exact as Exact
from ._likelihood._trace import Hutchinson as Hutchinson
from ._sample import SampleResult as SampleResult
from ._sample import sample as sample
from ._sample import solve_probability_flow as solve_probability_flow
from ._sample import solve_reverse_sde as solve_reverse_sde
from ._sharded import sharded_log_likelihood as sharded_log_likelihood
from ._sharded import sharded_sample as sharded_sample
from ._shared._brownian import GridBrownianPath as GridBrownianPath
from ._shared._nfe import AbstractCountedSolver as AbstractCountedSolver
from ._shared._nfe import evals_per_step as evals_per_step
from ._solvers._adams_pc import ExponentialAdamsPC as ExponentialAdamsPC
from ._solvers._base import AbstractDiffusionSolver as AbstractDiffusionSolver
from ._solvers._base import AbstractStochasticDiffusionSolver as AbstractStochasticDiffusionSolver
from ._solvers._ddim import DDIM as DDIM
from ._solvers._ddim import StochasticDDIM as StochasticDDIM
from ._solvers._dpm_solver_pp import DPMSolverPP as DPMSolverPP
from ._solvers._edm_heun import EDMHeun as EDMHeun
from ._solvers._edm_heun import StochasticEDMHeun as StochasticEDMHeun
from ._solvers._exponential import exponential_weights as exponential_weights
from ._solvers._mala import MALA as MALA
from ._solvers._predictor_corrector import LangevinCorrector as LangevinCorrector
from ._solvers._predictor_corrector import PredictorCorrector as PredictorCorrector

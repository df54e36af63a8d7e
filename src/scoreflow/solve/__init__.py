"""The solver core: samplers, time grids and Brownian paths."""

from ._annealed import annealed_langevin as annealed_langevin
from ._annealed import ladder_times as ladder_times
from ._brownian import GridBrownianPath as GridBrownianPath
from ._grids import AbstractGrid as AbstractGrid
from ._grids import CustomGrid as CustomGrid
from ._grids import KarrasGrid as KarrasGrid
from ._grids import LogSNRGrid as LogSNRGrid
from ._grids import UniformGrid as UniformGrid
from ._langevin import MALA as MALA
from ._langevin import LangevinResult as LangevinResult
from ._langevin import mala as mala
from ._langevin import ula as ula
from ._langevin import underdamped_langevin as underdamped_langevin
from ._predictor_corrector import LangevinCorrector as LangevinCorrector
from ._predictor_corrector import PredictorCorrector as PredictorCorrector
from ._predictor_corrector import solve_predictor_corrector as solve_predictor_corrector
from ._sample import SampleResult as SampleResult
from ._sample import evals_per_step as evals_per_step
from ._sample import sample as sample
from ._sample import solve_probability_flow as solve_probability_flow
from ._sample import solve_reverse_sde as solve_reverse_sde

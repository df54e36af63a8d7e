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

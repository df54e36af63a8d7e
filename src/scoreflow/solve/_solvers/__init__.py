"""Diffusion solvers as `diffrax.AbstractSolver`s (one file per solver)."""

from ._adams_pc import ExponentialAdamsPC as ExponentialAdamsPC
from ._base import AbstractDiffusionSolver as AbstractDiffusionSolver
from ._base import DenoiserTerm as DenoiserTerm
from ._base import exponential_weights as exponential_weights
from ._base import is_stochastic as is_stochastic
from ._ddim import DDIM as DDIM
from ._ddim import DDPMAncestral as DDPMAncestral
from ._dpm_solver_pp import DPMSolverPP as DPMSolverPP
from ._edm_heun import EDMHeun as EDMHeun

"""Pure loss functions: denoising, sliced and implicit score matching, DDPM and NCSN."""

from ._dsm import ddpm_simple_loss as ddpm_simple_loss
from ._dsm import denoising_score_matching as denoising_score_matching
from ._dsm import ncsn_loss as ncsn_loss
from ._ssm import implicit_score_matching as implicit_score_matching
from ._ssm import sliced_score_matching as sliced_score_matching

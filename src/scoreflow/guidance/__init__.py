"""Score transforms: classifier and classifier-free guidance, inpainting.

Each takes a prediction (`scoreflow.sde.AbstractPrediction`) and returns one, of the same
SDE and parameterisation, so it works with every sampler and likelihood of scoreflow.
"""

from ._classifier import ClassifierGuidance as ClassifierGuidance
from ._free import ClassifierFreeGuidance as ClassifierFreeGuidance
from ._inpaint import PosteriorSampling as PosteriorSampling
from ._inpaint import Replacement as Replacement
from ._smc import SMCResult as SMCResult
from ._smc import twisted_smc as twisted_smc

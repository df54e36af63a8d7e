"""scoreflow: deep generative models as continuous-time dynamics solved by diffrax."""

import importlib.metadata

from . import analytic as analytic
from . import bijections as bijections
from . import data as data
from . import guidance as guidance
from . import losses as losses
from . import metrics as metrics
from . import models as models
from . import nn as nn
from . import sde as sde
from . import solve as solve
from . import train as train
from ._serialise import load as load
from ._serialise import save as save
from .analytic import Gaussian as Gaussian
from .analytic import GaussianMixture as GaussianMixture
from .models import DDPM as DDPM
from .models import NCSN as NCSN
from .models import ScoreSDE as ScoreSDE
from .sde import EDMSDE as EDMSDE
from .sde import VESDE as VESDE
from .sde import VPSDE as VPSDE
from .sde import AbstractPrediction as AbstractPrediction
from .sde import Prediction as Prediction
from .sde import SubVPSDE as SubVPSDE
from .solve import sample as sample
from .train import fit as fit

__version__ = importlib.metadata.version("scoreflow")

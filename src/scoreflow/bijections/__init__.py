"""Bijections and normalizing flows: coupling flows and continuous normalizing flows."""

from ._affine import Affine as Affine
from ._base import AbstractBijection as AbstractBijection
from ._batch import AbstractBatchBijection as AbstractBatchBijection
from ._batch import batch_transform_and_log_det as batch_transform_and_log_det
from ._chain import Chain as Chain
from ._cnf import CNF as CNF
from ._coupling import AffineCoupling as AffineCoupling
from ._coupling import AffineCouplingStack as AffineCouplingStack
from ._flow import Flow as Flow
from ._flow import StandardNormal as StandardNormal
from ._invert import Invert as Invert
from ._permute import Permute as Permute

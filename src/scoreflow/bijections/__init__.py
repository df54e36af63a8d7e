"""Bijections and normalizing flows: coupling flows and continuous normalizing flows."""

from ._affine import Affine as Affine
from ._base import AbstractBijection as AbstractBijection
from ._chain import Chain as Chain
from ._cnf import CNF as CNF
from ._coupling import AffineCoupling as AffineCoupling
from ._coupling import RealNVP as RealNVP
from ._flow import Flow as Flow
from ._flow import StandardNormal as StandardNormal
from ._invert import Invert as Invert
from ._permute import Permute as Permute

import equinox as eqx

from ._base import AbstractBijection


class Invert(AbstractBijection):
    """The inverse bijection: swaps `transform` and `inverse` of `bijection`.

    Args:
        bijection: the bijection to invert.
    """

    bijection: AbstractBijection
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, bijection: AbstractBijection):
        self.bijection = bijection
        self.shape = bijection.shape

    def _transform_and_log_det(self, x, key):
        return self.bijection.inverse_and_log_det(x, key=key)

    def _inverse_and_log_det(self, y, key):
        return self.bijection.transform_and_log_det(y, key=key)

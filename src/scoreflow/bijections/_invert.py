from ._base import AbstractBijection


class Invert(AbstractBijection):
    """The inverse bijection: swaps `transform` and `inverse` of `bijection`.

    Args:
        bijection: the bijection to invert.
    """

    bijection: AbstractBijection

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bijection.shape

    def _transform_and_log_det(self, x, key):
        return self.bijection.inverse_and_log_det(x, key=key)

    def _inverse_and_log_det(self, y, key):
        return self.bijection.transform_and_log_det(y, key=key)

"""The models' likelihood: the probability-flow ODE of `scoreflow.solve.log_likelihood`."""

from .. import solve


def log_likelihood(sde, model, x, *, parameterisation, key=None, **kwargs):
    return solve.log_likelihood(
        sde, model, x, parameterisation=parameterisation, key=key, **kwargs
    ).log_prob

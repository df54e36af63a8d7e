"""Route to `scoreflow.solve.log_likelihood` (issue 3), with a fallback until it lands."""

from .. import solve


def log_likelihood(sde, model, x, *, parameterisation, key=None, **kwargs):
    if hasattr(solve, "log_likelihood"):
        return solve.log_likelihood(
            sde, model, x, parameterisation=parameterisation, key=key, **kwargs
        ).log_prob
    from ._likelihood_fallback import pf_log_prob

    return pf_log_prob(sde, model, x, parameterisation=parameterisation, **kwargs)

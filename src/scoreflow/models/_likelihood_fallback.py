"""A small exact-trace probability-flow likelihood, used until `solve.log_likelihood` lands."""

import diffrax as dfx
import jax
import jax.numpy as jnp

from ..sde import Prediction


def pf_log_prob(sde, model, x, *, parameterisation, rtol=1e-5, atol=1e-5, **_):
    score = Prediction(sde, model, parameterisation).score
    shape = x.shape[1:]

    def field(t, y, args):
        xs, _ = y

        def f(z):
            z = z.reshape(shape)
            out = sde.drift(t, z) - 0.5 * sde.diffusion(t) ** 2 * score(t, z)
            return out.reshape(-1)

        def one(z):
            flat = z.reshape(-1)
            return f(flat).reshape(shape), jnp.trace(jax.jacfwd(f)(flat))

        dx, div = jax.vmap(one)(xs)
        return dx, div

    dtype = x.dtype
    y0 = (x, jnp.zeros((x.shape[0],), dtype))
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Tsit5(),
        jnp.asarray(sde.t_min, dtype),
        jnp.asarray(sde.T, dtype),
        jnp.asarray((sde.T - sde.t_min) / 64, dtype),
        y0,
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=4096,
    )
    z, delta = sol.ys[0][-1], sol.ys[1][-1]
    return jax.vmap(sde.prior_log_prob)(z) + delta

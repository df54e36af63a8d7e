"""A small exact-trace probability-flow likelihood, used until `solve.log_likelihood` lands."""

import diffrax as dfx
import jax
import jax.numpy as jnp

from ..sde import Prediction


def pf_log_prob(
    sde, model, x, *, parameterisation, rtol=1e-5, atol=1e-5, trace="exact", key=None, **_
):
    score = Prediction(sde, model, parameterisation).score
    shape = x.shape[1:]
    if trace == "hutchinson":
        # One Rademacher probe per example, held fixed for the whole solve.
        probes = jax.random.rademacher(key, x.shape, x.dtype)
    else:
        probes = jnp.zeros_like(x)

    def field(t, y, args):
        xs, _ = y

        def f(z):
            z = z.reshape(shape)
            out = sde.drift(t, z) - 0.5 * sde.diffusion(t) ** 2 * score(t, z)
            return out.reshape(-1)

        def one(z, v):
            flat = z.reshape(-1)
            if trace == "hutchinson":
                out, jv = jax.jvp(f, (flat,), (v.reshape(-1),))
                return out.reshape(shape), jnp.sum(v.reshape(-1) * jv)
            return f(flat).reshape(shape), jnp.trace(jax.jacfwd(f)(flat))

        dx, div = jax.vmap(one)(xs, probes)
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

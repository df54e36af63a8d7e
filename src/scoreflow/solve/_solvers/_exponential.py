"""Exact exponential-quadrature weights of the exponential Adams family."""

import jax.numpy as jnp
import numpy as np

# 16-point Gauss–Legendre rule on [0, 1]: exact for polynomials of degree 31 and
# accurate to ~1e-13 for e^{-h(1-s)} times a cubic up to h ~ 10, with only positive
# terms (no cancellation as h -> 0, so it is also safe in float32).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_GL_S = (_GL_X + 1) / 2
_GL_W = _GL_W / 2


def exponential_weights(nodes, lam_t, lam_s, alpha_s):
    r"""Exact exponential-quadrature weights on arbitrary (variable-step) nodes.

    With $P$ the polynomial interpolating $\hat x_0$ at the log-SNRs `nodes`
    ($\lambda_j$), returns $w_j$ such that
    $\sigma_s \int_{\lambda_t}^{\lambda_s} e^{\lambda} P(\lambda)\,d\lambda =
    \sum_j w_j \hat x_0(\lambda_j)$, i.e.
    $w_j = \alpha_s h \int_0^1 e^{-h(1-u)} \ell_j(\lambda_t + hu)\,du$ with
    $h = \lambda_s - \lambda_t$ and $\ell_j$ the Lagrange basis. This is the
    exponential Adams family (Hochbruck & Ostermann 2010, Acta Numerica, sec. 2.5);
    with nodes at $\lambda_t$ (and previous points) it is DPM-Solver++'s multistep
    predictor, with the new point added it is an Adams–Moulton-type corrector like
    UniC (Zhao et al. 2023, UniPC, arXiv:2302.04867).

    Args:
        nodes: `(k,)` distinct log-SNRs.
        lam_t: start log-SNR.
        lam_s: end log-SNR.
        alpha_s: $\alpha_s$.

    Returns:
        `(k,)` weights.
    """
    return exponential_weights_by_order(nodes, lam_t, lam_s, alpha_s)[-1]


def exponential_weights_by_order(nodes, lam_t, lam_s, alpha_s):
    r"""`exponential_weights` of every leading subset of the nodes, in one computation.

    Row $j - 1$ holds the weights of `nodes[:j]` (order $j$), zero-padded to $k$; a
    multistep solver picks its row by how much history it has. Vectorised so that a
    step costs a handful of fused operations instead of one per Lagrange factor: on
    cheap denoisers the per-step overhead is what separates a solver's run time from
    NFE x one denoiser call.

    Returns:
        `(k, k)` weights.
    """
    dtype = nodes.dtype
    k = nodes.shape[0]
    s = jnp.asarray(_GL_S, dtype)
    gw = jnp.asarray(_GL_W, dtype)
    h = lam_s - lam_t
    u = lam_t + h * s
    e = jnp.exp(-h * (1 - s)) * gw
    idx = np.arange(k)
    off_diag = idx[:, None] != idx[None, :]
    # (order J, basis j, factor m): the Lagrange factor m enters basis j of order J.
    used = off_diag[None] & (idx[None, None, :] < idx[:, None, None] + 1)
    gap = jnp.where(off_diag, nodes[:, None] - nodes[None, :], 1)
    factor = (u[None, None, :] - nodes[None, :, None]) / gap[:, :, None]
    ell = jnp.prod(jnp.where(used[..., None], factor[None], 1), axis=2)
    w = alpha_s * h * jnp.sum(e[None, None, :] * ell, axis=-1)
    return jnp.where(idx[None, :] <= idx[:, None], w, 0)


def combine(weights, values):
    """`sum_j weights[j] * values[j]` over a stacked history.

    Unrolled over the (static, short) history: XLA on CPU runs a broadcast-multiply
    and reduction over the leading axis several times slower than these few fused
    multiply-adds (measured: 3-4x the cost of a 16-d mixture denoiser call per step).
    """
    out = weights[0] * values[0]
    for j in range(1, values.shape[0]):
        out = out + weights[j] * values[j]
    return out

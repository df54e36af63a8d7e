r"""Annealed importance sampling (AIS) of a normalising constant.

Neal 2001, "Annealed importance sampling", Statistics and Computing 11, 125–139
(arXiv:physics/9803008). Chains start from a normalised, tractable base $p_0$ and are
moved through the geometric path
$\log\pi_\beta = (1-\beta)\log p_0 + \beta\log\tilde p$, $0 = \beta_0 < \dots < \beta_K = 1$,
to the unnormalised target $\tilde p$ (normaliser $Z$), each by a Markov kernel that leaves
$\pi_{\beta_k}$ invariant; the importance weights of the whole paths estimate $Z$
without bias. The temperatures are a `jax.lax.scan`; the chains are one batch.
"""

import abc
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ... import _checks
from ..._custom_types import Key
from ._chains import mala


@runtime_checkable
class _Base(Protocol):
    # A normalised distribution: `log_prob` on `(*batch, *event)`, `sample(num, *, key)`.
    def log_prob(self, x: Array, /) -> Array: ...

    def sample(self, num: int, *, key: Key) -> Array: ...


class AbstractAISKernel(eqx.Module):
    r"""A Markov transition of AIS: leaves the current tempered density invariant.

    Subclass it for a kernel of your own (a Metropolis or Gibbs kernel on discrete
    states, say) and pass an instance as `ais(..., kernel=...)`. `__call__` moves a
    batch of chains one transition of a kernel that leaves
    $\pi_\beta \propto p_0^{1-\beta}\tilde p^\beta$ invariant; it needs no detailed
    balance, only invariance, and it must not look at other chains or at earlier
    temperatures (an adaptive kernel biases $\hat Z$).
    """

    @abc.abstractmethod
    def __call__(
        self, log_prob: Callable[[Array], Array], x: Array, *, beta: Array, key: Key
    ) -> tuple[Array, Array]:
        r"""One transition of a batch of chains.

        Args:
            log_prob: $\log\pi_\beta$ (unnormalised) on one chain's state, `x -> scalar`.
            x: `(chains, *event)` current states.
            beta: the inverse temperature $\beta$ of `log_prob` (scalar), for kernels
                whose parameters depend on it.
            key: PRNG key.

        Returns:
            `(x, acceptance)`: the new `(chains, *event)` states and a `(chains,)`
            acceptance rate (or any per-chain figure of movement) of the transition.
        """


class MALAKernel(AbstractAISKernel):
    r"""`num_steps` steps of `scoreflow.solve.mala` on each tempered density.

    The step size is fixed, `step_size`, or, with `base_step_size`, interpolated
    harmonically along the path, $h_\beta = ((1-\beta)/h_0 + \beta/h_1)^{-1}$. For a
    Gaussian base and target of precisions $\lambda_0 I$, $\lambda_1 I$ the tempered
    density has precision $(1-\beta)\lambda_0 + \beta\lambda_1$, and a step
    $h_\beta \propto 1/\text{precision}$ holds MALA's acceptance rate constant along the
    path: $h_0$ and $h_1$ are then the steps tuned for the base and for the target. (On a
    4-d Gaussian target under a base 100 times wider this kept every temperature's
    acceptance above 0.85 where geometric interpolation, $h_0^{1-\beta}h_1^\beta$,
    dropped to 0 and left $E[\log w]$ 40 nats short instead of 2.) The step depends on
    $\beta$ alone, so the estimate stays unbiased; a step adapted to the acceptance rates
    seen would not keep it so.

    Args:
        step_size: MALA step $h_1 > 0$ on the target ($\beta = 1$).
        num_steps: MALA steps per temperature.
        base_step_size: MALA step $h_0 > 0$ on the base ($\beta = 0$); default
            `step_size` (a fixed step).

    Raises:
        ValueError: on a non-positive step size or `num_steps`.
    """

    step_size: float | Float[Array, ""]
    num_steps: int = eqx.field(static=True, default=1)
    base_step_size: float | Float[Array, ""] | None = None

    def __check_init__(self):
        _checks.positive(self.step_size, "step_size")
        _checks.positive_int(self.num_steps, "num_steps")
        if self.base_step_size is not None:
            _checks.positive(self.base_step_size, "base_step_size")

    def __call__(
        self, log_prob: Callable[[Array], Array], x: Array, *, beta: Array, key: Key
    ) -> tuple[Array, Array]:
        h = jnp.asarray(self.step_size, x.dtype)
        beta = jnp.asarray(beta).astype(x.dtype)
        if self.base_step_size is not None:
            h0 = jnp.asarray(self.base_step_size, x.dtype)
            h = 1 / ((1 - beta) / h0 + beta / h)
        # Non-finite states are AIS's to report, from the weights and final samples.
        res = mala(log_prob, x, step_size=h, num_steps=self.num_steps, throw=False, key=key)
        assert res.acceptance_rate is not None  # MALA reports it
        return res.samples, res.acceptance_rate


class HMCKernel(AbstractAISKernel):
    r"""Hamiltonian Monte Carlo transitions from blackjax (`blackjax.hmc`).

    Each transition is `num_steps` HMC steps, each of `num_integration_steps` leapfrog
    steps of size `step_size`, with an identity mass matrix (Neal 2011, "MCMC using
    Hamiltonian dynamics"). Needs blackjax, which scoreflow's tests install and its core
    does not: it is imported when the kernel first runs.

    Args:
        step_size: leapfrog step $\epsilon > 0$.
        num_integration_steps: leapfrog steps per HMC proposal.
        num_steps: HMC steps per temperature.

    Raises:
        ValueError: on a non-positive step size or step counts.
    """

    step_size: float | Float[Array, ""]
    num_integration_steps: int = eqx.field(static=True, default=10)
    num_steps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _checks.positive(self.step_size, "step_size")
        _checks.positive_int(self.num_integration_steps, "num_integration_steps")
        _checks.positive_int(self.num_steps, "num_steps")

    def __call__(
        self, log_prob: Callable[[Array], Array], x: Array, *, beta: Array, key: Key
    ) -> tuple[Array, Array]:
        del beta
        import blackjax  # optional: only this kernel needs it

        step = blackjax.hmc.build_kernel()
        inverse_mass = jnp.ones(int(np.prod(x.shape[1:])), x.dtype)
        eps = jnp.asarray(self.step_size, x.dtype)

        def one(state, k):
            new, info = step(k, state, log_prob, eps, inverse_mass, self.num_integration_steps)
            return new, info.acceptance_rate

        def chain(x1, k):
            state = blackjax.hmc.init(x1, log_prob)
            state, rates = jax.lax.scan(one, state, jr.split(k, self.num_steps))
            return state.position, jnp.mean(rates)

        return jax.vmap(chain)(x, jr.split(key, x.shape[0]))


class AISResult(eqx.Module):
    r"""What `ais` returns.

    Attributes:
        log_z: $\log\hat Z = \log\frac1n\sum_i w_i$, the log-mean-exp of the final
            weights. $\hat Z$ is unbiased, $E[\hat Z] = Z$, so by Jensen
            $E[\log\hat Z] \le \log Z$: the estimate is a stochastic lower bound on
            $\log Z$, its bias about $-\mathrm{stderr}^2/2$.
        stderr: the delta-method standard error of `log_z`,
            $\hat\sigma_w / (\sqrt n\,\bar w)$ ($\hat\sigma_w$ the sample standard
            deviation of the weights): the relative standard error of $\hat Z$.
            Reliable only when `ess` is not tiny.
        log_weights: `(chains,)` $\log w_i$.
        ess: the effective sample size $(\sum_i w_i)^2/\sum_i w_i^2 \in [1, n]$.
        samples: `(chains, *event)` final states: weighted by $w_i$ they are a sample of
            the target; unweighted, a sample of it as far as the chains have mixed.
        acceptance_rate: `(K,)` the kernel's mean acceptance rate at each temperature
            $\beta_1, \dots, \beta_K$.
        betas: `(K + 1,)` the schedule $0 = \beta_0 < \dots < \beta_K = 1$.
        result: `diffrax.RESULTS.successful`, or `diffrax.RESULTS.nonfinite` where a
            log-weight is NaN or $+\infty$ or a final state is not finite (with
            `throw=False`; otherwise that raises).
    """

    log_z: Float[Array, ""]
    stderr: Float[Array, ""]
    log_weights: Float[Array, " chains"]
    ess: Float[Array, ""]
    samples: Array
    acceptance_rate: Float[Array, " K"]
    betas: Float[Array, " K+1"]
    result: dfx.RESULTS


def sigmoid_schedule(num: int) -> np.ndarray:
    r"""The sigmoidal annealing schedule: $K$ = `num` steps from 0 to 1.

    $\tilde\beta_k = \sigma(\delta(2k/K - 1))$, $k = 0, \dots, K$, rescaled to
    $\beta_k = (\tilde\beta_k - \tilde\beta_0)/(\tilde\beta_K - \tilde\beta_0)$, with
    $\delta = 4$ (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal likelihood
    using bidirectional Monte Carlo", arXiv:1511.02543). Its first and last steps are
    about 7 times shorter than a linear schedule's, its middle ones about 2 times
    longer. With perfect transitions the deficit $\log Z - E[\log w]$ is about
    $\tfrac12\sum_k (\beta_k - \beta_{k-1})^2 \mathrm{Var}_{\pi_{\beta_k}}[\log\tilde p
    - \log p_0]$, and that variance peaks near $\beta = 0$ when the base is broader than
    the target (the usual case: a Gaussian base under an energy-based model), which a
    linear schedule crosses in a few large steps. Measured at $K = 100$ on Gaussian,
    ring-mixture and RBM targets: against a linear schedule the sigmoid one lowered the
    deficit by 15–50 % for bases 36–200 times wider in variance than the target (from 76
    to 40 nats in the worst case), and raised it by 15–50 % where base and target were of
    one scale (a few tenths of a nat). Geometric spacing, best for the widest bases, was
    the worst of the three where the scales matched. The sigmoid is the default for its
    small worst case, not for being optimal anywhere. `ais` uses it for an integer
    `betas`.

    Args:
        num: $K \ge 1$.

    Returns:
        `(K + 1,)` float64 NumPy array, exactly 0 first and 1 last.
    """
    _checks.positive_int(num, "num")
    if num == 1:
        return np.array([0.0, 1.0])
    s = 1 / (1 + np.exp(-4.0 * (2 * np.arange(num + 1) / num - 1)))
    b = (s - s[0]) / (s[-1] - s[0])
    b[0], b[-1] = 0.0, 1.0
    return b


def _schedule(betas) -> np.ndarray | Array:
    if isinstance(betas, (int, np.integer)) and not isinstance(betas, bool):
        if betas < 1:
            raise ValueError(
                f"`betas` must be at least one annealing step (intermediate distribution) "
                f"or an increasing array from 0 to 1, got {betas}."
            )
        return sigmoid_schedule(int(betas))
    b = _checks.concrete(betas)
    if b is None:  # traced: the caller vouches for it
        return jnp.asarray(betas)
    if b.ndim == 1 and b.shape[0] < 2:
        raise ValueError(
            f"`betas` must hold at least one annealing step, 0 = beta_0 < ... < beta_K = 1 "
            f"with K >= 1, got {b}: zero intermediate distributions."
        )
    if b.ndim != 1 or b.dtype.kind not in "fiu":
        raise ValueError(
            f"`betas` must be an int or a 1-d real array from 0 to 1, got shape {b.shape}."
        )
    _checks.check(bool(b[0] == 0 and b[-1] == 1), "betas", f"must run from 0 to 1, got {b}.")
    _checks.check(bool(np.all(np.diff(b) > 0)), "betas", f"must be strictly increasing, got {b}.")
    return b


def _check_shapes(log_prob, base, num_chains, key):
    try:
        x = eqx.filter_eval_shape(base.sample, num_chains, key=key)
    except Exception as e:
        raise ValueError(f"`base.sample({num_chains}, key=key)` failed: {e}") from e
    if not isinstance(x, jax.ShapeDtypeStruct) or x.ndim < 1 or x.shape[0] != num_chains:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(
            f"`base.sample(num, key=key)` must return an array (num, *event), got {shape} "
            f"for num={num_chains}."
        )
    event = x.shape[1:]
    try:
        lb = jax.eval_shape(base.log_prob, x)
    except Exception as e:
        raise ValueError(f"`base.log_prob` fails on its own samples of shape {x.shape}: {e}") from e
    if getattr(lb, "shape", None) != (num_chains,):
        raise ValueError(
            f"`base.log_prob` must map (chains, *event) = {x.shape} to ({num_chains},), got "
            f"{getattr(lb, 'shape', type(lb).__name__)}."
        )
    one = jax.ShapeDtypeStruct(event, x.dtype)
    try:
        lp = jax.eval_shape(log_prob, one)
    except Exception as e:
        raise ValueError(
            f"`log_prob` fails on one sample of `base` (event shape {event}): does the base "
            f"have the target's event shape? ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(lp, jax.ShapeDtypeStruct) or lp.shape != ():
        raise ValueError(
            "`log_prob` must return a scalar for one example (it is vmapped over chains), "
            f"got shape {getattr(lp, 'shape', type(lp).__name__)} for an input {event}."
        )
    if not jnp.issubdtype(lp.dtype, jnp.floating) or not jnp.issubdtype(lb.dtype, jnp.floating):
        raise ValueError(
            f"`log_prob` and `base.log_prob` must return floats, got {lp.dtype}, {lb.dtype}."
        )
    return np.promote_types(lp.dtype, lb.dtype)


class _Tempered(eqx.Module):
    # log pi_beta = (1 - beta) log p_0 + beta log p~ on one chain's state.
    log_prob: Callable
    base: _Base
    beta: Array

    def __call__(self, x):
        dtype = self.beta.dtype
        lb = self.base.log_prob(x).astype(dtype)
        # At beta = 1 the base drops out, even where it is zero (0 * -inf is NaN).
        lb = jnp.where(self.beta == 1, 0, (1 - self.beta) * lb)
        return lb + self.beta * self.log_prob(x).astype(dtype)


def _log_z(lw):
    # log-mean-exp, and the relative standard error of mean(w) from weights scaled by
    # their largest: every scaled weight is in [0, 1], so nothing overflows or cancels.
    n = lw.shape[0]
    top = jnp.max(lw)
    top = jnp.where(jnp.isfinite(top), top, 0)
    w = jnp.exp(lw - top)
    mean = jnp.mean(w)
    log_z = top + jnp.log(mean)
    stderr = jnp.std(w, ddof=1) / (jnp.sqrt(jnp.asarray(n, lw.dtype)) * mean)
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    return log_z, stderr, ess


@eqx.filter_jit
def _ais(log_prob, base, kernel, betas, num_chains, dtype, throw, key):
    k0, k_path = jr.split(key)
    x = base.sample(num_chains, key=k0)
    lw = jnp.zeros((num_chains,), dtype)
    batched = jax.vmap(log_prob)

    def body(carry, inp):
        x, lw = carry
        b_prev, b, k = inp
        # Neal 2001, eq. 8 on the geometric path: the weight's increment at the state
        # drawn for the previous temperature, before the transition at the new one.
        lw = lw + (b - b_prev) * (batched(x).astype(dtype) - base.log_prob(x).astype(dtype))
        x, acc = kernel(_Tempered(log_prob, base, b), x, beta=b, key=k)
        return (x, lw), jnp.mean(acc).astype(dtype)

    num = betas.shape[0] - 1
    (x, lw), acc = jax.lax.scan(body, (x, lw), (betas[:-1], betas[1:], jr.split(k_path, num)))
    leaves = [v for v in jax.tree_util.tree_leaves(x) if jnp.issubdtype(v.dtype, jnp.inexact)]
    bad = jnp.any(jnp.isnan(lw) | (lw == jnp.inf))
    for v in leaves:
        bad = bad | ~jnp.all(jnp.isfinite(v))
    # `nonfinite` is inherited from optimistix's RESULTS, as pyright types it.
    result = dfx.RESULTS.where(bad, dfx.RESULTS.nonfinite, dfx.RESULTS.successful)  # pyright: ignore[reportArgumentType]
    if throw:
        lw = eqx.error_if(
            lw,
            bad,
            "AIS: a log-weight is NaN or +inf, or a final state is not finite (a kernel "
            "step too large for the target, or a target that is NaN somewhere); pass "
            "`throw=False` to get `result = RESULTS.nonfinite` instead.",
        )
    log_z, stderr, ess = _log_z(lw)
    return AISResult(
        log_z=log_z,
        stderr=stderr,
        log_weights=lw,
        ess=ess,
        samples=x,
        acceptance_rate=acc,
        betas=betas,
        result=result,
    )


def ais(
    log_prob: Callable[[Array], Array],
    base: _Base,
    *,
    num_chains: int,
    betas: int | Sequence[int | float] | ArrayLike,
    kernel: AbstractAISKernel = MALAKernel(0.1),
    throw: bool = True,
    key: Key,
) -> AISResult:
    r"""Annealed importance sampling of $\log Z$, $Z = \int\tilde p$ (Neal 2001).

    Neal 2001, "Annealed importance sampling", Statistics and Computing 11, 125–139
    (arXiv:physics/9803008), on the geometric path
    $\log\pi_\beta(x) = (1-\beta)\log p_0(x) + \beta\log\tilde p(x)$ from the normalised
    `base` $p_0$ to the unnormalised target $\tilde p$ = `exp(log_prob)`. Each of $n$ =
    `num_chains` chains starts at $x_0 \sim p_0$; for $k = 1, \dots, K$ its log-weight
    gains $(\beta_k - \beta_{k-1})(\log\tilde p(x_{k-1}) - \log p_0(x_{k-1}))$ (Neal's
    eq. 8) and then $x_k$ is drawn by `kernel`, which leaves $\pi_{\beta_k}$ invariant.
    Then $\hat Z = \frac1n\sum_i w_i$ and $E[\hat Z] = Z$ exactly, however well the
    chains mix (poor mixing costs variance, not bias in $Z$), so
    $E[\log\hat Z] \le \log Z$. The spread of $\log w$, and with it the standard
    error and that downward bias of $\log\hat Z$, shrink as $K$ grows.

    The chains are one vectorised batch and the temperatures a `jax.lax.scan`, so the
    program compiles once per number of temperatures (a new schedule of the same length
    does not recompile). A target that is an `eqx.Module` or a bound method of one
    (`ebm.unnormalised_log_prob`, say) is traced, so new parameters do not recompile
    either; a plain function or `lambda` is static, compiled anew for each new object.

    Example, $\log Z$ of an energy-based model on 2-d data, `neg_energy(x)` $= -E(x)$::

        base = scoreflow.analytic.Gaussian(jnp.zeros(2), jnp.full(2, 4.0))
        kernel = scoreflow.solve.MALAKernel(0.05, base_step_size=1.0)
        res = scoreflow.solve.ais(
            neg_energy, base, num_chains=1000, betas=1000, kernel=kernel, key=key
        )
        res.log_z, res.stderr

    Args:
        log_prob: $\log\tilde p$ up to its normaliser, on one example, `x -> scalar`
            (vmapped over chains).
        base: a normalised, tractable $p_0$ with the target's event shape: an object
            with `log_prob(x)` on `(*batch, *event)` and `sample(num, *, key)` returning
            `(num, *event)`, e.g. `scoreflow.analytic.Gaussian` or `GaussianMixture`.
            A base close to the target (a Gaussian fitted to data, a trained flow)
            needs fewer temperatures.
        num_chains: $n \ge 2$ independent chains.
        betas: an int $K \ge 1$, the number of annealing steps (intermediate
            distributions $\pi_{\beta_1}, \dots, \pi_{\beta_K} = \tilde p/Z$, counted as in
            Salakhutdinov & Murray 2008), spaced by `sigmoid_schedule`; or an explicit
            strictly increasing `(K + 1,)` array $0 = \beta_0 < \dots < \beta_K = 1$.
        kernel: the transition at each temperature, an `AbstractAISKernel`:
            `MALAKernel` (default, a step of 0.1 suited to a target of unit scale: set
            it for yours), `HMCKernel`, or your own.
        throw: raise if a log-weight is NaN or $+\infty$ or a final state is not
            finite; with `False` the result says `diffrax.RESULTS.nonfinite` instead.
        key: PRNG key.

    Returns:
        An `AISResult`: `log_z` and its `stderr`, the `log_weights`, their `ess`, the
        final `samples`, the kernel's `acceptance_rate` per temperature.

    Raises:
        ValueError: on `num_chains` < 2; `betas` with no annealing step (0, or an
            array of fewer than two entries), not from 0 to 1 or not increasing; a
            `log_prob` that does not return a scalar or fails on the base's samples
            (an event-shape mismatch); a `base` whose `sample` / `log_prob` do not
            have the shapes above.
    """
    _checks.positive_int(num_chains, "num_chains", least=2)
    _checks.key(key)
    if not isinstance(kernel, AbstractAISKernel):
        raise ValueError(
            f"`kernel` must be an `AbstractAISKernel` (MALAKernel, HMCKernel or your own), "
            f"got {type(kernel).__name__}."
        )
    if not isinstance(base, _Base):
        raise ValueError(
            f"`base` must have `log_prob(x)` and `sample(num, *, key)`, got {type(base).__name__}."
        )
    schedule = _schedule(betas)
    dtype = _checks.float_dtype(_check_shapes(log_prob, base, num_chains, key), "log_prob")
    return _ais(log_prob, base, kernel, jnp.asarray(schedule, dtype), num_chains, dtype, throw, key)

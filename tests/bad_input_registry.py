# Every row passes an argument of the wrong type or value on purpose.
# pyright: reportArgumentType=false
"""The registry of bad inputs: one row per refused input of the public API.

Each row is an id (`namespace.entry_point.what`), a zero-argument callable that makes
the bad call, the exception a user gets, and a fragment of its message (a regular
expression, matched with `re.search`) that names the argument. `tests/test_bad_input.py`
runs every row and checks that the table covers every namespace; a new public function
adds its rows here (the bijection registry's pattern, for errors).

Rows are cheap: tiny shapes, and errors raised before anything compiles. The few rows
whose error can only come from a solve (a score that returns NaN on a fixed grid) share
the small objects below and a two-step grid.
"""

import dataclasses
import functools
import os
import pathlib
import tempfile
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import bijections as bij
from scoreflow import guidance, losses, metrics, models, nn, solve


@dataclasses.dataclass(frozen=True)
class BadInput:
    """One bad call and what it must raise.

    Attributes:
        id: `namespace.entry_point.what`; the namespace is the public module it tests.
        call: performs the bad call.
        error: the exception type raised.
        match: a regular expression its message must contain (it names the argument).
    """

    id: str
    call: Callable[[], object]
    error: type[BaseException]
    match: str

    @property
    def namespace(self) -> str:
        return self.id.split(".")[0]


# Shared small objects, built once on first use.


@functools.cache
def vp():
    return sf.VPSDE()


@functools.cache
def mixture():
    return sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones((1, 2)))


@functools.cache
def exact():
    return mixture().noised(vp())


def key():
    return jr.key(0)


def x2():
    """A batch of two 2-d points."""
    return jnp.zeros((2, 2))


class NaNScore(sf.sde.AbstractPrediction):
    """A score model that returns NaN everywhere."""

    sde: sf.sde.AbstractSDE
    parameterisation: str = eqx.field(static=True, default="score")

    def __call__(self, t, x):
        return x * jnp.nan


@functools.cache
def tiny_mlp():
    return nn.TimeMLP((2,), width=4, depth=1, embed_dim=4, key=key())


@functools.cache
def score_sde():
    return models.ScoreSDE(vp(), tiny_mlp(), parameterisation="eps", event_shape=(2,))


def _pid(rtol=1e-3, atol=1e-3):
    return dfx.PIDController(rtol=rtol, atol=atol)


def _load_written(values):
    # `load_array` on a file holding `values`, removed afterwards.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "data.npy")
        np.save(path, values)
        return sf.data.load_array(path)


_V = ValueError
_FIXED = solve.UniformGrid(2)

ROWS: list[BadInput] = [
    # ---- sde ----
    BadInput(
        "sde.vpsde.beta_min_array",
        lambda: sf.VPSDE(beta_min=jnp.array([0.1, 0.2])),
        _V,
        "`beta_min` must be a scalar",
    ),
    BadInput(
        "sde.vpsde.beta_max_array",
        lambda: sf.VPSDE(beta_max=np.array([20.0, 10.0])),
        _V,
        "`beta_max` must be a scalar",
    ),
    BadInput("sde.vpsde.beta_negative", lambda: sf.VPSDE(beta_min=-0.1), _V, "`beta_min`"),
    BadInput(
        "sde.vpsde.beta_order",
        lambda: sf.VPSDE(beta_min=5.0, beta_max=1.0),
        _V,
        "`beta_min` must be smaller than `beta_max`",
    ),
    BadInput(
        "sde.vpsde.beta_nan",
        lambda: sf.VPSDE(beta_max=float("nan")),
        _V,
        "`beta_max` must be finite",
    ),
    BadInput("sde.vpsde.t_min_zero", lambda: sf.VPSDE(t_min=0.0), _V, "`t_min`"),
    BadInput("sde.vpsde.t_min_above_T", lambda: sf.VPSDE(t_min=2.0), _V, "`t_min`"),
    BadInput("sde.vpsde.T_string", lambda: sf.VPSDE(T="1"), _V, "`T` must be a real number"),
    BadInput(
        "sde.subvpsde.beta_array",
        lambda: sf.SubVPSDE(beta_min=jnp.ones(2)),
        _V,
        "`beta_min` must be a scalar",
    ),
    BadInput(
        "sde.vesde.T_array", lambda: sf.VESDE(T=jnp.array([1.0, 2.0])), _V, "`T` must be a scalar"
    ),
    BadInput(
        "sde.vesde.sigma_min_array",
        lambda: sf.VESDE(sigma_min=jnp.array([0.01, 0.1])),
        _V,
        "`sigma_min` must be a scalar",
    ),
    BadInput(
        "sde.vesde.sigma_order",
        lambda: sf.VESDE(sigma_min=10.0, sigma_max=1.0),
        _V,
        "`sigma_min` must be smaller",
    ),
    BadInput("sde.vesde.sigma_min_zero", lambda: sf.VESDE(sigma_min=0.0), _V, "`sigma_min`"),
    BadInput(
        "sde.edmsde.t_min_array",
        lambda: sf.EDMSDE(t_min=jnp.array([0.002, 0.01])),
        _V,
        "`t_min` must be a scalar",
    ),
    BadInput(
        "sde.discrete_vpsde.betas_2d",
        lambda: sf.sde.DiscreteVPSDE(jnp.ones((2, 2)) / 4),
        _V,
        "`betas`",
    ),
    BadInput(
        "sde.discrete_vpsde.betas_one",
        lambda: sf.sde.DiscreteVPSDE(jnp.array([0.1, 1.0])),
        _V,
        "`betas` must lie in",
    ),
    BadInput(
        "sde.discrete_vpsde.t_min_array",
        lambda: sf.sde.DiscreteVPSDE(jnp.full(4, 0.1), t_min=jnp.array([0.1, 0.2])),
        _V,
        "`t_min` must be a scalar",
    ),
    BadInput("sde.linear_betas.num_steps", lambda: sf.sde.linear_betas(1), _V, "`num_steps`"),
    BadInput(
        "sde.prior_sample.float16",
        lambda: vp().prior_sample((2, 2), dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of .*half precision",
    ),
    BadInput(
        "sde.prior_sample.int_key",
        lambda: vp().prior_sample((2, 2), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "sde.prediction.parameterisation",
        lambda: sf.Prediction(vp(), lambda t, x: x, "noise"),
        _V,
        "`parameterisation`",
    ),
    BadInput(
        "sde.convert.target",
        lambda: sf.sde.convert(
            vp(), 0.5, jnp.zeros(2), jnp.zeros(2), source="eps", target="velocity"
        ),
        _V,
        "`target`",
    ),
    # ---- analytic ----
    BadInput(
        "analytic.mixture.nan_means",
        lambda: sf.GaussianMixture(jnp.ones(1), jnp.full((1, 2), jnp.nan), jnp.ones((1, 2))),
        _V,
        "`means` must be finite",
    ),
    BadInput(
        "analytic.mixture.inf_variances",
        lambda: sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.full((1, 2), jnp.inf)),
        _V,
        "`covariances` must be finite",
    ),
    BadInput(
        "analytic.mixture.negative_variances",
        lambda: sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), -jnp.ones((1, 2))),
        _V,
        "`covariances` must be positive",
    ),
    BadInput(
        "analytic.mixture.weights_sum",
        lambda: sf.GaussianMixture(jnp.ones(2), jnp.zeros((2, 2)), jnp.ones((2, 2))),
        _V,
        "`weights` must sum to 1",
    ),
    BadInput(
        "analytic.mixture.weights_nan",
        lambda: sf.GaussianMixture(jnp.array([jnp.nan]), jnp.zeros((1, 2)), jnp.ones((1, 2))),
        _V,
        "`weights` must be finite",
    ),
    BadInput(
        "analytic.mixture.means_shape",
        lambda: sf.GaussianMixture(jnp.ones(1), jnp.zeros((2, 2)), jnp.ones((2, 2))),
        _V,
        "`means` must have shape",
    ),
    BadInput(
        "analytic.mixture.covariances_shape",
        lambda: sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones((1, 3))),
        _V,
        "`covariances` must have shape",
    ),
    BadInput(
        "analytic.mixture.integer_means",
        lambda: sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2), int), jnp.ones((1, 2))),
        _V,
        "`means` must be floating-point",
    ),
    BadInput(
        "analytic.mixture.asymmetric",
        lambda: sf.GaussianMixture(
            jnp.ones(1), jnp.zeros((1, 2)), jnp.array([[[1.0, 0.5], [0.0, 1.0]]])
        ),
        _V,
        "`covariances` must be positive",
    ),
    BadInput(
        "analytic.mixture.sample_num_negative",
        lambda: mixture().sample(-1, key=key()),
        _V,
        "`num` must be an int >= 0",
    ),
    BadInput(
        "analytic.mixture.sample_num_float",
        lambda: mixture().sample(2.5, key=key()),
        _V,
        "`num` must be an int >= 0",
    ),
    BadInput(
        "analytic.mixture.sample_int_key",
        lambda: mixture().sample(2, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "analytic.mixture.sample_key_batch",
        lambda: mixture().sample(2, key=jr.split(key(), 3)),
        _V,
        "`key` must be one PRNG key",
    ),
    BadInput(
        "analytic.mixture.log_prob_shape",
        lambda: mixture().log_prob(jnp.zeros(3)),
        _V,
        "`x` must have shape",
    ),
    BadInput(
        "analytic.noisy_mixture.sample_num",
        lambda: exact().sample(0.5, -3, key=key()),
        _V,
        "`num` must be an int >= 0",
    ),
    BadInput(
        "analytic.noisy_mixture.mixture_type",
        lambda: sf.analytic.NoisyMixture(None, vp()),
        _V,
        "`mixture` must be a",
    ),
    BadInput(
        "analytic.noisy_mixture.sde_type",
        lambda: sf.analytic.NoisyMixture(mixture(), "vp"),
        _V,
        "`sde` must be a",
    ),
    BadInput(
        "analytic.noisy_mixture.parameterisation",
        lambda: mixture().noised(vp(), "noise"),
        _V,
        "`parameterisation`",
    ),
    BadInput(
        "analytic.gaussian.nan_mean",
        lambda: sf.Gaussian(jnp.array([jnp.nan, 0.0]), jnp.ones(2)),
        _V,
        "`mean` must be finite",
    ),
    BadInput(
        "analytic.gaussian.inf_covariance",
        lambda: sf.Gaussian(jnp.zeros(2), jnp.array([1.0, jnp.inf])),
        _V,
        "`covariance` must be finite",
    ),
    BadInput(
        "analytic.gaussian.covariance_shape",
        lambda: sf.Gaussian(jnp.zeros(2), jnp.ones(3)),
        _V,
        "`covariance` must have shape",
    ),
    BadInput(
        "analytic.gaussian.sample_num",
        lambda: sf.Gaussian(jnp.zeros(2), jnp.ones(2)).sample(-1, key=key()),
        _V,
        "`num` must be an int >= 0",
    ),
    BadInput(
        "analytic.class_mixture.labels_missing_class",
        lambda: sf.analytic.ClassMixture(mixture(), [1]),
        _V,
        "`labels` must give every class",
    ),
    BadInput(
        "analytic.class_mixture.mixture_type",
        lambda: sf.analytic.ClassMixture("mixture", [0]),
        _V,
        "`mixture` must be a",
    ),
    BadInput(
        "analytic.class_mixture.sample_num",
        lambda: sf.analytic.ClassMixture(mixture(), [0]).sample(-2, key=key()),
        _V,
        "`num` must be an int >= 0",
    ),
    BadInput(
        "analytic.conditional.mask_shape",
        lambda: sf.analytic.conditional(mixture(), jnp.array([True]), jnp.zeros(2)),
        _V,
        "`mask`",
    ),
    # ---- solve ----
    BadInput(
        "solve.sample.nan_score_fixed_grid",
        lambda: sf.sample(
            vp(), NaNScore(vp()), (2, 2), solver=dfx.Euler(), grid=_FIXED, denoise=False, key=key()
        ).samples.block_until_ready(),
        eqx.EquinoxRuntimeError,
        "[Nn]onfinite",
    ),
    BadInput(
        "solve.sample.grid_below_zero",
        lambda: sf.sample(
            vp(), exact(), (2, 2), key=key(), grid=solve.CustomGrid(jnp.array([1.0, 0.5, -0.1]))
        ),
        _V,
        r"`grid` must lie in the SDE's range \[t_min, T\]",
    ),
    BadInput(
        "solve.sample.grid_beyond_T",
        lambda: sf.sample(
            vp(), exact(), (2, 2), key=key(), grid=solve.CustomGrid(jnp.array([2.0, 0.5, 0.01]))
        ),
        _V,
        r"`grid` must lie in the SDE's range",
    ),
    BadInput(
        "solve.sample.grid_below_t_min",
        lambda: sf.sample(
            vp(),
            exact(),
            (2, 2),
            key=key(),
            method="sde",
            grid=solve.CustomGrid(jnp.array([1.0, 0.5, 1e-4])),
        ),
        _V,
        r"`grid` must lie in the SDE's range",
    ),
    BadInput(
        "solve.sample.ts_save_beyond_T",
        lambda: sf.sample(vp(), exact(), (2, 2), key=key(), ts_save=jnp.array([1.5, 0.5])),
        _V,
        r"`ts_save` must lie in the SDE's range",
    ),
    BadInput(
        "solve.sample.ts_save_increasing",
        lambda: sf.sample(vp(), exact(), (2, 2), key=key(), ts_save=jnp.array([0.2, 0.5])),
        _V,
        "`ts_save` must be strictly decreasing",
    ),
    BadInput(
        "solve.solve_reverse_sde.ts_save_shape",
        lambda: solve.solve_reverse_sde(
            vp(), exact(), jnp.zeros((2, 2)), key=key(), ts_save=jnp.ones((2, 2))
        ),
        _V,
        "`ts_save` must be a 1-d floating array",
    ),
    BadInput(
        "solve.sample.dt0_on_fixed_grid",
        lambda: sf.sample(vp(), exact(), (2, 2), key=key(), dt0=-0.01),
        _V,
        "`dt0` is the first step of an adaptive solve",
    ),
    BadInput(
        "solve.sample.grid_type",
        lambda: sf.sample(vp(), exact(), (2, 2), key=key(), grid=jnp.linspace(1, 0.01, 4)),
        _V,
        "`grid` must be a `scoreflow.solve` grid",
    ),
    BadInput(
        "solve.sample.float16",
        lambda: sf.sample(vp(), exact(), (2, 2), dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of .*half precision",
    ),
    BadInput(
        "solve.sample.bfloat16",
        lambda: sf.sample(vp(), exact(), (2, 2), dtype=jnp.bfloat16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "solve.sample.int_dtype",
        lambda: sf.sample(vp(), exact(), (2, 2), dtype=jnp.int32, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "solve.sample.int_key",
        lambda: sf.sample(vp(), exact(), (2, 2), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "solve.sample.float_array_key",
        lambda: sf.sample(vp(), exact(), (2, 2), key=jnp.zeros(2)),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "solve.sample.method",
        lambda: sf.sample(vp(), exact(), (2, 2), method="langevin", key=key()),
        _V,
        "`method`",
    ),
    BadInput(
        "solve.sample.shape_no_batch",
        lambda: sf.sample(vp(), exact(), (2,), key=key()),
        _V,
        "`shape` must be",
    ),
    BadInput(
        "solve.sample.shape_negative",
        lambda: sf.sample(vp(), exact(), (-1, 2), key=key()),
        _V,
        "`shape` must be a tuple of ints >= 0",
    ),
    BadInput(
        "solve.sample.max_steps_zero",
        lambda: sf.sample(
            vp(), exact(), (2, 2), stepsize_controller=_pid(), max_steps=0, key=key()
        ),
        _V,
        "`max_steps` must be an int >= 1",
    ),
    BadInput(
        "solve.sample.dt0_positive",
        lambda: sf.sample(vp(), exact(), (2, 2), stepsize_controller=_pid(), dt0=0.1, key=key()),
        _V,
        "`dt0` must be negative",
    ),
    BadInput(
        "solve.sample.negative_rtol",
        lambda: sf.sample(vp(), exact(), (2, 2), stepsize_controller=_pid(rtol=-1.0), key=key()),
        _V,
        "`stepsize_controller.rtol` must be non-negative",
    ),
    BadInput(
        "solve.sample.grid_and_controller",
        lambda: sf.sample(
            vp(), exact(), (2, 2), grid=_FIXED, stepsize_controller=_pid(), key=key()
        ),
        _V,
        "either `grid`",
    ),
    BadInput(
        "solve.sample.bare_function",
        lambda: sf.sample(vp(), lambda t, x: x, (2, 2), key=key()),
        _V,
        "`model` must say what it predicts",
    ),
    BadInput(
        "solve.sample.other_sde",
        lambda: sf.sample(sf.VESDE(), exact(), (2, 2), key=key()),
        _V,
        "`model` predicts under a VPSDE",
    ),
    BadInput(
        "solve.probability_flow.y0_float16",
        lambda: solve.solve_probability_flow(vp(), exact(), jnp.zeros((2, 2), jnp.float16)),
        _V,
        "`y0` must be one of",
    ),
    BadInput(
        "solve.probability_flow.y0_integer",
        lambda: solve.solve_probability_flow(vp(), exact(), jnp.zeros((2, 2), int)),
        _V,
        "`y0` must be a floating-point",
    ),
    BadInput(
        "solve.probability_flow.y0_unbatched",
        lambda: solve.solve_probability_flow(vp(), exact(), jnp.zeros(2)),
        _V,
        "`y0` must have shape",
    ),
    BadInput(
        "solve.probability_flow.stochastic_solver",
        lambda: solve.solve_probability_flow(vp(), exact(), x2(), solver=solve.StochasticDDIM()),
        _V,
        "`solver`",
    ),
    BadInput(
        "solve.reverse_sde.deterministic_solver",
        lambda: solve.solve_reverse_sde(vp(), exact(), x2(), solver=solve.DDIM(), key=key()),
        _V,
        "`solver`",
    ),
    BadInput(
        "solve.reverse_sde.int_key",
        lambda: solve.solve_reverse_sde(vp(), exact(), x2(), key=1),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "solve.reverse_sde.brownian_tol",
        lambda: solve.solve_reverse_sde(
            vp(), exact(), x2(), stepsize_controller=_pid(), brownian_tol=-1.0, key=key()
        ),
        _V,
        "`brownian_tol`",
    ),
    BadInput(
        "solve.custom_grid.increasing",
        lambda: solve.CustomGrid(jnp.array([0.1, 0.5, 1.0])),
        _V,
        "`ts` must be strictly decreasing",
    ),
    BadInput(
        "solve.custom_grid.nan",
        lambda: solve.CustomGrid(jnp.array([1.0, jnp.nan, 0.1])),
        _V,
        "`ts` must be finite",
    ),
    BadInput("solve.custom_grid.one_time", lambda: solve.CustomGrid(jnp.array([1.0])), _V, "`ts`"),
    BadInput(
        "solve.uniform_grid.num_steps",
        lambda: solve.UniformGrid(0),
        _V,
        "`num_steps` must be an int >= 1",
    ),
    BadInput("solve.karras_grid.rho", lambda: solve.KarrasGrid(10, rho=-1.0), _V, "`rho`"),
    BadInput(
        "solve.log_likelihood.negative_rtol",
        lambda: solve.log_likelihood(vp(), exact(), x2(), rtol=-1.0),
        _V,
        "`rtol` must be non-negative",
    ),
    BadInput(
        "solve.log_likelihood.negative_atol",
        lambda: solve.log_likelihood(vp(), exact(), x2(), atol=-1e-5),
        _V,
        "`atol` must be non-negative",
    ),
    BadInput(
        "solve.log_likelihood.max_steps_zero",
        lambda: solve.log_likelihood(vp(), exact(), x2(), max_steps=0),
        _V,
        "`max_steps`",
    ),
    BadInput(
        "solve.log_likelihood.dt0_negative",
        lambda: solve.log_likelihood(vp(), exact(), x2(), dt0=-0.01),
        _V,
        "`dt0` must be positive",
    ),
    BadInput(
        "solve.log_likelihood.dt0_log_snr",
        lambda: solve.log_likelihood(vp(), exact(), x2(), dt0=0.01, time_variable="log_snr"),
        _V,
        "`dt0` must be negative",
    ),
    BadInput(
        "solve.log_likelihood.time_variable",
        lambda: solve.log_likelihood(vp(), exact(), x2(), time_variable="sigma"),
        _V,
        "`time_variable`",
    ),
    BadInput(
        "solve.log_likelihood.hutchinson_no_key",
        lambda: solve.log_likelihood(vp(), exact(), x2(), trace=solve.Hutchinson()),
        _V,
        "`key` is required",
    ),
    BadInput(
        "solve.log_likelihood.nan_x",
        lambda: solve.log_likelihood(vp(), exact(), jnp.full((2, 2), jnp.nan)),
        _V,
        "`x` contains non-finite",
    ),
    BadInput(
        "solve.log_likelihood.nan_score_fixed_steps",
        lambda: solve.log_likelihood(
            vp(),
            NaNScore(vp()),
            x2(),
            solver=dfx.Euler(),
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=0.5,
        ).log_prob.block_until_ready(),
        eqx.EquinoxRuntimeError,
        "[Nn]onfinite",
    ),
    BadInput("solve.hutchinson.num_probes", lambda: solve.Hutchinson(0), _V, "`num_probes`"),
    BadInput("solve.hutchinson.probe", lambda: solve.Hutchinson(1, "uniform"), _V, "`probe`"),
    BadInput(
        "solve.hutchinson.std_error", lambda: solve.Hutchinson(1, std_error=1), _V, "`std_error`"
    ),
    BadInput(
        "solve.ula.step_size_negative",
        lambda: solve.ula(lambda x: -x, x2(), step_size=-0.1, num_steps=2, key=key()),
        _V,
        "`step_size` must be positive",
    ),
    BadInput(
        "solve.ula.step_size_array",
        lambda: solve.ula(lambda x: -x, x2(), step_size=jnp.ones(2), num_steps=2, key=key()),
        _V,
        "`step_size` must be a scalar",
    ),
    BadInput(
        "solve.ula.int_key",
        lambda: solve.ula(lambda x: -x, x2(), step_size=0.1, num_steps=2, key=3),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "solve.ula.num_steps",
        lambda: solve.ula(lambda x: -x, x2(), step_size=0.1, num_steps=0, key=key()),
        _V,
        "`num_steps`",
    ),
    BadInput(
        "solve.mala.y0_float16",
        lambda: solve.mala(
            lambda x: -jnp.sum(x**2),
            jnp.zeros((2, 2), jnp.float16),
            step_size=0.1,
            num_steps=2,
            key=key(),
        ),
        _V,
        "`y0` must be one of",
    ),
    BadInput(
        "solve.underdamped.gamma",
        lambda: solve.underdamped_langevin(
            lambda x: -x, x2(), step_size=0.1, num_steps=2, gamma=0.0, key=key()
        ),
        _V,
        "`gamma`",
    ),
    BadInput(
        "solve.annealed.ladder_increasing",
        lambda: solve.annealed_langevin(
            vp(),
            exact(),
            x2(),
            ladder=jnp.array([0.1, 1.0]),
            step_size=0.1,
            steps_per_level=2,
            key=key(),
        ),
        _V,
        "`ladder` must be strictly decreasing",
    ),
    BadInput(
        "solve.annealed.ladder_beyond_T",
        lambda: solve.annealed_langevin(
            vp(),
            exact(),
            x2(),
            ladder=jnp.array([1e4, 1.0]),
            step_size=0.1,
            steps_per_level=2,
            key=key(),
        ),
        _V,
        "`ladder` must lie in the SDE's range",
    ),
    BadInput(
        "solve.annealed.custom_grid_beyond_T",
        lambda: solve.annealed_langevin(
            vp(),
            exact(),
            x2(),
            ladder=solve.CustomGrid(jnp.array([3.0, 0.5])),
            step_size=0.1,
            steps_per_level=2,
            key=key(),
        ),
        _V,
        "`ladder` must lie in the SDE's range",
    ),
    BadInput(
        "solve.ais.num_chains",
        lambda: solve.ais(
            lambda x: -jnp.sum(x**2),
            sf.Gaussian(jnp.zeros(2), jnp.ones(2)),
            num_chains=1,
            betas=4,
            key=key(),
        ),
        _V,
        "`num_chains`",
    ),
    BadInput(
        "solve.ais.int_key",
        lambda: solve.ais(
            lambda x: -jnp.sum(x**2),
            sf.Gaussian(jnp.zeros(2), jnp.ones(2)),
            num_chains=4,
            betas=4,
            key=7,
        ),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "solve.ais.betas",
        lambda: solve.ais(
            lambda x: -jnp.sum(x**2),
            sf.Gaussian(jnp.zeros(2), jnp.ones(2)),
            num_chains=4,
            betas=jnp.array([0.0, 0.7, 0.5, 1.0]),
            key=key(),
        ),
        _V,
        "`betas` must be strictly increasing",
    ),
    BadInput("solve.mala_kernel.step_size", lambda: solve.MALAKernel(-0.1), _V, "`step_size`"),
    BadInput(
        "solve.predictor_corrector.int_key",
        lambda: solve.PredictorCorrector(solve.DDIM(), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput("solve.langevin_corrector.snr", lambda: solve.LangevinCorrector(snr=0.0), _V, "`snr`"),
    BadInput("solve.stochastic_ddim.eta", lambda: solve.StochasticDDIM(eta=-1.0), _V, "`eta`"),
    BadInput("solve.dpm_solver_pp.order", lambda: solve.DPMSolverPP(order=5), _V, "`order`"),
    BadInput("solve.adams_pc.order", lambda: solve.ExponentialAdamsPC(order=0), _V, "`order`"),
    BadInput(
        "solve.stochastic_edm_heun.s_noise",
        lambda: solve.StochasticEDMHeun(churn=1.0, s_noise=0.0),
        _V,
        "`s_noise`",
    ),
    BadInput(
        "solve.brownian_path.int_key",
        lambda: solve.GridBrownianPath(jnp.linspace(0, 1, 3), (2,), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "solve.brownian_path.float16",
        lambda: solve.GridBrownianPath(jnp.linspace(0, 1, 3), (2,), dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "solve.calibrate_grid.num_steps",
        lambda: solve.calibrate_grid(vp(), exact(), x2(), 0),
        _V,
        "`num_steps`",
    ),
    BadInput(
        "solve.calibrate_grid.relaxation",
        lambda: solve.calibrate_grid(vp(), exact(), x2(), 4, relaxation=2.0),
        _V,
        "`relaxation`",
    ),
    # ---- losses ----
    BadInput(
        "losses.dsm.int_key",
        lambda: losses.denoising_score_matching(vp(), exact(), x2(), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "losses.dsm.x_float16",
        lambda: losses.denoising_score_matching(
            vp(), exact(), jnp.zeros((2, 2), jnp.float16), key=key()
        ),
        _V,
        "`x` must be one of",
    ),
    BadInput(
        "losses.dsm.x_integer",
        lambda: losses.denoising_score_matching(vp(), exact(), jnp.zeros((2, 2), int), key=key()),
        _V,
        "`x` must be a floating",
    ),
    BadInput(
        "losses.dsm.reduce",
        lambda: losses.denoising_score_matching(vp(), exact(), x2(), reduce="max", key=key()),
        _V,
        "`reduce`",
    ),
    BadInput(
        "losses.dsm.weighting",
        lambda: losses.denoising_score_matching(vp(), exact(), x2(), weighting="sigma2", key=key()),
        _V,
        "`weighting`",
    ),
    BadInput(
        "losses.dsm.time_sampling",
        lambda: losses.denoising_score_matching(
            vp(), exact(), x2(), time_sampling="uniform", key=key()
        ),
        _V,
        "`time_sampling`",
    ),
    BadInput(
        "losses.dsm.bare_function",
        lambda: losses.denoising_score_matching(vp(), lambda t, x: x, x2(), key=key()),
        _V,
        "`model` must say what it predicts",
    ),
    BadInput(
        "losses.ssm.int_key",
        lambda: losses.sliced_score_matching(vp(), exact(), x2(), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "losses.ism.model_without_sde",
        lambda: losses.implicit_score_matching(None, exact(), x2(), key=key()),
        _V,
        "`model`",
    ),
    BadInput(
        "losses.edm_weighting.sigma_data", lambda: losses.EDMWeighting(-0.5), _V, "`sigma_data`"
    ),
    BadInput(
        "losses.log_normal_time.p_std", lambda: losses.LogNormalTime(p_std=0.0), _V, "`p_std`"
    ),
    BadInput(
        "losses.discrete_time.times_2d",
        lambda: losses.DiscreteTime(jnp.ones((2, 2))),
        _V,
        "`times`",
    ),
    BadInput(
        "losses.contrastive_divergence.shapes",
        lambda: losses.contrastive_divergence(lambda x: jnp.sum(x), x2(), jnp.zeros((2, 3))),
        _V,
        "`negatives`",
    ),
    BadInput(
        "losses.contrastive_divergence.energy_penalty",
        lambda: losses.contrastive_divergence(
            lambda x: jnp.sum(x), x2(), x2(), energy_penalty=-1.0
        ),
        _V,
        "`energy_penalty`",
    ),
    BadInput(
        "losses.replay_buffer.size", lambda: losses.ReplayBuffer(0, (2,), key=key()), _V, "`size`"
    ),
    BadInput(
        "losses.replay_buffer.float16",
        lambda: losses.ReplayBuffer(4, (2,), dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "losses.replay_buffer.int_key",
        lambda: losses.ReplayBuffer(4, (2,), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    # ---- models ----
    BadInput(
        "models.score_sde.parameterisation",
        lambda: models.ScoreSDE(vp(), tiny_mlp(), parameterisation="noise", event_shape=(2,)),
        _V,
        "`parameterisation`",
    ),
    BadInput(
        "models.score_sde.objective",
        lambda: models.ScoreSDE(
            vp(), tiny_mlp(), parameterisation="eps", event_shape=(2,), objective="contrastive"
        ),
        _V,
        "`objective`",
    ),
    BadInput(
        "models.score_sde.sample_shape",
        lambda: score_sde().sample(-1, key=key()),
        _V,
        "`sample_shape` must be",
    ),
    BadInput(
        "models.score_sde.sample_float16",
        lambda: score_sde().sample(2, dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "models.score_sde.sample_int_key",
        lambda: score_sde().sample(2, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "models.score_sde.sample_method",
        lambda: score_sde().sample(2, method="langevin", key=key()),
        _V,
        "`method`",
    ),
    BadInput(
        "models.score_sde.loss_shape",
        lambda: score_sde().loss(jnp.zeros((2, 3)), key=key()),
        _V,
        "`x` must have shape",
    ),
    BadInput(
        "models.ddpm.num_steps",
        lambda: models.DDPM(tiny_mlp(), event_shape=(2,), betas=sf.sde.linear_betas(10)).sample(
            2, num_steps=20, key=key()
        ),
        _V,
        "`num_steps` must be an int in",
    ),
    BadInput(
        "models.ncsn.sigmas_increasing",
        lambda: models.NCSN(lambda s, x: x, event_shape=(2,), sigmas=jnp.array([0.1, 1.0])),
        _V,
        "`sigmas` must be strictly decreasing",
    ),
    BadInput(
        "models.ncsn.sample_float16",
        lambda: models.NCSN(lambda s, x: x, event_shape=(2,)).sample(
            2, dtype=jnp.float16, key=key()
        ),
        _V,
        "`dtype` must be one of",
    ),
    BadInput("models.realnvp.dim", lambda: models.RealNVP(1, key=key()), _V, "`dim`"),
    BadInput(
        "models.realnvp.float16",
        lambda: models.RealNVP(2, num_layers=2, width=4, depth=1, dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "models.ffjord.negative_rtol",
        lambda: models.FFJORD(2, width=4, depth=1, rtol=-1e-5, key=key()),
        _V,
        "`rtol` must be non-negative",
    ),
    BadInput(
        "models.ffjord.kinetic_weight",
        lambda: models.FFJORD(2, width=4, depth=1, kinetic_weight=-1.0, key=key()),
        _V,
        "`kinetic_weight`",
    ),
    BadInput(
        "models.gmm.sample_int_key",
        lambda: models.GMM(
            jnp.ones(1), jnp.zeros((1, 2)), jnp.ones((1, 2)), covariance_type="diag"
        ).sample(2, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "models.fit_gmm.num_components",
        lambda: models.fit_gmm(x2(), 5, key=key()),
        _V,
        "`num_components`",
    ),
    BadInput(
        "models.fit_gmm.x_integer",
        lambda: models.fit_gmm(jnp.zeros((4, 2), int), 1, key=key()),
        _V,
        "`x` must hold floating-point",
    ),
    BadInput(
        "models.fit_gmm.covariance_type",
        lambda: models.fit_gmm(x2(), 1, covariance_type="banded", key=key()),
        _V,
        "`covariance_type`",
    ),
    BadInput(
        "models.ebm.restart",
        lambda: models.EBM(
            lambda x: jnp.sum(x),
            event_shape=(2,),
            training=models.ContrastiveDivergence(restart=2.0),
        ),
        _V,
        "`restart`",
    ),
    BadInput(
        "models.conditional.num_classes",
        lambda: models.ConditionalScoreSDE(
            vp(), tiny_mlp(), parameterisation="eps", event_shape=(2,), num_classes=0
        ),
        _V,
        "`num_classes`",
    ),
    # ---- data ----
    BadInput(
        "data.toy_sample.name",
        lambda: sf.data.toy_sample("moons", 4, key=key()),
        _V,
        "`name` must be one of",
    ),
    BadInput(
        "data.toy_sample.num",
        lambda: sf.data.toy_sample("two_moons", -4, key=key()),
        _V,
        "`num` must be an int >= 0",
    ),
    BadInput(
        "data.toy_sample.float16",
        lambda: sf.data.toy_sample("two_moons", 4, dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "data.toy_sample.int_key",
        lambda: sf.data.toy_sample("two_moons", 4, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "data.ring_mixture.float16",
        lambda: sf.data.ring_mixture(jnp.float16),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "data.load_array.suffix", lambda: sf.data.load_array("data.csv"), _V, "`path` must end in"
    ),
    BadInput(
        "data.load_array.float16",
        lambda: sf.data.load_array("data.npy", dtype="float16"),
        _V,
        "`dtype` must be one of",
    ),
    BadInput("data.load_array.nan", lambda: _load_written(np.full((2, 2), np.nan)), _V, "NaN"),
    BadInput(
        "data.load_array.one_axis", lambda: _load_written(np.zeros(3)), _V, r"shape \(N, \*event\)"
    ),
    BadInput("data.digits.split", lambda: sf.data.digits("validation"), _V, "`split`"),
    # ---- guidance ----
    BadInput(
        "guidance.posterior.mask_dtype",
        lambda: guidance.PosteriorSampling(exact(), jnp.array([1, 0]), jnp.zeros(2)),
        _V,
        "`mask` must be a boolean",
    ),
    BadInput(
        "guidance.posterior.noise_std",
        lambda: guidance.PosteriorSampling(
            exact(), jnp.array([True, False]), jnp.zeros(2), noise_std=-1.0
        ),
        _V,
        "`noise_std`",
    ),
    BadInput(
        "guidance.replacement.observation_nan",
        lambda: guidance.Replacement(exact(), jnp.array([True, False]), jnp.array([jnp.nan, 0.0])),
        _V,
        "`observation`",
    ),
    BadInput(
        "guidance.replacement.bare_function",
        lambda: guidance.Replacement(lambda t, x: x, jnp.array([True, False]), jnp.zeros(2)),
        _V,
        "`model`",
    ),
    BadInput(
        "guidance.classifier_free.model",
        lambda: guidance.ClassifierFreeGuidance(exact(), 0),
        _V,
        "`model`",
    ),
    BadInput(
        "guidance.classifier.classifier",
        lambda: guidance.ClassifierGuidance(exact(), lambda t, x: x, 0),
        _V,
        "`classifier`",
    ),
    BadInput(
        "guidance.twisted_smc.num_particles",
        lambda: guidance.twisted_smc(
            guidance.PosteriorSampling(exact(), jnp.array([True, False]), jnp.zeros(2)),
            1,
            grid=_FIXED,
            key=key(),
        ),
        _V,
        "`num_particles`",
    ),
    BadInput(
        "guidance.twisted_smc.grid_beyond_T",
        lambda: guidance.twisted_smc(
            guidance.PosteriorSampling(exact(), jnp.array([True, False]), jnp.zeros(2)),
            4,
            grid=solve.CustomGrid(jnp.array([5.0, 0.5])),
            key=key(),
        ),
        _V,
        "`grid` must lie in the SDE's range",
    ),
    BadInput(
        "guidance.twisted_smc.int_key",
        lambda: guidance.twisted_smc(
            guidance.PosteriorSampling(exact(), jnp.array([True, False]), jnp.zeros(2)),
            4,
            grid=_FIXED,
            key=0,
        ),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "guidance.twisted_smc.float16",
        lambda: guidance.twisted_smc(
            guidance.PosteriorSampling(exact(), jnp.array([True, False]), jnp.zeros(2)),
            4,
            grid=_FIXED,
            dtype=jnp.float16,
            key=key(),
        ),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "guidance.twisted_smc.nan_score",
        lambda: guidance.twisted_smc(
            guidance.PosteriorSampling(NaNScore(vp()), jnp.array([True, False]), jnp.zeros(2)),
            4,
            grid=_FIXED,
            key=key(),
        ).samples.block_until_ready(),
        eqx.EquinoxRuntimeError,
        "[Nn]onfinite",
    ),
    # ---- metrics ----
    BadInput(
        "metrics.kid.int_key",
        lambda: metrics.kid(
            jnp.zeros((4, 2)), jnp.ones((4, 2)), num_subsets=2, subset_size=2, key=0
        ),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "metrics.kid.subset_size",
        lambda: metrics.kid(jnp.zeros((4, 2)), jnp.ones((4, 2)), subset_size=9, key=key()),
        _V,
        "`subset_size`",
    ),
    BadInput(
        "metrics.mmd_test.int_key",
        lambda: metrics.mmd_test(jnp.zeros((4, 2)), jnp.ones((4, 2)), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "metrics.mmd_test.num_permutations",
        lambda: metrics.mmd_test(
            jnp.zeros((4, 2)), jnp.ones((4, 2)), num_permutations=0, key=key()
        ),
        _V,
        "`num_permutations`",
    ),
    BadInput(
        "metrics.frechet.eps",
        lambda: metrics.frechet_distance(jnp.zeros((4, 2)), jnp.ones((4, 2)), eps=-1.0),
        _V,
        "`eps`",
    ),
    BadInput(
        "metrics.precision_recall.k",
        lambda: metrics.precision_recall(jnp.zeros((4, 2)), jnp.ones((4, 2)), k=0),
        _V,
        "`k`",
    ),
    BadInput(
        "metrics.mode_coverage.num_std",
        lambda: metrics.mode_coverage(x2(), mixture(), num_std=-1.0),
        _V,
        "`num_std`",
    ),
    BadInput(
        "metrics.bits_per_dim.levels",
        lambda: metrics.bits_per_dim(
            lambda x: jnp.zeros(2), jnp.zeros((2, 2), int), levels=1, key=key()
        ),
        _V,
        "`levels`",
    ),
    BadInput(
        "metrics.bits_per_dim.float_data",
        lambda: metrics.bits_per_dim(lambda x: jnp.zeros(2), x2(), levels=4, key=key()),
        _V,
        "`x` must hold integers",
    ),
    BadInput(
        "metrics.bits_per_dim.int_key",
        lambda: metrics.bits_per_dim(
            lambda x: jnp.zeros(2), jnp.zeros((2, 2), int), levels=4, key=0
        ),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "metrics.bin_centres.float16",
        lambda: metrics.bin_centres(jnp.zeros((2, 2), int), levels=4, dtype=jnp.float16),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "metrics.importance.num_samples",
        lambda: metrics.importance_log_likelihood(
            lambda x, *, key: x, x2(), num_samples=1, key=key()
        ),
        _V,
        "`num_samples`",
    ),
    BadInput(
        "metrics.importance.int_key",
        lambda: metrics.importance_log_likelihood(lambda x, *, key: x, x2(), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "metrics.gaussian_kernel.bandwidth", lambda: metrics.GaussianKernel(-1.0), _V, "`bandwidth`"
    ),
    # ---- bijections ----
    BadInput(
        "bijections.affine.zero_scale",
        lambda: bij.Affine(jnp.zeros(2), jnp.zeros(2)),
        _V,
        "`scale`",
    ),
    BadInput(
        "bijections.permute.not_permutation", lambda: bij.Permute([0, 0, 1]), _V, "`permutation`"
    ),
    BadInput("bijections.chain.empty", lambda: bij.Chain([]), _V, "`bijections` must not be empty"),
    BadInput(
        "bijections.coupling.mask_all_true",
        lambda: bij.AffineCoupling([True, True], key=key()),
        _V,
        "`mask`",
    ),
    BadInput(
        "bijections.coupling.scale_fn",
        lambda: bij.AffineCoupling([True, False], scale_fn="tanh", key=key()),
        _V,
        "`scale_fn`",
    ),
    BadInput(
        "bijections.coupling.float16",
        lambda: bij.AffineCoupling([True, False], dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "bijections.coupling.int_key",
        lambda: bij.AffineCoupling([True, False], key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "bijections.coupling_stack.num_layers",
        lambda: bij.AffineCouplingStack(2, num_layers=1, key=key()),
        _V,
        "`num_layers`",
    ),
    BadInput(
        "bijections.cnf.negative_atol",
        lambda: bij.CNF(lambda t, z: z, (2,), atol=-1.0),
        _V,
        "`atol` must be non-negative",
    ),
    BadInput(
        "bijections.cnf.max_steps_zero",
        lambda: bij.CNF(lambda t, z: z, (2,), max_steps=0),
        _V,
        "`max_steps`",
    ),
    BadInput(
        "bijections.cnf.equal_times",
        lambda: bij.CNF(lambda t, z: z, (2,), t1=0.0),
        _V,
        "`t1` must differ",
    ),
    BadInput(
        "bijections.cnf.t1_array",
        lambda: bij.CNF(lambda t, z: z, (2,), t1=jnp.ones(2)),
        _V,
        "`t1` must be a scalar",
    ),
    BadInput(
        "bijections.standard_normal.negative_shape",
        lambda: bij.StandardNormal((2,)).sample((-1,), key=key()),
        _V,
        "`sample_shape` must be a tuple of ints >= 0",
    ),
    BadInput(
        "bijections.standard_normal.int_key",
        lambda: bij.StandardNormal((2,)).sample((3,), key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "bijections.flow.shapes",
        lambda: bij.Flow(bij.StandardNormal((3,)), bij.Permute([1, 0])),
        _V,
        "`base` and `bijection`",
    ),
    # ---- nn ----
    BadInput("nn.categorical.levels", lambda: nn.Categorical(1), _V, "`num_levels`"),
    BadInput(
        "nn.categorical.data_range",
        lambda: nn.Categorical(17).check_data(jnp.array([0, 17])),
        _V,
        "`x` must hold integer pixel levels in 0..16",
    ),
    BadInput(
        "nn.categorical.data_fraction",
        lambda: nn.Categorical(17).check_data(jnp.array([0.5])),
        _V,
        "`x` must hold integer pixel levels",
    ),
    BadInput(
        "nn.logistic_mixture.components",
        lambda: nn.DiscretisedLogisticMixture(17, 0),
        _V,
        "`num_components`",
    ),
    BadInput(
        "nn.logistic_mixture.data_range",
        lambda: nn.DiscretisedLogisticMixture(4).check_data(jnp.array([-1]), "images"),
        _V,
        "`images` must hold integer pixel levels in 0..3",
    ),
    BadInput(
        "nn.bernoulli.non_binary",
        lambda: nn.Bernoulli().check_data(jnp.array([0.0, 0.5])),
        _V,
        "`x` must be binary",
    ),
    BadInput(
        "nn.gaussian.bounds",
        lambda: nn.Gaussian(True, log_variance_bounds=(1.0, -1.0)),
        _V,
        "`log_variance_bounds",
    ),
    BadInput("nn.gaussian.variance", lambda: nn.Gaussian(variance=0.0), _V, "`variance`"),
    BadInput(
        "nn.gaussian.non_finite",
        lambda: nn.Gaussian().check_data(jnp.array([jnp.nan])),
        _V,
        "`x` contains non-finite",
    ),
    BadInput("nn.time_mlp.depth", lambda: nn.TimeMLP((2,), depth=0, key=key()), _V, "`depth`"),
    BadInput(
        "nn.time_mlp.embedding",
        lambda: nn.TimeMLP((2,), embedding="learned", key=key()),
        _V,
        "`embedding`",
    ),
    BadInput(
        "nn.time_mlp.int_key",
        lambda: nn.TimeMLP((2,), width=4, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput(
        "nn.time_mlp.x_shape", lambda: tiny_mlp()(0.5, jnp.zeros(3)), _V, "`x` must have shape"
    ),
    BadInput(
        "nn.fourier.odd_dim",
        lambda: nn.GaussianFourierEmbedding(3, key=key()),
        _V,
        "`dim` must be an even",
    ),
    BadInput(
        "nn.fourier.int_key",
        lambda: nn.GaussianFourierEmbedding(4, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput("nn.sinusoidal.odd_dim", lambda: nn.SinusoidalEmbedding(5), _V, "`dim`"),
    BadInput(
        "nn.label_embedding.num_classes",
        lambda: nn.LabelEmbedding(0, 4, key=key()),
        _V,
        "`num_classes`",
    ),
    BadInput(
        "nn.concat_squash.float16",
        lambda: nn.ConcatSquashMLP(2, 4, 1, dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput("nn.concat_squash.width", lambda: nn.ConcatSquashMLP(2, 0, key=key()), _V, "`width`"),
    BadInput("nn.energy_mlp.width", lambda: nn.EnergyMLP((2,), width=0, key=key()), _V, "`width`"),
    BadInput(
        "nn.energy_mlp.int_key",
        lambda: nn.EnergyMLP((2,), width=4, key=0),
        _V,
        "`key` must be a PRNG key",
    ),
    BadInput("nn.unet.data_shape", lambda: nn.UNet((8, 8), key=key()), _V, "`data_shape`"),
    BadInput(
        "nn.unet.divisible",
        lambda: nn.UNet((1, 7, 7), channel_mults=(1, 2), key=key()),
        _V,
        "divisible",
    ),
    BadInput(
        "nn.classifier.num_classes",
        lambda: nn.TimeConvClassifier((1, 8, 8), num_classes=0, key=key()),
        _V,
        "`num_classes`",
    ),
]


# ---- train, the file format, the CLI and its config ----


class _Tiny(eqx.Module):
    """A one-parameter model for the training rows."""

    mu: jnp.ndarray

    def loss(self, x, *, key):
        return jnp.mean((x - self.mu[None]) ** 2)


def _tiny():
    return _Tiny(jnp.zeros(2))


def _fit(**kw):
    args = dict(num_steps=1, batch_size=2, progress=False, key=key())
    return sf.train.fit(_tiny(), kw.pop("data", x2()), **{**args, **kw})


def _in_tmp(fn):
    # `fn(folder)` in a fresh temporary folder, removed afterwards.
    with tempfile.TemporaryDirectory() as folder:
        return fn(folder)


def _write(folder, name, content: bytes):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


def _cli(folder, config: dict | str, *extra):
    # The CLI with --debug, so that the row sees the exception behind the one-line error.
    from scoreflow.cli import main

    text = config if isinstance(config, str) else __import__("json").dumps(config)
    path = _write(folder, "cfg.json", text.encode())
    return main(["--debug", "train", "--config", path, "--quiet", *extra])


def _cli_value(name, value):
    return lambda: _in_tmp(lambda d: _cli(d, {name: value}))


def _saved_then(fn):
    def run(folder):
        path = os.path.join(folder, "m.eqx")
        sf.save(path, _tiny())
        return fn(path)

    return lambda: _in_tmp(run)


def _checkpoint_then(fn):
    def run(folder):
        path = os.path.join(folder, "run.eqx")
        _fit(checkpoint=path, ema_decay=None)
        return fn(path)

    return lambda: _in_tmp(run)


def _corrupt(path):
    raw = bytearray(pathlib.Path(path).read_bytes())
    raw[len(raw) // 2] ^= 1
    pathlib.Path(path).write_bytes(bytes(raw))
    return sf.load(path)


def _truncate(path):
    raw = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(raw[: len(raw) - 40])
    return sf.train.load_checkpoint(path)


def _resume_other(path):
    return _fit(checkpoint=path, num_steps=2, ema_decay=0.9)  # written without an EMA


_CE = sf.train.CheckpointError
ROWS += [
    BadInput("train.fit.num_steps", lambda: _fit(num_steps=-1), _V, "`num_steps`"),
    BadInput("train.fit.batch_size", lambda: _fit(batch_size=0), _V, "`batch_size`"),
    BadInput("train.fit.steps_per_chunk", lambda: _fit(steps_per_chunk=0), _V, "`steps_per_chunk`"),
    BadInput("train.fit.ema_decay", lambda: _fit(ema_decay=1.0), _V, "`ema_decay`"),
    BadInput("train.fit.data_1d", lambda: _fit(data=jnp.zeros(4)), _V, "`data` must have shape"),
    BadInput(
        "train.fit.data_rows",
        lambda: _fit(data=(jnp.zeros((4, 2)), jnp.zeros(3))),
        _V,
        "`data`'s arrays must share their leading axis",
    ),
    BadInput(
        "train.fit.integer_data",
        lambda: sf.train.fit(
            sf.ScoreSDE(
                vp(),
                nn.TimeMLP((2,), width=4, depth=1, key=key()),
                parameterisation="eps",
                event_shape=(2,),
            ),
            jnp.zeros((4, 2), jnp.int32),
            num_steps=1,
            progress=False,
            key=key(),
        ),  # fmt: skip
        _V,
        "`data` has integer dtype int32",
    ),
    BadInput(
        "train.fit.checkpoint_dir",
        lambda: _in_tmp(lambda d: _fit(checkpoint=d)),
        _V,
        "`checkpoint` .* is a directory",
    ),
    BadInput(
        "train.fit.checkpoint_under_file",
        lambda: _in_tmp(lambda d: _fit(checkpoint=os.path.join(_write(d, "f", b""), "run.eqx"))),
        _V,
        "`checkpoint` .* lies under",
    ),
    BadInput("train.fit.int_key", lambda: _fit(key=0), _V, "`key` must be a PRNG key"),
    BadInput(
        "train.fit.nan_data",
        lambda: _fit(data=jnp.full((2, 2), jnp.nan)),
        _V,
        "`data` has non-finite",
    ),
    BadInput(
        "train.fit.checkpoint_every",
        lambda: _in_tmp(lambda d: _fit(checkpoint=os.path.join(d, "r.eqx"), checkpoint_every=0)),
        _V,
        "`checkpoint_every`",
    ),
    BadInput(
        "train.fit.checkpoint_every_alone",
        lambda: _fit(checkpoint_every=10),
        _V,
        "`checkpoint_every` needs a `checkpoint`",
    ),
    BadInput("train.fit.validation_fraction", lambda: _fit(validation=1.5), _V, "fraction"),
    BadInput("train.fit.validation_rows", lambda: _fit(validation=0.1), _V, "`validation=0.1`"),
    BadInput("train.fit.patience_alone", lambda: _fit(patience=3), _V, "`patience` needs"),
    BadInput("train.fit.patience", lambda: _fit(patience=0, validation=x2()), _V, "`patience`"),
    BadInput("train.fit.validate_every", lambda: _fit(validate_every=0), _V, "`validate_every`"),
    BadInput(
        "train.fit.resume_other_optimizer",
        _checkpoint_then(_resume_other),
        sf.train.CheckpointMismatch,
        "different model or optimiser",
    ),
    BadInput("train.load.weights", _saved_then(lambda p: sf.load(p, weights="x")), _V, "`weights`"),
    BadInput(
        "train.load.no_ema",
        _checkpoint_then(lambda p: sf.load(p)),
        _V,
        "kept no EMA",
    ),
    BadInput("train.load.flipped_bit", _checkpoint_then(_corrupt), _CE, "corrupt or truncated"),
    BadInput("train.load.truncated", _checkpoint_then(_truncate), _CE, "corrupt or truncated"),
    BadInput(
        "train.load.not_scoreflow",
        lambda: _in_tmp(lambda d: sf.load(_write(d, "x.eqx", b"\x93NUMPY"))),
        _CE,
        "not a scoreflow file",
    ),
    BadInput(
        "train.load.missing", lambda: sf.load("/nonexistent/m.eqx"), FileNotFoundError, "No file"
    ),
    BadInput(
        "train.load.directory",
        lambda: _in_tmp(lambda d: sf.load(d)),
        IsADirectoryError,
        "is a directory",
    ),
    BadInput(
        "train.load_checkpoint.model_file",
        _saved_then(sf.train.load_checkpoint),
        _V,
        "not a training checkpoint",
    ),
    BadInput(
        "train.save.lambda",
        lambda: _in_tmp(
            lambda d: sf.save(
                os.path.join(d, "m.eqx"),
                nn.TimeMLP((2,), width=4, depth=1, activation=lambda x: x, key=key()),
            )
        ),  # fmt: skip
        TypeError,
        "Cannot save `activation`",
    ),
    BadInput(
        "train.save.object",
        lambda: _in_tmp(lambda d: sf.save(os.path.join(d, "m.eqx"), {"a": object()})),
        TypeError,
        r"Cannot save `\['a'\]`",
    ),
    BadInput(
        "train.save.directory",
        lambda: _in_tmp(lambda d: sf.save(d, _tiny())),
        _V,
        "`path`",
    ),
    BadInput(
        "train.default_optimizer.clip_norm",
        lambda: sf.train.default_optimizer(1e-3, clip_norm=-1.0),
        _V,
        "`clip_norm`",
    ),
    # The config: each names the key, what it takes and what it got.
    BadInput(
        "cli.config.steps_str",
        _cli_value("steps", "20"),
        _V,
        "'steps' must be an integer, got '20'",
    ),
    BadInput("cli.config.dtype", _cli_value("dtype", "float16"), _V, "'dtype' must be one of"),
    BadInput("cli.config.model", _cli_value("model", "gan"), _V, "'model' must be one of"),
    BadInput("cli.config.sde", _cli_value("sde", "vq"), _V, "'sde' must be one of"),
    BadInput(
        "cli.config.unknown_key", _cli_value("modle", "ddpm"), _V, "Unknown config key 'modle'"
    ),
    BadInput(
        "cli.config.batch_bool",
        _cli_value("batch_size", True),
        _V,
        "'batch_size' must be an integer",
    ),
    BadInput(
        "cli.config.lr_zero", _cli_value("learning_rate", 0.0), _V, "'learning_rate' must be > 0"
    ),
    BadInput("cli.config.ema_one", _cli_value("ema_decay", 1.0), _V, "'ema_decay' must be < 1"),
    BadInput("cli.config.network_type", _cli_value("network", 3), _V, "'network' must be a table"),
    BadInput(
        "cli.config.network_key",
        _cli_value("network", {"widht": 8}),
        _V,
        r"Unknown key\(s\) \['widht'\] in the config's network table",
    ),
    BadInput(
        "cli.config.network_value",
        _cli_value("network", {"depth": 0}),
        _V,
        "network table .* is invalid: `depth`",
    ),
    BadInput("cli.config.dataset", _cli_value("dataset", "mnist"), _V, "'dataset' must be one of"),
    BadInput(
        "cli.config.json_syntax",
        lambda: _in_tmp(lambda d: _cli(d, '{"steps": 3,}')),
        _V,
        "is not valid JSON: .* line 1",
    ),
    BadInput(
        "cli.config.not_a_table",
        lambda: _in_tmp(lambda d: _cli(d, "[1, 2]")),
        _V,
        "must hold a table",
    ),
    BadInput(
        "cli.config.suffix",
        lambda: __import__("scoreflow._config", fromlist=["x"]).load_config("cfg.yaml"),
        _V,
        "does not exist",
    ),
    BadInput(
        "cli.sample.num",
        lambda: __import__("scoreflow.cli", fromlist=["x"]).main(
            ["--debug", "sample", "--checkpoint", "m.eqx", "--num", "-1"]
        ),
        _V,
        "`--num` must be >= 1",
    ),
    BadInput(
        "cli.config.toml_syntax",
        lambda: _in_tmp(
            lambda d: __import__("scoreflow._config", fromlist=["x"]).load_config(
                _write(d, "c.toml", b"steps = = 3")
            )
        ),
        _V,
        "is not valid TOML",
    ),
    BadInput(
        "cli.config.yaml",
        lambda: _in_tmp(
            lambda d: __import__("scoreflow._config", fromlist=["x"]).load_config(
                _write(d, "c.yaml", b"steps: 3")
            )
        ),
        _V,
        "must be a .json or .toml file",
    ),
    BadInput(
        "cli.sample.missing",
        lambda: __import__("scoreflow.cli", fromlist=["x"]).main(
            ["--debug", "sample", "--checkpoint", "/nonexistent.eqx"]
        ),
        FileNotFoundError,
        "No checkpoint file",
    ),
]


# ---- data parallelism, multi-process runs, on-disk data ----


def _mesh(n, axis="data"):
    # A mesh whose `data` axis has size n: one device listed n times (only its shape is
    # read before the refusal; this process has one device).
    import jax

    return jax.sharding.Mesh(np.array(jax.devices()[:1] * n), (axis,))


def _distributed(**kw):
    args = dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=0)
    return sf.train.initialize_distributed(**{**args, **kw})


def _npz_compressed(d):
    path = os.path.join(d, "c.npz")
    np.savez_compressed(path, x=np.zeros((3, 2)))
    return sf.data.open_npz(path)


def _npz_missing(d):
    path = os.path.join(d, "m.npz")
    np.savez(path, x=np.zeros((3, 2)))
    return sf.data.open_npz(path, "images")


def _idx_mismatch(d):
    x = _write(d, "x-idx2", bytes([0, 0, 8, 2]) + np.asarray([3, 2], ">u4").tobytes() + bytes(6))
    y = _write(d, "y-idx1", bytes([0, 0, 8, 1]) + np.asarray([4], ">u4").tobytes() + bytes(4))
    return sf.data.open_idx(x, y)


ROWS += [
    BadInput("train.fit.mesh_type", lambda: _fit(mesh="data"), _V, "`mesh` must be a"),
    BadInput(
        "train.fit.mesh_without_data_axis",
        lambda: _fit(mesh=_mesh(1, "batch")),
        _V,
        "`mesh` has axes \\('batch',\\)",
    ),
    BadInput(
        "train.fit.batch_not_divisible_by_mesh",
        lambda: _fit(mesh=_mesh(4), batch_size=6),
        _V,
        "`batch_size` 6 is not divisible",
    ),
    BadInput(
        "train.initialize_distributed.address",
        lambda: _distributed(coordinator_address="localhost"),
        _V,
        "`coordinator_address` must be",
    ),
    BadInput(
        "train.initialize_distributed.missing",
        lambda: _distributed(num_processes=None),
        _V,
        "`num_processes` is missing",
    ),
    BadInput(
        "train.initialize_distributed.process_id",
        lambda: _distributed(process_id=2),
        _V,
        "`process_id` must lie in",
    ),
    BadInput(
        "train.initialize_distributed.num_processes",
        lambda: _distributed(num_processes=0),
        _V,
        "`num_processes` must be an int",
    ),
    BadInput(
        "train.initialize_distributed.timeout",
        lambda: _distributed(timeout=0),
        _V,
        "`timeout` must be an int",
    ),
    BadInput(
        "data.DiskDataset.arrays",
        lambda: sf.data.DiskDataset([1, 2, 3]),
        _V,
        "`arrays` must be a NumPy array",
    ),
    BadInput(
        "data.DiskDataset.rows",
        lambda: sf.data.DiskDataset((np.zeros((3, 2)), np.zeros(4))),
        _V,
        "`arrays` must share one leading axis",
    ),
    BadInput(
        "data.DiskDataset.transform",
        lambda: sf.data.DiskDataset(np.zeros((3, 2)), transform=1),
        _V,
        "`transform` must be callable",
    ),
    BadInput(
        "data.DiskDataset.idx",
        lambda: sf.data.DiskDataset(np.zeros((3, 2))).rows(np.array([3])),
        _V,
        "`idx` must lie in",
    ),
    BadInput(
        "data.open_npy.suffix",
        lambda: sf.data.open_npy("data.csv"),
        _V,
        "`path` must end in .npy",
    ),
    BadInput(
        "data.open_npz.compressed",
        lambda: _in_tmp(_npz_compressed),
        _V,
        "`path` .* is compressed",
    ),
    BadInput("data.open_npz.member", lambda: _in_tmp(_npz_missing), _V, "`names` 'images'"),
    BadInput(
        "data.open_idx.not_idx",
        lambda: _in_tmp(lambda d: sf.data.open_idx(_write(d, "x-idx", b"\x08\x03\x00\x00"))),
        _V,
        "`images` .* is not an IDX file",
    ),
    BadInput(
        "data.open_idx.gzipped",
        lambda: sf.data.open_idx("train-images-idx3-ubyte.gz"),
        _V,
        "`images` .* is gzipped",
    ),
    BadInput(
        "data.open_idx.truncated",
        lambda: _in_tmp(
            lambda d: sf.data.open_idx(
                _write(d, "t-idx", bytes([0, 0, 8, 1]) + np.asarray([9], ">u4").tobytes())
            )
        ),
        _V,
        "`images` .* is truncated",
    ),
    BadInput("data.open_idx.labels", lambda: _in_tmp(_idx_mismatch), _V, "`labels` has 4 rows"),
]

ROWS += [
    BadInput(
        "solve.sharded_sample.mesh_axis",
        lambda: solve.sharded_sample(vp(), exact(), (4, 2), mesh=_mesh(1, "x"), key=key()),
        _V,
        "`mesh` has axes",
    ),
    BadInput(
        "solve.sharded_sample.batch",
        lambda: solve.sharded_sample(vp(), exact(), (6, 2), mesh=_mesh(4), key=key()),
        _V,
        "`shape\\[0\\]` 6 is not divisible",
    ),
    BadInput(
        "solve.sharded_log_likelihood.batch",
        lambda: solve.sharded_log_likelihood(vp(), exact(), jnp.zeros((6, 2)), mesh=_mesh(4)),
        _V,
        "`x.shape\\[0\\]` 6 is not divisible",
    ),
]

ROWS += [
    BadInput(
        "cli.train.process_id",
        lambda: __import__("scoreflow.cli", fromlist=["x"]).main(
            [
                "--debug",
                "train",
                "--coordinator-address",
                "127.0.0.1:1234",
                "--num-processes",
                "2",
                "--process-id",
                "5",
            ]
        ),  # fmt: skip
        _V,
        "`process_id` must lie in",
    ),
]


# PixelCNN, GANs (issue 15).


@functools.cache
def tiny_pixelcnn():
    return models.PixelCNN((1, 4, 4), head=nn.Categorical(17), width=2, depth=1, key=key())


@functools.cache
def tiny_gan():
    gen = nn.MLPGenerator(2, (2,), width=4, depth=1, key=key())
    disc = nn.MLPDiscriminator((2,), width=4, depth=1, key=key())
    return models.GAN(gen, disc, event_shape=(2,), latent_dim=2)


def _gan_with(**kw):
    gen = nn.MLPGenerator(2, (2,), width=4, depth=1, key=key())
    disc = nn.MLPDiscriminator((2,), width=4, depth=1, key=key())
    return models.GAN(gen, disc, **{"event_shape": (2,), "latent_dim": 2, **kw})


ROWS += [
    BadInput(
        "nn.masked_conv.mask_type",
        lambda: nn.MaskedConv2d(1, 2, 3, mask_type="C", key=key()),
        _V,
        "`mask_type`",
    ),
    BadInput(
        "nn.masked_conv.even_kernel",
        lambda: nn.MaskedConv2d(1, 2, 4, mask_type="A", key=key()),
        _V,
        "`kernel_size`",
    ),
    BadInput(
        "nn.masked_conv.groups",
        lambda: nn.MaskedConv2d(3, 4, 3, mask_type="B", num_groups=3, key=key()),
        _V,
        "`out_channels`",
    ),
    BadInput(
        "nn.pixelcnn_network.event_shape",
        lambda: nn.PixelCNNNetwork((8, 8), 17, num_levels=17, key=key()),
        _V,
        "`event_shape`",
    ),
    BadInput(
        "nn.gated_pixelcnn_network.width",
        lambda: nn.GatedPixelCNNNetwork((3, 4, 4), 17, num_levels=17, width=4, key=key()),
        _V,
        "`width`",
    ),
    BadInput(
        "nn.gated_pixelcnn_network.kernel_size",
        lambda: nn.GatedPixelCNNNetwork((1, 4, 4), 17, num_levels=17, kernel_size=2, key=key()),
        _V,
        "`kernel_size`",
    ),
    BadInput(
        "nn.dcgan_generator.event_shape",
        lambda: nn.DCGANGenerator(8, (1, 6, 6), key=key()),
        _V,
        "`event_shape`",
    ),
    BadInput(
        "nn.dcgan_discriminator.event_shape",
        lambda: nn.DCGANDiscriminator((1, 8, 10), key=key()),
        _V,
        "`event_shape`",
    ),
    BadInput(
        "nn.mlp_generator.latent_dim",
        lambda: nn.MLPGenerator(0, (2,), key=key()),
        _V,
        "`latent_dim`",
    ),
    BadInput(
        "nn.mlp_discriminator.width",
        lambda: nn.MLPDiscriminator((2,), width=0, key=key()),
        _V,
        "`width`",
    ),
    BadInput(
        "models.pixelcnn.event_shape",
        lambda: models.PixelCNN((16,), key=key()),
        _V,
        "`event_shape`",
    ),
    BadInput(
        "models.pixelcnn.architecture",
        lambda: models.PixelCNN((1, 4, 4), architecture="lstm", key=key()),
        _V,
        "`architecture`",
    ),
    BadInput(
        "models.pixelcnn.continuous_head",
        lambda: models.PixelCNN((1, 4, 4), head=nn.Gaussian(False), key=key()),
        _V,
        "`head`",
    ),
    BadInput(
        "models.pixelcnn.levels_out_of_range",
        lambda: tiny_pixelcnn().log_prob(jnp.full((1, 1, 4, 4), 17)),
        _V,
        "`x`",
    ),
    BadInput(
        "models.pixelcnn.negative_level",
        lambda: tiny_pixelcnn().log_prob(jnp.full((1, 1, 4, 4), -1)),
        _V,
        "`x`",
    ),
    BadInput(
        "models.pixelcnn.float_pixels",
        lambda: tiny_pixelcnn().log_prob(jnp.zeros((1, 1, 4, 4))),
        _V,
        "`x`",
    ),
    BadInput(
        "models.pixelcnn.x_shape",
        lambda: tiny_pixelcnn().log_prob(jnp.zeros((1, 4, 4), jnp.int32)),
        _V,
        "`x`",
    ),
    BadInput(
        "models.pixelcnn.label_unconditional",
        lambda: tiny_pixelcnn().sample(2, y=1, key=key()),
        _V,
        "`y`",
    ),
    BadInput(
        "models.pixelcnn.sample_shape",
        lambda: tiny_pixelcnn().sample(-1, key=key()),
        _V,
        "`sample_shape`",
    ),
    BadInput("models.gan.n_critic", lambda: _gan_with(n_critic=0), _V, "`n_critic`"),
    BadInput("models.gan.n_critic_negative", lambda: _gan_with(n_critic=-2), _V, "`n_critic`"),
    BadInput("models.gan.loss", lambda: _gan_with(loss="lsgan"), _V, "`loss`"),
    BadInput("models.gan.r1", lambda: _gan_with(r1=-1.0), _V, "`r1`"),
    BadInput(
        "models.gan.gradient_penalty",
        lambda: _gan_with(gradient_penalty=float("nan")),
        _V,
        "`gradient_penalty`",
    ),
    BadInput("models.gan.event_shape", lambda: _gan_with(event_shape=(3,)), _V, "`generator`"),
    BadInput(
        "models.gan.x_shape",
        lambda: tiny_gan().discriminator_loss(jnp.zeros((4, 3)), None, key=key()),
        _V,
        "`x`",
    ),
    BadInput(
        "models.gan.sample_float16",
        lambda: tiny_gan().sample(2, dtype=jnp.float16, key=key()),
        _V,
        "`dtype` must be one of",
    ),
    BadInput(
        "losses.discriminator_loss.kind",
        lambda: losses.discriminator_loss(jnp.zeros(2), jnp.zeros(2), kind="lsgan"),
        _V,
        "`kind`",
    ),
    BadInput(
        "losses.discriminator_loss.real_shape",
        lambda: losses.discriminator_loss(jnp.zeros((2, 1)), jnp.zeros(2)),
        _V,
        "`real`",
    ),
    BadInput(
        "losses.generator_loss.kind",
        lambda: losses.generator_loss(jnp.zeros(2), kind="lsgan"),
        _V,
        "`kind`",
    ),
    BadInput(
        "losses.gradient_penalty.shapes",
        lambda: losses.gradient_penalty(jnp.sum, jnp.zeros((2, 2)), jnp.zeros((3, 2)), key=key()),
        _V,
        "`fake`",
    ),
    BadInput(
        "train.fit.player_optimizers",
        lambda: sf.train.fit(
            tiny_gan(),
            jnp.zeros((4, 2)),
            num_steps=1,
            optimizer={"critic": None},
            progress=False,
            key=key(),
        ),
        _V,
        "`optimizer`",
    ),
    BadInput(
        "train.fit.player_optimizers_plain_model",
        lambda: sf.train.fit(
            score_sde(),
            jnp.zeros((4, 2)),
            num_steps=1,
            optimizer={"disc": None, "gen": None},
            progress=False,
            key=key(),
        ),
        _V,
        "`optimizer`",
    ),
]


# Latent-variable models (issue 13): data outside a decoder's support, k <= 0, latent
# sizes that do not match the networks.


@functools.cache
def _vae(head=None, **kw):
    head = nn.Bernoulli() if head is None else head
    return models.VAE((4,), 2, head=head, width=4, depth=1, key=key(), **kw)


class _WrongEncoder(eqx.Module):
    # Returns a 3-d latent where the model is told 2.
    def __call__(self, x):
        return jnp.zeros(3), jnp.zeros(3)


@functools.cache
def _hvae():
    return models.HierarchicalVAE((4,), (2, 2), head=nn.Bernoulli(), width=4, depth=1, key=key())


def _vdm(**kw):
    return models.VDM(lambda t, x: x, event_shape=(4,), **kw)


ROWS += [
    BadInput(
        "models.vae.bernoulli_non_binary",
        lambda: _vae().loss(jnp.full((2, 4), 0.5), key=key()),
        _V,
        "`x` must be binary",
    ),
    BadInput(
        "models.vae.categorical_level_out_of_range",
        lambda: _vae(nn.Categorical(5)).elbo(jnp.full((2, 4), 5), key=key()),
        _V,
        "`x` must hold integer pixel levels",
    ),
    BadInput(
        "models.vae.categorical_outside_data_range",
        lambda: _vae(nn.Categorical(5)).elbo(jnp.full((2, 4), 1.5), key=key()),
        _V,
        "`x` must lie in data_range",
    ),
    BadInput(
        "models.vae.event_shape",
        lambda: _vae().loss(jnp.zeros((2, 3)), key=key()),
        _V,
        r"`x` must have shape \(batch, \*\(4,\)\)",
    ),
    BadInput(
        "models.vae.num_samples_zero",
        lambda: _vae(num_samples=0),
        _V,
        "`num_samples` must be an int >= 1",
    ),
    BadInput(
        "models.vae.elbo_num_samples",
        lambda: _vae().elbo(jnp.zeros((2, 4)), num_samples=0, key=key()),
        _V,
        "`num_samples` must be an int >= 1",
    ),
    BadInput(
        "models.vae.estimate_num_samples",
        lambda: _vae().log_prob_estimate(jnp.zeros((2, 4)), num_samples=1, key=key()),
        _V,
        "`num_samples` must be an int >= 2",
    ),
    BadInput(
        "models.vae.latent_dim_mismatch",
        lambda: models.VAE((4,), 2, head=nn.Bernoulli(), encoder=_WrongEncoder(), key=key()),
        _V,
        r"`latent_dim` \(2\) must match the encoder",
    ),
    BadInput(
        "models.vae.decoder_shape",
        lambda: models.VAE(
            (4,),
            2,
            head=nn.Gaussian(learn_variance=True),
            decoder=nn.PixelDecoder(2, (4,), 1, 4, 1, key=key()),
            key=key(),
        ),
        _V,
        "`decoder` must return the head's parameters",
    ),
    BadInput(
        "models.vae.head",
        lambda: models.VAE((4,), 2, head="bernoulli", key=key()),
        _V,
        "`head` must be a `scoreflow.nn` output head",
    ),
    BadInput(
        "models.vae.data_range",
        lambda: _vae(data_range=(1.0, -1.0)),
        _V,
        "`data_range` must be finite with low < high",
    ),
    BadInput(
        "models.vae.decode_latent_size",
        lambda: _vae().decode(jnp.zeros((2, 3))),
        _V,
        r"`z` must have shape \(batch, 2\)",
    ),
    BadInput(
        "models.hvae.latent_sizes",
        lambda: models.HierarchicalVAE((4,), (), head=nn.Bernoulli(), key=key()),
        _V,
        "`latent_sizes` must be a non-empty tuple",
    ),
    BadInput(
        "models.hvae.inference",
        lambda: models.HierarchicalVAE((4,), (2,), head=nn.Bernoulli(), inference="up", key=key()),
        _V,
        "`inference` must be one of",
    ),
    BadInput(
        "models.hvae.free_bits",
        lambda: models.HierarchicalVAE((4,), (2,), head=nn.Bernoulli(), free_bits=-1.0, key=key()),
        _V,
        "`free_bits` must be non-negative",
    ),
    BadInput(
        "models.hvae.warmup_steps",
        lambda: models.HierarchicalVAE((4,), (2,), head=nn.Bernoulli(), warmup_steps=-1, key=key()),
        _V,
        "`warmup_steps` must be an int >= 0",
    ),
    BadInput(
        "models.hvae.bernoulli_non_binary",
        lambda: _hvae().elbo(jnp.full((2, 4), 2.0), key=key()),
        _V,
        "`x` must be binary",
    ),
    BadInput(
        "models.hvae.elbo_num_samples",
        lambda: _hvae().elbo(jnp.zeros((2, 4)), num_samples=-3, key=key()),
        _V,
        "`num_samples` must be an int >= 1",
    ),
    BadInput("models.vdm.levels", lambda: _vdm(levels=1), _V, "`levels` must be an int >= 2"),
    BadInput(
        "models.vdm.level_out_of_range",
        lambda: _vdm(levels=5).elbo(jnp.full((2, 4), 7), key=key()),
        _V,
        "`x` must hold integer pixel levels",
    ),
    BadInput(
        "models.vdm.outside_data_range",
        lambda: _vdm(levels=5).loss(jnp.full((2, 4), -2.0), key=key()),
        _V,
        "`x` must lie in data_range",
    ),
    BadInput("models.vdm.sde", lambda: _vdm(sde="vp"), _V, "`sde` must be a"),
    BadInput(
        "models.vdm.time_sampling", lambda: _vdm(time_sampling="uniform"), _V, "`time_sampling`"
    ),
    BadInput(
        "models.vdm.network_input", lambda: _vdm(network_input="sigma"), _V, "`network_input`"
    ),
    BadInput(
        "sde.learned_vp.gamma_order",
        lambda: sf.sde.LearnedVPSDE(1.0, -1.0),
        _V,
        "`gamma_min` must be smaller than `gamma_max`",
    ),
    BadInput(
        "sde.learned_vp.gamma_finite",
        lambda: sf.sde.LearnedVPSDE(float("-inf"), 1.0),
        _V,
        "`gamma_min` must be finite",
    ),
    BadInput(
        "sde.learned_vp.network", lambda: sf.sde.LearnedVPSDE(network=tiny_mlp()), _V, "`network`"
    ),
    BadInput("sde.learned_vp.t_min", lambda: sf.sde.LearnedVPSDE(t_min=0.0), _V, "`t_min`"),
    BadInput("nn.monotone_mlp.width", lambda: nn.MonotoneMLP(0, key=key()), _V, "`width`"),
    BadInput(
        "nn.gaussian_encoder.latent_dim",
        lambda: nn.GaussianEncoder((4,), 0, key=key()),
        _V,
        "`latent_dim` must be an int >= 1",
    ),
    BadInput(
        "nn.gaussian_encoder.log_var_bounds",
        lambda: nn.GaussianEncoder((4,), 2, log_var_bounds=(3.0, -3.0), key=key()),
        _V,
        r"`log_var_bounds\[0\]` must be smaller",
    ),
    BadInput(
        "nn.pixel_decoder.num_params",
        lambda: nn.PixelDecoder(2, (4,), 0, key=key()),
        _V,
        "`num_params` must be an int >= 1",
    ),
    BadInput(
        "nn.residual_mlp.depth",
        lambda: nn.ResidualMLP(2, 2, 4, -1, key=key()),
        _V,
        "`depth` must be an int >= 0",
    ),
    BadInput(
        "nn.residual_mlp.input_size",
        lambda: nn.ResidualMLP(2, 2, 4, 1, key=key())(jnp.zeros(3)),
        _V,
        "`x` must have 2 elements",
    ),
    BadInput(
        "losses.iwae_bound.num_samples",
        lambda: losses.iwae_bound(lambda x, *, key: x[:, 0], x2(), num_samples=0, key=key()),
        _V,
        "`num_samples` must be an int >= 1",
    ),
    BadInput(
        "losses.iwae_bound.log_weight_shape",
        lambda: losses.iwae_bound(lambda x, *, key: x, x2(), num_samples=2, key=key()),
        _V,
        r"`log_weight` must return shape \(2,\)",
    ),
    BadInput(
        "train.skip_large_updates.max_norm",
        lambda: sf.train.skip_large_updates(sf.train.default_optimizer(), max_norm=float("nan")),
        _V,
        "`max_norm` must be a finite number > 0",
    ),
    BadInput(
        "solve.calibrate_grid.solver",
        lambda: solve.calibrate_grid(vp(), exact(), x2(), 4, solver=solve.EDMHeun()),
        _V,
        "`solver` must be ExponentialAdamsPC, DPMSolverPP or DDIM",
    ),
    BadInput(
        "solve.calibrate_grid.minibatch",
        lambda: solve.calibrate_grid(vp(), exact(), x2(), 4, minibatch=0),
        _V,
        "`minibatch`",
    ),
    BadInput(
        "solve.calibrate_grid.flop_budget",
        lambda: solve.calibrate_grid(vp(), exact(), x2(), 4, flop_budget=0.0),
        _V,
        "`flop_budget` must be positive",
    ),
]

ROWS += [
    BadInput(
        "solve.optimised_grid.num_steps",
        lambda: solve.OptimisedGrid(0),
        _V,
        "`num_steps` must be an int >= 1",
    ),
]

"""The peers of the solver benchmarks, and the exact reference they are measured against.

k-diffusion's sampling module and diffusers' UniPC and DPM-Solver++ schedulers, torch
CPU float64, on EDM's parameterisation (sigma from 80 to 0.002), counting denoiser calls
actually made. Every runner takes an optional `sigmas` (decreasing, `n` noise levels
without the final 0) so that a peer can run on another grid than its Karras one (issue
19: separating what the grid buys from what the solver buys). `reference` is a scipy
DOP853 solve of the EDM flow at rtol = atol = 1e-10, for any mixture of
`mixture_families.py` (diagonal or full covariances).

Used by `solver_accuracy.py` (cases A, B) and the design-set benchmarks.
"""

import functools
import importlib.machinery
import importlib.util
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
from mixture_families import TorchDenoiser, np_denoise
from scipy.integrate import solve_ivp


def reference(y0, smax, smin, w, mu, cov):
    """DOP853 in u = log sigma on dy/du = y - D(y, sigma), then the final denoise."""
    d = y0.shape[1]

    def rhs(u, y):
        Y = y.reshape(-1, d)
        return (Y - np_denoise(Y, math.exp(u), w, mu, cov)).ravel()

    sol = solve_ivp(
        rhs, (math.log(smax), math.log(smin)), y0.ravel(), "DOP853", rtol=1e-10, atol=1e-10
    )
    return np_denoise(sol.y[:, -1].reshape(-1, d), smin, w, mu, cov)


def errors(x, ref):
    """(RMS, median) over samples of the per-coordinate RMS error."""
    per = np.sqrt(np.sum((np.asarray(x) - ref) ** 2, 1) / ref.shape[1])
    return float(np.sqrt(np.mean(per**2))), float(np.median(per))


@functools.cache
def load_k_diffusion_sampling():
    """Import only k-diffusion's sampling module (its package imports pull in images)."""
    import torch

    spec = importlib.util.find_spec("k_diffusion")
    path = Path(spec.submodule_search_locations[0]) / "sampling.py"
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(path.parent)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    for name in ("torchdiffeq", "torchsde"):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            stub.odeint = None  # only k-diffusion's log_likelihood / SDE samplers use these
            stub.BrownianInterval = None
            sys.modules[name] = stub
    sys.modules.setdefault("k_diffusion", pkg)
    sys.modules["k_diffusion.utils"] = utils
    spec2 = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    mod = importlib.util.module_from_spec(spec2)
    spec2.loader.exec_module(mod)
    del torch
    return mod


def _check_sigmas(sigmas, n):
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.shape != (n,) or not np.all(np.diff(sigmas) < 0):
        raise ValueError(f"`sigmas` must be {n} decreasing noise levels, got {sigmas.shape}.")
    return sigmas


def karras_sigmas(n, smax=80.0, smin=0.002, rho=7.0):
    i = np.linspace(0, 1, n)
    return (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho


def run_k_diffusion(kd, fn_name, den, x_T, nfe, sigmas=None):
    import torch

    fn = getattr(kd, fn_name)
    n = (nfe + 1) // 2 if fn_name == "sample_heun" else nfe
    if n < 2:
        return None
    sig = karras_sigmas(n) if sigmas is None else _check_sigmas(sigmas, n)
    sig = torch.tensor(np.concatenate([sig, [0.0]]))
    den.calls = 0
    t = time.perf_counter()
    with torch.no_grad():
        out = fn(lambda x, s: den(x, s), torch.tensor(x_T), sig, disable=True)
    return out.numpy(), den.calls, time.perf_counter() - t


def run_diffusers(cls_name, order, den, x_T, nfe, sigmas=None):
    import diffusers
    import torch

    cls = getattr(diffusers, cls_name)
    kw = dict(prediction_type="sample", solver_order=order, final_sigmas_type="zero")
    if cls_name == "DPMSolverMultistepScheduler":
        kw["algorithm_type"] = "dpmsolver++"
    sch = cls(**kw)
    sch.set_timesteps(nfe)
    # Replace the discrete VP schedule by EDM's Karras sigmas (+ final 0): diffusers'
    # multistep schedulers only read `sigmas[step_index]` through alpha = 1/sqrt(1+s^2).
    sig = karras_sigmas(nfe) if sigmas is None else _check_sigmas(sigmas, nfe)
    sig = torch.tensor(np.concatenate([sig, [0.0]]))
    sch.sigmas = sig
    sch.timesteps = torch.arange(nfe - 1, -1, -1)
    sch.num_inference_steps = nfe
    den.calls = 0
    x = torch.tensor(x_T) / math.sqrt(1 + float(sig[0]) ** 2)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, ts in enumerate(sch.timesteps):
            s = sig[i]
            out = den(x * torch.sqrt(1 + s**2), s)
            x = sch.step(out, ts, x).prev_sample
    return x.numpy(), den.calls, time.perf_counter() - t0


# (name, runner(kd, denoiser, x_T, nfe, sigmas=None) -> (samples, calls, seconds) or None)
PEERS = [
    (
        "k-diffusion lms",
        lambda kd, d, x, n, sigmas=None: run_k_diffusion(kd, "sample_lms", d, x, n, sigmas),
    ),
    (
        "k-diffusion dpmpp_2m",
        lambda kd, d, x, n, sigmas=None: run_k_diffusion(kd, "sample_dpmpp_2m", d, x, n, sigmas),
    ),
    (
        "k-diffusion heun",
        lambda kd, d, x, n, sigmas=None: run_k_diffusion(kd, "sample_heun", d, x, n, sigmas),
    ),
    (
        "diffusers UniPC-2",
        lambda kd, d, x, n, sigmas=None: run_diffusers(
            "UniPCMultistepScheduler", 2, d, x, n, sigmas
        ),
    ),
    (
        "diffusers UniPC-3",
        lambda kd, d, x, n, sigmas=None: run_diffusers(
            "UniPCMultistepScheduler", 3, d, x, n, sigmas
        ),
    ),
    (
        "diffusers DPM++2M",
        lambda kd, d, x, n, sigmas=None: run_diffusers(
            "DPMSolverMultistepScheduler", 2, d, x, n, sigmas
        ),
    ),
    (
        "diffusers DPM++3M",
        lambda kd, d, x, n, sigmas=None: run_diffusers(
            "DPMSolverMultistepScheduler", 3, d, x, n, sigmas
        ),
    ),
]


def run_peers(w, mu, cov, x_T, nfe, sigmas=None, kd=None, names=None):
    """`{name: (samples, calls, seconds)}` of every peer (or those in `names`) at `nfe`.

    `sigmas`: optional grid of `nfe` decreasing noise levels (EDM), given to every peer
    but k-diffusion's Heun (two calls per step; it keeps its own Karras grid). Peers
    that cannot run at this budget are left out.
    """
    kd = load_k_diffusion_sampling() if kd is None else kd
    den = TorchDenoiser(w, mu, cov)
    out = {}
    for name, fn in PEERS:
        if names is not None and name not in names:
            continue
        heun = name == "k-diffusion heun"
        if heun and sigmas is not None:
            continue
        res = fn(kd, den, x_T, nfe, None if heun else sigmas)
        if res is not None:
            out[name] = res
    return out

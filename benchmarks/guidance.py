"""Guidance and inpainting against exact conditionals (2-d), and trained on the digits.

`exact` (float64, the exact oracles of `scoreflow.analytic`, minutes):

- **Classifier-free guidance is not the tilted density.** A labelled 2-d mixture with
  overlapping classes (`cfg_mixture`, chosen for overlap before anything was measured);
  for every w of the sweep 0, 0.5, 1, 2, 4, 8 the guided model's exact probability-flow
  density q_w (`solve.log_likelihood`, rtol = atol = 1e-7) at its own samples (Tsit5,
  adaptive) gives KL(q_w || p_w) against the tilted density
  p_w ∝ p(x|y)^(1+w) p(x)^(-w), normalised on a 401 × 401 grid of [-8, 8]². Classifier
  guidance with the exact noisy classifier at scale 1 + w is the same model (the same tilt
  of each noisy marginal), so one row per w. Figure: `guidance_cfg_gap.png`.
- **Inpainting bias, every sampler.** Against `analytic.conditional`: a correlated
  Gaussian (unimodal) given x_0 = 1.3, and case A (8 Gaussians on a ring) given
  x_0 = 2.8, whose conditional has three well-separated modes. Methods: replacement
  (Song et al. 2021, app. I), posterior sampling with the Tweedie covariance and with
  PiGDM's Gaussian-prior variance, the twisted diffusion sampler (SMC), and NCSN's
  Algorithm 2 (annealed Langevin, the existing peer); samplers: probability-flow ODE
  (Heun, Karras 40), reverse SDE (Euler-Maruyama, log-SNR 200), DPM-Solver++(2M)
  (log-SNR 20), ancestral DDIM (eta = 1, 100), annealed Langevin (VE, 10 x 50). Bias of
  the conditional mean, ratio of standard deviations, and (case A) the total variation
  between the mass per mode and the exact weights, each with its Monte-Carlo error.
  Wall time per method is a ratio to replacement with the same sampler.

`digits` (float32, trains two networks, about 30-60 minutes on two cores):
a `ConditionalScoreSDE` (VP, eps, `TimeMLP` width 512 depth 4 with a label embedding,
label dropout 0.1) and a `NoisyClassifier` (`TimeMLP` width 256 depth 3) on the digits
training split, the budget of the digits table (12 000 steps at batch 128, AdamW 1e-3,
warm-up and cosine decay, EMA 0.999). For classifier-free w in 0, 0.5, 1, 2, 4 and
classifier guidance scales 1, 2, 4, 8: 100 samples per class (PF-ODE, Heun, 32 Karras
steps), the shipped digits classifier's accuracy on the class asked for, FD-digits and
KID against the test split. Inpainting of 100 test digits given their top half: per-pixel
RMSE of the bottom half against the truth (posterior mean of 8 samples, and single
samples), replacement against posterior sampling; a picture.

    python benchmarks/guidance.py exact [--num 4000] [--out-dir DIR]
    python benchmarks/guidance.py digits [--steps 12000] [--out-dir DIR]
"""

import argparse
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
W_SWEEP = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def cfg_mixture(jnp, analytic):
    """Two classes that overlap: class 0 one broad Gaussian, class 1 two narrower ones."""
    import scoreflow as sf

    mix = sf.GaussianMixture(
        jnp.array([0.5, 0.3, 0.2]),
        jnp.array([[-0.6, 0.0], [0.8, 0.6], [0.6, -1.2]]),
        jnp.array([[1.0, 1.2], [0.4, 0.5], [0.5, 0.3]]),
    )
    return analytic.ClassMixture(mix, [0, 1, 1])


def _kl_gap(args, out):
    import diffrax as dfx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import scoreflow as sf
    from scoreflow import analytic, guidance

    sde = sf.VPSDE()
    cm = cfg_mixture(jnp, analytic)
    model = cm.noised(sde, "eps")
    y = 0
    g = np.linspace(-8, 8, 401)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    cell = (g[1] - g[0]) ** 2
    rows = []
    ode = dict(solver=dfx.Tsit5(), stepsize_controller=dfx.PIDController(rtol=1e-7, atol=1e-7))
    for w in W_SWEEP:
        log_tilt = (1 + w) * cm.log_prob(grid, y) - w * cm.log_prob(grid)
        log_norm = jax.nn.logsumexp(log_tilt) + np.log(cell)
        tilted = lambda x: (1 + w) * cm.log_prob(x, y) - w * cm.log_prob(x) - log_norm
        # Classifier guidance at scale 1 + w with the exact noisy classifier is this same
        # model (tests/test_guidance.py checks the identity), so one row per w.
        for name, guided in (("classifier-free", guidance.ClassifierFreeGuidance(model, y, w)),):
            t0 = time.perf_counter()
            x = sf.sample(sde, guided, (args.num_kl, 2), key=jr.key(1), **ode).samples
            lq = sf.solve.log_likelihood(sde, guided, x, rtol=1e-7, atol=1e-7).log_prob
            kl = sf.metrics.kl_divergence(lq, tilted(x))
            rows.append(
                dict(
                    guidance=name,
                    w=w,
                    kl=float(kl.value),
                    kl_se=float(kl.stderr),
                    mean=np.asarray(x.mean(0)).tolist(),
                    tilted_mean=np.asarray(
                        jnp.sum(jnp.exp(log_tilt - log_norm)[:, None] * grid, 0) * cell
                    ).tolist(),
                    seconds=time.perf_counter() - t0,
                )
            )
            print(f"{name:26s} w={w:4.1f}  KL(q||tilted) = {kl.value:.4f} ± {kl.stderr:.4f}")
    out["cfg_gap"] = rows
    _plot_gap(cm, sde, rows, os.path.join(args.out_dir, "guidance_cfg_gap.png"))


def _plot_gap(cm, sde, rows, path):
    import jax.numpy as jnp
    import jax.random as jr
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import scoreflow as sf
    from scoreflow import guidance

    model = cm.noised(sde, "eps")
    ws = (0.0, 2.0, 8.0)
    fig, axes = plt.subplots(1, len(ws) + 1, figsize=(4 * (len(ws) + 1), 3.6))
    g = np.linspace(-4, 4, 201)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    for ax, w in zip(axes[:-1], ws):
        tilt = (1 + w) * cm.log_prob(grid, 0) - w * cm.log_prob(grid)
        dens = np.exp(np.asarray(tilt - tilt.max())).reshape(g.size, g.size)
        ax.contour(g, g, dens, levels=6, colors="k", linewidths=0.7)
        x = sf.sample(
            sde,
            guidance.ClassifierFreeGuidance(model, 0, w),
            (3000, 2),
            grid=sf.solve.KarrasGrid(40),
            solver=sf.solve.DPMSolverPP(2),
            key=jr.key(2),
        ).samples
        ax.scatter(*np.asarray(x).T, s=1, alpha=0.3)
        ax.set(
            title=f"w = {w}: CFG samples, tilted density",
            xlim=(-4, 4),
            ylim=(-4, 4),
            aspect="equal",
        )
    ax = axes[-1]
    for name, marker in (("classifier-free", "o-"), ("classifier (scale 1 + w)", "s--")):
        sel = [r for r in rows if r["guidance"] == name]
        ax.errorbar(
            [r["w"] for r in sel],
            [r["kl"] for r in sel],
            [2 * r["kl_se"] for r in sel],
            fmt=marker,
            label=name,
        )
    ax.set(xlabel="w", ylabel="KL(guided || tilted) [nats]", title="gap to p(x|y)^(1+w) p(x)^(-w)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


def _inpainting(args, out):
    import diffrax as dfx
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import scoreflow as sf
    from scoreflow import analytic, guidance

    vp = sf.VPSDE()
    ve = sf.VESDE(sigma_min=0.01, sigma_max=20.0)
    ring = sf.GaussianMixture(
        jnp.full(8, 1 / 8),
        4
        * jnp.stack([jnp.cos(jnp.arange(8) * jnp.pi / 4), jnp.sin(jnp.arange(8) * jnp.pi / 4)], 1),
        jnp.full((8, 2), 0.25),
    )
    gauss = sf.GaussianMixture(
        jnp.ones(1), jnp.array([[0.5, -1.0]]), jnp.array([[[1.0, 0.8], [0.8, 1.5]]])
    )
    cases = {
        "unimodal (correlated Gaussian, x_0 = 1.3)": (gauss, jnp.array([1.3, 0.0])),
        "case A, x_0 = 2.8 (three separated modes)": (ring, jnp.array([2.8, 0.0])),
    }
    known = jnp.array([True, False])
    samplers = {
        "PF-ODE Heun, Karras 40": dict(
            method="ode", solver=dfx.Heun(), grid=sf.solve.KarrasGrid(40)
        ),
        "reverse SDE, EM 200": dict(method="sde", grid=sf.solve.LogSNRGrid(200)),
        "DPM-Solver++(2M), 20": dict(
            method="ode", solver=sf.solve.DPMSolverPP(2), grid=sf.solve.LogSNRGrid(20)
        ),
        "ancestral DDIM (eta 1), 100": dict(
            method="sde", solver=sf.solve.StochasticDDIM(1.0), grid=sf.solve.LogSNRGrid(100)
        ),
    }
    n = args.num
    rows = []
    for case, (mix, y) in cases.items():
        cond = analytic.conditional(mix, known, y)
        m, s = float(cond.mean()[0]), float(np.sqrt(cond.covariance()[0, 0]))
        w_exact = np.asarray(cond.weights)

        def summary(x, method, sampler, seconds, nfe, ref=None, ess=None):
            # Resampled particles are not independent: their errors use the final ESS.
            u = np.asarray(x[:, 1])
            n_eff = u.size if ess is None else min(u.size, ess)
            comp = np.asarray(jnp.argmax(cond.component_log_probs(x[:, 1:]), -1))
            w_hat = np.bincount(comp, minlength=w_exact.size) / u.size
            row = dict(
                case=case,
                method=method,
                sampler=sampler,
                mean_bias=float(u.mean() - m),
                mean_se=float(s / np.sqrt(n_eff)),
                std_ratio=float(u.std() / s),
                std_ratio_se=float(1 / np.sqrt(2 * n_eff)),
                mode_tv=float(0.5 * np.abs(w_hat - w_exact).sum()),
                mode_tv_noise=float(0.5 * np.sum(np.sqrt(w_exact * (1 - w_exact) / n_eff))),
                seconds=seconds,
                nfe=nfe,
                time_ratio=None if ref is None else seconds / ref,
            )
            rows.append(row)
            print(
                f"{case[:12]:12s} {method:34s} {sampler:28s} bias {row['mean_bias']:+.3f} "
                f"sd x{row['std_ratio']:.3f} TV {row['mode_tv']:.3f} ({seconds:.1f} s)"
            )

        for sampler, options in samplers.items():
            ref = None
            methods = {
                "replacement": guidance.Replacement(mix.noised(vp), known, y),
                "posterior sampling (Tweedie)": guidance.PosteriorSampling(
                    mix.noised(vp), known, y
                ),
                "posterior sampling (PiGDM, s2 = 1)": guidance.PosteriorSampling(
                    mix.noised(vp), known, y, covariance=1.0
                ),
            }
            for method, model in methods.items():
                run = lambda k: sf.sample(vp, model, (n, 2), key=k, **options)
                run(jr.key(0)).samples.block_until_ready()  # compile
                t0 = time.perf_counter()
                res = run(jr.key(1))
                x = model.fill(res.samples).block_until_ready()
                dt = time.perf_counter() - t0
                ref = dt if ref is None else ref
                summary(x, method, sampler, dt, int(res.nfe), ref)
        # Annealed Langevin (VE): NCSN's Algorithm 2 and replacement as a score transform.
        x0 = jr.uniform(jr.key(2), (n, 2), minval=-8.0, maxval=8.0)
        ladder = jnp.geomspace(10.0, 0.05, 10)
        lang = dict(ladder=ladder, step_size=jnp.asarray(2.5e-3), steps_per_level=50)
        t0 = time.perf_counter()
        x = sf.solve.annealed_langevin(
            ve, mix.noised(ve), x0, mask=known, observation=y, key=jr.key(3), **lang
        ).samples
        dt_ref = time.perf_counter() - t0
        summary(x, "NCSN Algorithm 2 (peer)", "annealed Langevin 10 x 50 (VE)", dt_ref, 500)
        rep = guidance.Replacement(mix.noised(ve), known, y)
        t0 = time.perf_counter()
        x = rep.fill(sf.solve.annealed_langevin(ve, rep, x0, key=jr.key(3), **lang).samples)
        summary(
            x,
            "replacement",
            "annealed Langevin 10 x 50 (VE)",
            time.perf_counter() - t0,
            500,
            dt_ref,
        )
        # The twisted diffusion sampler, on the ancestral chain.
        post = guidance.PosteriorSampling(mix.noised(vp), known, y)
        for steps in (100, 400):
            guidance.twisted_smc(
                post, n, grid=sf.solve.UniformGrid(steps), key=jr.key(0)
            ).samples.block_until_ready()
            t0 = time.perf_counter()
            res = guidance.twisted_smc(post, n, grid=sf.solve.UniformGrid(steps), key=jr.key(1))
            x = res.samples.block_until_ready()
            dt = time.perf_counter() - t0
            label = f"twisted SMC ({n} particles)"
            summary(x, label, f"ancestral, uniform {steps}", dt, steps, ess=float(res.ess[-1]))
            rows[-1]["log_evidence"] = float(res.log_evidence)
            rows[-1]["min_ess"] = float(res.ess.min())
            rows[-1]["num_resampled"] = int(res.num_resampled)
    out["inpainting"] = rows


def _diffusers_rescale_check(out):
    # diffusers' `rescale_noise_cfg` against ClassifierFreeGuidance(rescale_on="eps").
    try:
        import torch
        from diffusers.guiders.guider_utils import rescale_noise_cfg
    except ImportError:
        out["diffusers_rescale"] = "diffusers not installed"
        return
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import scoreflow as sf
    from scoreflow import analytic, guidance

    sde = sf.VPSDE()
    cm = cfg_mixture(jnp, analytic)
    model = cm.noised(sde, "eps")
    x = jr.normal(jr.key(4), (2,))
    t, w, phi = 0.3, 3.0, 0.7
    cond, unc = np.asarray(model(t, x, 0)), np.asarray(model(t, x, None))
    guided = cond + w * (cond - unc)
    theirs = rescale_noise_cfg(
        torch.tensor(guided[None]), torch.tensor(cond[None]), guidance_rescale=phi
    )
    ours = guidance.ClassifierFreeGuidance(model, 0, w, rescale=phi, rescale_on="eps")(t, x)
    # torch.std is the unbiased (n - 1) estimator, ours the population one; the ratio of
    # two stds is the same either way.
    err = float(np.max(np.abs(theirs.numpy()[0] - np.asarray(ours))))
    out["diffusers_rescale"] = dict(max_abs_difference=err)
    print("diffusers rescale_noise_cfg vs ours: max |diff| =", err)


def exact(args):
    import jax

    jax.config.update("jax_enable_x64", True)
    out = {}
    _diffusers_rescale_check(out)
    _kl_gap(args, out)
    _inpainting(args, out)
    path = os.path.join(args.out_dir, "guidance_exact.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


# ---------------------------------------------------------------- the digits

EVENT = (1, 8, 8)
HALF_BIN = 1.0 / 17  # half the width of a digits bin in [-1, 1]
W_DIGITS = (0.0, 0.5, 1.0, 2.0, 4.0)
CG_SCALES = (1.0, 2.0, 4.0, 8.0)
PER_CLASS = 100


def _dequantised_labelled():
    import jax.numpy as jnp
    import jax.random as jr

    from scoreflow import data

    x = data.digits("train", dtype=jnp.float32)
    y = data.digits_labels("train")

    def draw(batch_size, *, key):
        k_idx, k_u = jr.split(key)
        idx = jr.randint(k_idx, (batch_size,), 0, x.shape[0])
        u = jr.uniform(k_u, (batch_size, *x.shape[1:]), jnp.float32, -HALF_BIN, HALF_BIN)
        return x[idx] + u, y[idx]

    return draw


def _build(kind):
    import jax.random as jr

    import scoreflow as sf
    from scoreflow import models, nn

    sde = sf.VPSDE(t_min=1e-5)
    if kind == "conditional":
        net = nn.TimeMLP(EVENT, width=512, depth=4, num_classes=10, key=jr.key(0))
        return models.ConditionalScoreSDE(
            sde, net, parameterisation="eps", event_shape=EVENT, num_classes=10, label_dropout=0.1
        )
    net = nn.TimeMLP(EVENT, width=256, depth=3, out_size=10, key=jr.key(1))
    return models.NoisyClassifier(sde, net, num_classes=10, event_shape=EVENT)


def _train(kind, steps, runs):
    import equinox as eqx
    import jax.random as jr

    from scoreflow import train

    path = os.path.join(runs, f"guidance_{kind}.eqx")
    model = _build(kind)
    if os.path.exists(path):
        return eqx.tree_deserialise_leaves(path, model), None
    t0 = time.perf_counter()
    res = train.fit(
        model,
        _dequantised_labelled(),
        num_steps=steps,
        batch_size=128,
        optimizer=train.default_optimizer(1e-3, num_steps=steps, warmup_steps=500),
        checkpoint=path + ".ckpt",
        checkpoint_every=1000,
        key=jr.key(10),
    )
    seconds = time.perf_counter() - t0
    eqx.tree_serialise_leaves(path, res.ema_model)
    return res.ema_model, seconds


def digits(args):
    import diffrax as dfx
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import scoreflow as sf
    from scoreflow import data, guidance, metrics
    from scoreflow.evaluation import quantise

    runs = os.path.join(args.out_dir, "digits_runs")
    os.makedirs(runs, exist_ok=True)
    model, train_s = _train("conditional", args.steps, runs)
    clf, clf_s = _train("classifier", args.steps // 2, runs)
    sde = model.sde
    test = data.digits("test", dtype=jnp.float32)
    test_y = data.digits_labels("test")
    out = dict(train_seconds=train_s, classifier_train_seconds=clf_s, steps=args.steps)
    # The noisy classifier's accuracy on noised test digits, by noise level.
    acc = {}
    for t in (0.01, 0.2, 0.5, 0.8):
        alpha, sigma = sde.marginal(jnp.asarray(t, jnp.float32))
        noisy = alpha * test + sigma * jr.normal(jr.key(5), test.shape, jnp.float32)
        pred = jnp.argmax(jax.vmap(lambda x: clf(t, x))(noisy), -1)
        acc[str(t)] = float(jnp.mean(pred == test_y))
    out["classifier_accuracy_by_t"] = acc
    print("noisy classifier accuracy by t:", acc)

    ode = dict(solver=dfx.Heun(), grid=sf.solve.KarrasGrid(32))
    labels = jnp.repeat(jnp.arange(10), PER_CLASS)

    def cfg(y, w):
        return guidance.ClassifierFreeGuidance(model, y, w)

    def classifier_guided(y, w):
        return guidance.ClassifierGuidance(model, clf, y, w)

    @eqx.filter_jit
    def per_class(make, scale, key):
        # One compilation per method: the scale is traced, the labels vmapped.
        def one(y, k):
            return sf.sample(sde, make(y, scale), (PER_CLASS, *EVENT), key=k, **ode).samples

        return jax.vmap(one)(jnp.arange(10), jr.split(key, 10)).reshape(-1, *EVENT)

    rows = []

    def score(name, param, x, seconds):
        bad = int(jnp.sum(~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), -1)))
        xq = quantise(jnp.nan_to_num(x))
        kid = metrics.kid_digits(xq, test, key=jr.key(7))
        row = dict(
            guidance=name,
            scale=param,
            accuracy=float(metrics.digits_accuracy(xq, labels)),
            fd=float(metrics.fd_digits(xq, test)),
            kid=float(kid.value),
            kid_se=float(kid.stderr),
            nan=bad,
            seconds=seconds,
        )
        rows.append(row)
        print(
            f"{name:18s} {param:4.1f} acc {row['accuracy']:.3f} FD {row['fd']:.2f} "
            f"KID {1e3 * row['kid']:.1f} ({seconds:.1f} s)"
        )
        return xq

    grids = {}
    for w in W_DIGITS:
        t0 = time.perf_counter()
        x = per_class(cfg, jnp.asarray(w, jnp.float32), jr.key(20))
        x.block_until_ready()
        grids[f"cfg {w}"] = score("classifier-free", w, x, time.perf_counter() - t0)
    for s_ in CG_SCALES:
        t0 = time.perf_counter()
        x = per_class(classifier_guided, jnp.asarray(s_, jnp.float32), jr.key(20))
        x.block_until_ready()
        grids[f"classifier {s_}"] = score("classifier", s_, x, time.perf_counter() - t0)
    # The unconditional model (null label), its accuracy against the same labels is chance.
    t0 = time.perf_counter()
    x = sf.sample(sde, model, (10 * PER_CLASS, *EVENT), key=jr.key(21), **ode).samples
    score("none (null label)", 0.0, x, time.perf_counter() - t0)
    out["guidance"] = rows
    _plot_digit_rows(
        {k: grids[k] for k in ("cfg 0.0", "cfg 1.0", "cfg 4.0", "classifier 4.0")},
        os.path.join(args.out_dir, "guidance_digits.png"),
    )
    out["inpainting"] = _inpaint_digits(model, test, test_y, args.out_dir)
    path = os.path.join(args.out_dir, "guidance_digits.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


def _plot_digit_rows(grids, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = (len(grids) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(grids) :]:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, grids.items()):
        x = np.asarray(x).reshape(10, PER_CLASS, 8, 8)[:, :4]
        tiles = np.concatenate([np.concatenate(list(col), 0) for col in x], 1)
        ax.imshow(tiles, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(f"{name}: columns are the classes 0-9", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


def _design_noise_cap(model, mask):
    """The largest noise level at which the model's Tweedie covariance is nearly PSD.

    On 8 *training* images (the design set; nothing of the test split): for noise levels
    sigma/alpha on a log grid, the eigenvalues of sigma^2/alpha * J_kk (J the Jacobian of
    the model's denoiser, k the known pixels) at a noised image; the cap is the largest
    level below which every image's most negative eigenvalue is within 10 % of its
    largest (an exact posterior covariance has none).
    """
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    from scoreflow import data

    sde = model.sde
    images = data.digits("train", dtype=jnp.float32)[:8]
    known = np.flatnonzero(np.asarray(mask).reshape(-1))
    levels = np.geomspace(0.05, 100.0, 25)
    ratios = []
    for level in levels:
        # Invert sigma/alpha = level through the log-SNR: lambda = -2 log(level).
        t = sde.t_from_log_snr(jnp.asarray(-2 * np.log(level), jnp.float32))
        alpha, sigma = sde.marginal(t)
        worst = 0.0
        for i, x0 in enumerate(images):
            xt = alpha * x0 + sigma * jr.normal(jr.key(i), x0.shape, jnp.float32)
            jac = jax.jacfwd(lambda v: model.x0(t, v.reshape(x0.shape)).reshape(-1))(xt.reshape(-1))
            c = np.asarray((sigma**2 / alpha) * 0.5 * (jac + jac.T))[np.ix_(known, known)]
            lam = np.linalg.eigvalsh(c)
            worst = max(worst, float(-lam.min() / lam.max()))
        ratios.append(worst)
    ok = [lv for lv, r in zip(levels, ratios) if r <= 0.1]
    below = [lv for lv in ok if all(r <= 0.1 for lev, r in zip(levels, ratios) if lev <= lv)]
    cap = float(max(below)) if below else float(levels[0])
    return cap, dict(levels=levels.tolist(), worst_negative_ratio=ratios)


def _inpaint_digits(model, test, test_y, out_dir):
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import scoreflow as sf
    from scoreflow import guidance, metrics
    from scoreflow.evaluation import quantise

    sde = model.sde
    n_img, n_draw = 100, 8
    mask = jnp.zeros(EVENT, bool).at[:, :4, :].set(True)  # the top half is given
    truth = test[:n_img]
    var = float(jnp.var(test))  # per-pixel data variance, PiGDM's s^2
    # throw=False: a method whose solve fails is reported with its non-finite count.
    sde_opts = dict(method="sde", grid=sf.solve.LogSNRGrid(200), throw=False)
    cap, design = _design_noise_cap(model, mask)
    print(f"posterior term below noise level {cap:.3g} (design on training images)")
    methods = {
        "replacement": lambda obs: guidance.Replacement(model, mask, obs),
        "posterior sampling (Tweedie), every level": lambda obs: guidance.PosteriorSampling(
            model, mask, obs
        ),
        "posterior sampling (PiGDM), below the cap": lambda obs: guidance.PosteriorSampling(
            model, mask, obs, covariance=var, max_noise_level=cap
        ),
        "posterior sampling (Tweedie), below the cap": lambda obs: guidance.PosteriorSampling(
            model, mask, obs, max_noise_level=cap
        ),
    }
    rows, pics = [], {}
    for name, make in methods.items():

        @jax.jit
        def run(obs, key):
            tr = make(obs)
            x = sf.sample(sde, tr, (n_draw, *EVENT), key=key, **sde_opts).samples
            return tr.fill(x)

        t0 = time.perf_counter()
        draws = jnp.stack([run(truth[i], jr.key(100 + i)) for i in range(n_img)])
        finite = jnp.all(jnp.isfinite(draws.reshape(n_img, n_draw, -1)), -1)
        draws = quantise(jnp.where(finite[..., None, None, None], draws, 0.0))
        seconds = time.perf_counter() - t0
        # Errors over the finite draws only (their count is reported).
        w = finite.astype(draws.dtype)[..., None, None, None]
        sq = jnp.where(w > 0, (draws[:, :, :, 4:, :] - truth[:, None, :, 4:, :]) ** 2, 0.0)
        err_single = jnp.sqrt(jnp.sum(w * sq) / (jnp.sum(w) * 32))
        mean = jnp.sum(jnp.where(w > 0, draws, 0.0), 1) / jnp.maximum(jnp.sum(w, 1), 1)
        err_mean = jnp.sqrt(jnp.mean((mean[:, :, 4:, :] - truth[:, :, 4:, :]) ** 2))
        to_levels = 17 / 2  # one unit of [-1, 1] is 8.5 pixel levels
        acc = metrics.digits_accuracy(draws[:, 0], test_y[:n_img])
        row = dict(
            method=name,
            rmse_single_levels=float(err_single * to_levels),
            rmse_mean_levels=float(err_mean * to_levels),
            accuracy_of_inpainted=float(acc),
            non_finite_draws=int(jnp.sum(~finite)),
            seconds=seconds,
        )
        rows.append(row)
        pics[name] = np.asarray(draws[:12, 0])
        print(
            f"inpainting {name:30s} RMSE (levels) single {row['rmse_single_levels']:.2f} "
            f"mean-of-8 {row['rmse_mean_levels']:.2f} acc {row['accuracy_of_inpainted']:.3f} "
            f"({seconds:.0f} s)"
        )
    rows.append(dict(method="design: noise-level cap", cap=cap, diagnostic=design))
    fig, axes = plt.subplots(2 + len(pics), 1, figsize=(9, 1.1 * (2 + len(pics)) + 0.4))
    masked = np.where(np.asarray(mask), np.asarray(truth[:12]), -1.0)
    for ax, (name, x) in zip(
        axes, [("truth", truth[:12]), ("given (top half)", masked), *pics.items()]
    ):
        ax.imshow(np.concatenate(list(np.asarray(x)[:, 0]), 1), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = os.path.join(out_dir, "guidance_inpainting_digits.png")
    fig.savefig(path, dpi=110)
    print("wrote", path)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    e = sub.add_parser("exact")
    e.add_argument("--num", type=int, default=4000)
    e.add_argument("--num-kl", type=int, default=4000)
    e.add_argument("--out-dir", default=HERE)
    d = sub.add_parser("digits")
    d.add_argument("--steps", type=int, default=12000)
    d.add_argument("--out-dir", default=HERE)
    args = p.parse_args()
    if args.part == "exact":
        exact(args)
    else:
        digits(args)


if __name__ == "__main__":
    main()

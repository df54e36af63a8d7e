"""Latent-variable models on the digits: VAE, IWAE, hierarchical VAE and VDM.

Two measurements (see benchmarks/RESULTS.md, "Latent-variable models (issue 13)"):

    python benchmarks/latent_variable_models.py digits [--steps N] [--k-eval K]
    python benchmarks/latent_variable_models.py binarised [--steps N] [--k-eval K]
    python benchmarks/latent_variable_models.py table      # the binarised rows, paired
    python benchmarks/latent_variable_models.py ring [--steps N]
    python benchmarks/latent_variable_models.py digits-design --steps 2000 --k-eval 500
    python benchmarks/latent_variable_models.py vdm-ddpm --validate-every 500

`digits`: the 17-level digits by the digits protocol (`scoreflow.evaluation.evaluate_digits`),
with the budget of the digits table (12 000 steps at batch 128, AdamW 1e-3, 500 warm-up
steps then cosine decay, clipping at 1, EMA 0.999; `--steps` reduces it): a VAE with a
discretised-logistic-mixture decoder (trained on the ELBO), the same trained on the IWAE
bound (K = 5), a two-layer top-down hierarchical VAE, and a VDM with a learned schedule.
VAE-family bits/dim are the IWAE-K estimate (`--k-eval`, default 5000), the VDM's its
bound and its probability-flow likelihood (Hutchinson, one probe, rtol = atol = 1e-4).

`binarised`: the digits binarised at level 8 (pixel >= 8 -> 1, one static binarisation of
the raw levels), a Bernoulli decoder, trained with K = 1, 5, 50 and a two-layer model
(IWAE K = 50, Burda et al.'s best architecture), each scored by the IWAE-5000 estimate of
the test NLL in nats (mean over the 359 test images, with its standard error over images).
`--train-nll` also scores as many training images with the same estimator (the
generalisation gap); `--early-stop` holds out a fifth of the training images and scores
the model of the lowest validation loss (every `--validate-every` steps); `--tag` keeps
such rows apart from the reported ones (`binarised/<name><tag>`). Named with `--names`
only, two more two-layer rows with the other inference networks (`two_layer_k50_bottom_up`,
Burda et al.'s own, and `two_layer_k50_residual`).

`digits-design`: the VAE and hierarchical-VAE (and VDM) variants on a validation split
of the training images (a fifth held out), scored by IWAE-K on the held-out images and
on as many fitted ones (`fit_bpd`: the generalisation gap); `--early-stop`,
`--weight-decay` and `--width` are recorded in the rows' keys.

`ring`: the ring of eight Gaussians (`data.ring_mixture`, 20 000 training points): VAE,
IWAE (K = 5, 50) and a two-layer hierarchical VAE with a learned-variance Gaussian decoder
and 2-d latents, scored by `evaluation.evaluate_2d` (KL(data || model) with the model's
IWAE-K estimate, an upper bound in expectation; MMD; modes), and for the one-layer models
also with $\log p(x) = \log \int p(x \mid z) p(z) dz$ by quadrature on a grid of $z$:
a check of the estimate that does not use the encoder.

`vdm-ddpm`: the VDM against the digits table's DDPM on the same four fifths of the
training images at the table's budget, each scored on the test images at its last step
and at the checkpoint of least validation loss / validation bits/dim (`cmd_vdm_ddpm`).

Rows go to `latent_variable_models_{digits,binarised,ring,digitsdesign,vdmddpm}.json`; sample grids
`lvm_digits_<name>.png`.
"""

import argparse
import json
import math
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import data, evaluation, models, nn, train

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "latent_variable_models_{}.json"  # per measurement: digits, binarised
F32 = jnp.float32
EVENT = (1, 8, 8)
BATCH = 128
WIDTH = 512  # `--width` changes it (the reduced runs)


def _record(key, value):
    out = pathlib.Path(str(OUT).format(key.split("/")[0]))
    rows = json.loads(out.read_text()) if out.exists() else {}
    rows[key] = value
    out.write_text(json.dumps(rows, indent=1))


def _fit(model, x, steps, *, optimizer=None, ema=0.999, key=1, steps_per_chunk=None, **kwargs):
    opt = optimizer or train.default_optimizer(
        1e-3, num_steps=steps, warmup_steps=min(500, steps // 10)
    )
    t0 = time.perf_counter()
    res = train.fit(
        model,
        x,
        num_steps=steps,
        batch_size=BATCH,
        optimizer=opt,
        ema_decay=ema,
        progress=False,
        key=jr.key(key),
        steps_per_chunk=steps_per_chunk or min(500, steps),
        **kwargs,
    )
    return res, time.perf_counter() - t0


def _fit_early_stopped(model, x, val, steps, every, **kwargs):
    """`_fit` validating every `every` steps: `(best model, seconds, what to record)`.

    The best model is that of the least validation loss (the model's own training bound;
    EMA weights where kept).
    """
    res, seconds = _fit(
        model, x, steps, validation=val, validate_every=every, steps_per_chunk=every, **kwargs
    )
    seen = np.asarray(res.history["validation_step"])
    loss = np.asarray(res.history["validation_loss"])
    extra = {
        "early_stop": f"least validation loss (its training bound) every {every} steps "
        f"on {val.shape[0]} held-out training images",
        "best_step": int(seen[np.argmin(loss)]),
        "validation_loss": [round(float(u), 4) for u in loss],
        "validation_step": [int(u) for u in seen],
    }
    return res.best_model, seconds, extra


def digits_models(steps):
    head = nn.DiscretisedLogisticMixture(data.DIGITS_LEVELS, 5)
    k = jr.key(0)
    vae = lambda n: models.VAE(EVENT, 32, head=head, width=WIDTH, depth=2, num_samples=n, key=k)
    hvae = models.HierarchicalVAE(
        EVENT,
        (32, 16),
        head=head,
        width=WIDTH,
        depth=1,
        warmup_steps=steps // 10,
        free_bits=0.1,
        key=k,
    )
    net = nn.TimeMLP(EVENT, width=WIDTH, depth=4, embedding_scale=16.0, key=k)
    sde = sf.sde.LearnedVPSDE(VDM_GAMMA_MIN, 5.0, nn.MonotoneMLP(256, key=jr.key(1)))
    vdm = models.VDM(net, event_shape=EVENT, sde=sde, levels=data.DIGITS_LEVELS)
    return {"vae": vae(1), "iwae5": vae(5), "hvae": hvae, "vdm": vdm}


TITLES = {
    "vae": "VAE (DLM decoder, ELBO)",
    "iwae5": "IWAE (K = 5)",
    "hvae": "hierarchical VAE (2 layers, top-down)",
    "vdm": "VDM (learned schedule)",
}


def cmd_digits(args):
    x = data.digits("train")
    for i, (name, model) in enumerate(digits_models(args.steps).items()):
        if args.names and name not in args.names:
            continue
        optimizer = None
        if name == "hvae":
            optimizer = train.skip_large_updates(
                train.default_optimizer(1e-3, num_steps=args.steps, warmup_steps=500), 400.0
            )
        res, seconds = _fit(model, x, args.steps, optimizer=optimizer)
        trained = res.ema_model
        options = {"num_samples": args.k_eval, "chunk_size": 250} if name != "vdm" else {}
        report = evaluation.evaluate_digits(
            trained,
            likelihood="bound",
            name=TITLES[name],
            key=jr.fold_in(jr.key(10), i),
            num_samples=args.num_samples,
            log_prob_options=options,
            train_seconds=seconds,
            sample_options={} if name != "vdm" else {"grid": sf.solve.UniformGrid(256)},
            png=str(HERE / f"lvm_digits_{name}.png"),
        )
        rows = [report.asdict()]
        if name == "vdm":
            pf = evaluation.evaluate_digits(
                trained,
                name="VDM (probability flow)",
                key=jr.fold_in(jr.key(10), i),
                num_samples=args.num_samples,
                likelihood="exact",
                log_prob_options={"rtol": 1e-4, "atol": 1e-4, "trace": sf.solve.Hutchinson(1)},
                sample_options={"grid": sf.solve.UniformGrid(256)},
                train_seconds=seconds,
            )
            rows.append(pf.asdict())
        extra = {
            "steps": args.steps,
            "width": WIDTH,
            "final_loss": float(np.mean(res.losses[-200:])),
        }
        if name == "hvae":
            extra["skipped_updates"] = int(res.state.opt_state.num_skipped)
        if name == "vdm" and args.bound_draws > 1:
            # The same expected bound, its per-image draw noise averaged away: the
            # protocol's figure takes one draw of each term per image.
            extra.update(_vdm_bound_draws(trained, args.bound_draws))
            print("VDM bound, mean of draws per image:", extra, flush=True)
        _record(f"digits/{name}", {"reports": rows, **extra, "k_eval": args.k_eval})
        for r in rows:
            print(evaluation.digits_table([evaluation.DigitsReport(**r)]), extra, flush=True)


def _vdm_bound_draws(model, draws, images=None):
    # Integer levels (the test images by default): the bound of the probability mass, as
    # the protocol reports it.
    test = images if images is not None else jnp.asarray(data.digits_raw("test"))
    test = test.reshape(-1, *EVENT)
    bound = eqx.filter_jit(
        lambda m, x, key: jnp.mean(jax.vmap(lambda k: m.elbo(x, key=k))(jr.split(key, draws)), 0)
    )
    v = np.concatenate(
        [
            np.asarray(bound(model, test[i : i + 32], jr.fold_in(jr.key(11), i)))
            for i in range(0, test.shape[0], 32)
        ]
    )
    bpd = -v / (math.prod(EVENT) * math.log(2))
    return {
        "bound_draws": draws,
        "bound_draws_bpd": float(bpd.mean()),
        "bound_draws_stderr": float(bpd.std(ddof=1) / math.sqrt(bpd.size)),
        "per_image_bpd": [round(float(b), 5) for b in bpd],
    }


# The hierarchical VAE's settings, chosen on a validation split of the training images
# (`digits-design`), never on the test images: (inference, depth, warm-up share of the
# steps, free bits).
HVAE_DESIGN = {
    "hvae_d1_fb0.1": ("top-down", 1, 0.1, 0.1),
    "hvae_d2_fb0.1": ("top-down", 2, 0.1, 0.1),
    "hvae_d2_fb0": ("top-down", 2, 0.0, 0.0),
    "hvae_d2_warm0.3": ("top-down", 2, 0.3, 0.1),
    "hvae_res_d2_fb0.1": ("residual", 2, 0.1, 0.1),
    "hvae_res_d2_warm0.3_fb0.5": ("residual", 2, 0.3, 0.5),
    "hvae_res_d1_fb0.1": ("residual", 1, 0.1, 0.1),
    "hvae_res_d1_fb0": ("residual", 1, 0.0, 0.0),
    "hvae_res_d1_warm0.3": ("residual", 1, 0.3, 0.1),
}
# The same, started as the VAE (`zero_init`: the prior networks' output layers zero, so
# the upper layer is switched on by training); depth 2 is the VAE's own.
HVAE_ZERO_DESIGN = {
    "hvae_res_d2_zero": ("residual", 2, 0.0, 0.0),
    "hvae_res_d1_zero": ("residual", 1, 0.0, 0.0),
    "hvae_d2_zero": ("top-down", 2, 0.0, 0.0),
    "hvae_res_d2_zero_warm0.1": ("residual", 2, 0.1, 0.1),
}
# The VDM's initial gamma_min (it is learned, but slowly): VDM's -13.3 puts sigma_min at
# 1e-3, a hundredth of the digits' bin width 2/17, where the 8-bit images VDM was made for
# have bins of 2/256.
VDM_DESIGN = {f"vdm_gmin{g}": g for g in (-13.3, -10.0, -7.0, -5.0, -3.0)}
VDM_GAMMA_MIN = -5.0  # the least validation bound of VDM_DESIGN (2000 steps, width 256)
# What the eps network is conditioned on (`VDM(network_input=...)`) and the schedule's
# shape (a `MonotoneMLP`, or linear with learned end points as VDM's CIFAR-10 config),
# all from gamma_min = -5.
VDM_INPUT_DESIGN = {
    "vdm_gamma_in": ("gamma", True),
    "vdm_gamma_in_linear": ("gamma", False),
    "vdm_t_in_linear": ("t", False),
}
# Against overfitting, the network's width (and `--weight-decay`, for every model).
VDM_REG_DESIGN = {"vdm_w256": 256}


def cmd_digits_design(args):
    """Validation bits/dim (IWAE-K) of the VAE and hierarchical-VAE variants."""
    raw = np.asarray(data.digits_raw("train")).reshape(-1, *EVENT)
    perm = np.random.default_rng(0).permutation(raw.shape[0])
    n_val = raw.shape[0] // 5
    val, fit = jnp.asarray(raw[perm[:n_val]]), data.digits("train")[perm[n_val:]]
    head, k = nn.DiscretisedLogisticMixture(data.DIGITS_LEVELS, 5), jr.key(0)
    cases = {"vae": models.VAE(EVENT, 32, head=head, width=WIDTH, depth=2, key=k)}
    for name, (inference, depth, warm, fb) in HVAE_DESIGN.items():
        cases[name] = models.HierarchicalVAE(
            EVENT,
            (32, 16),
            head=head,
            width=WIDTH,
            depth=depth,
            inference=inference,
            warmup_steps=int(warm * args.steps),
            free_bits=fb,
            key=k,
        )
    for name, (inference, depth, warm, fb) in HVAE_ZERO_DESIGN.items():
        cases[name] = models.HierarchicalVAE(
            EVENT,
            (32, 16),
            head=head,
            width=WIDTH,
            depth=depth,
            inference=inference,
            warmup_steps=int(warm * args.steps),
            free_bits=fb,
            zero_init=True,
            key=k,
        )
    for name, gmin in VDM_DESIGN.items():
        net = nn.TimeMLP(EVENT, width=WIDTH, depth=4, embedding_scale=16.0, key=k)
        sde = sf.sde.LearnedVPSDE(gmin, 5.0, nn.MonotoneMLP(256, key=jr.key(1)))
        cases[name] = models.VDM(net, event_shape=EVENT, sde=sde, levels=data.DIGITS_LEVELS)
    for name, (network_input, shaped) in VDM_INPUT_DESIGN.items():
        net = nn.TimeMLP(EVENT, width=WIDTH, depth=4, embedding_scale=16.0, key=k)
        shape = nn.MonotoneMLP(256, key=jr.key(1)) if shaped else None
        sde = sf.sde.LearnedVPSDE(VDM_GAMMA_MIN, 5.0, shape)
        cases[name] = models.VDM(
            net,
            event_shape=EVENT,
            sde=sde,
            levels=data.DIGITS_LEVELS,
            network_input=network_input,
        )
    for name, width in VDM_REG_DESIGN.items():
        net = nn.TimeMLP(EVENT, width=width, depth=4, embedding_scale=16.0, key=k)
        sde = sf.sde.LearnedVPSDE(VDM_GAMMA_MIN, 5.0, nn.MonotoneMLP(256, key=jr.key(1)))
        cases[name] = models.VDM(net, event_shape=EVENT, sde=sde, levels=data.DIGITS_LEVELS)
    estimate = eqx.filter_jit(
        lambda m, x, key: m.log_prob_estimate(x, num_samples=args.k_eval, chunk_size=250, key=key)
    )
    # The VDM's bound, one draw of each term, averaged over 16 draws per image.
    vdm_bound = eqx.filter_jit(
        lambda m, x, key: jnp.mean(jax.vmap(lambda k: m.elbo(x, key=k))(jr.split(key, 16)), 0)
    )
    for name, model in cases.items():
        if args.names and name not in args.names:
            continue
        optimizer = train.default_optimizer(
            1e-3,
            num_steps=args.steps,
            warmup_steps=min(500, args.steps // 10),
            weight_decay=args.weight_decay,
        )
        if name.startswith("hvae"):
            optimizer = train.skip_large_updates(optimizer, 400.0)
        if args.early_stop:
            val_floats = data.digits("train")[perm[:n_val]]
            scored, seconds, extra = _fit_early_stopped(
                model, fit, val_floats, args.steps, args.validate_every, optimizer=optimizer
            )
        else:
            res, seconds = _fit(model, fit, args.steps, optimizer=optimizer)
            scored, extra = res.ema_model, {}

        def score(images, scored=scored, name=name):
            v = np.concatenate(
                [
                    np.asarray(
                        vdm_bound(scored, images[i : i + 64], jr.fold_in(jr.key(7), i))
                        if name.startswith("vdm")
                        else estimate(scored, images[i : i + 64], jr.fold_in(jr.key(7), i)).value
                    )
                    for i in range(0, images.shape[0], 64)
                ]
            )
            return -v / (math.prod(EVENT) * math.log(2))

        bpd = score(val)
        # As many of the fitted images, by the same figure: the generalisation gap.
        fit_bpd = score(jnp.asarray(raw[perm[n_val : 2 * n_val]]))
        row = {
            "validation_bpd": float(bpd.mean()),
            "stderr": float(bpd.std(ddof=1) / math.sqrt(bpd.size)),
            "fit_bpd": float(fit_bpd.mean()),
            "per_image_bpd": [round(float(b), 5) for b in bpd],
            "train_seconds": seconds,
            "steps": args.steps,
            "k_eval": args.k_eval,
            "width": VDM_REG_DESIGN.get(name, WIDTH),
            "weight_decay": args.weight_decay,
            **extra,
        }
        suffix = (
            ("" if args.steps == 2000 else f"@{args.steps}")
            + ("/early_stop" if args.early_stop else "")
            + (f"/wd{args.weight_decay:g}" if args.weight_decay else "")
            + (f"/w{WIDTH}" if WIDTH != 256 and name not in VDM_REG_DESIGN else "")
        )
        _record(f"digitsdesign/{name}{suffix}", row)
        print(
            name,
            {
                a: b
                for a, b in row.items()
                if not a.startswith(("per_", "validation_loss", "validation_step"))
            },
            flush=True,
        )


def _digits_split():
    """`(fit floats, validation floats, validation levels)`: digits-design's fifth held out."""
    raw = np.asarray(data.digits_raw("train")).reshape(-1, *EVENT)
    perm = np.random.default_rng(0).permutation(raw.shape[0])
    n_val = raw.shape[0] // 5
    floats = data.digits("train")
    return floats[perm[n_val:]], floats[perm[:n_val]], jnp.asarray(raw[perm[:n_val]])


def _dequantised(x, *, key=None):
    """`x` plus uniform noise within its bins: a fixed draw (`key`) or a sampler."""
    half = 1.0 / data.DIGITS_LEVELS
    if key is not None:
        return x + jr.uniform(key, x.shape, x.dtype, -half, half)

    def draw(batch_size, *, key):
        k_idx, k_u = jr.split(key)
        idx = jr.randint(k_idx, (batch_size,), 0, x.shape[0])
        return x[idx] + jr.uniform(k_u, (batch_size, *x.shape[1:]), x.dtype, -half, half)

    return draw


def _bpd_per_image(model, name, raw, draws=64):
    """Per-image bits/dim of integer images `raw` by the digits protocol's figure.

    DDPM: its PF-ODE likelihood (Hutchinson, one probe, rtol = atol = 1e-4), uniformly
    dequantised; the VDM: its bound on the probability mass, the mean of `draws` draws
    of each term per image.
    """
    raw = jnp.asarray(raw).reshape(-1, *EVENT)
    if name == "vdm":
        return np.asarray(_vdm_bound_draws(model, draws, raw)["per_image_bpd"])
    import digits_table

    options = digits_table.log_prob_options("ddpm")
    fn = lambda y, *, key: model.log_prob(y.reshape(-1, *EVENT), key=key, **options)
    out = []
    for i in range(0, raw.shape[0], 128):
        res = sf.metrics.bits_per_dim(
            fn, raw[i : i + 128], levels=data.DIGITS_LEVELS, key=jr.fold_in(jr.key(12), i)
        )
        out.append(np.asarray(res.bits_per_dim, np.float64))
    return np.concatenate(out)


def cmd_vdm_ddpm(args):
    """VDM against DDPM at the digits table's budget, early-stopped and at the last step.

    Both train on the same four fifths of the training images with the digits table's
    budget (`--steps`, default 12 000, AdamW 1e-3, 500 warm-up steps, cosine, EMA 0.999).
    Three models of each are scored on the test images: `last` (the budget's end),
    `loss_stop` (least validation loss on the held-out fifth, every `--validate-every`
    steps: the VDM's own bound, DDPM's L_simple on one fixed dequantisation) and
    `likelihood_stop` (least validation bits/dim by the protocol's figure, every
    `--likelihood-every` steps: the VDM's bound with 16 draws, DDPM's PF-ODE likelihood),
    the fair rule for DDPM, whose L_simple is not a likelihood. Test bits/dim: see
    `_bpd_per_image`; differences paired over the 359 test images.
    """
    import digits_table

    fit, val, val_raw = _digits_split()
    test_raw = jnp.asarray(data.digits_raw("test"))
    every, seg = args.validate_every, args.likelihood_every
    if seg % every:
        raise ValueError("`--likelihood-every` must be a multiple of `--validate-every`.")
    per_image, rows = {}, {}
    builds = (
        ("vdm", digits_models(args.steps)["vdm"], fit, val),
        ("ddpm", digits_table.build("ddpm"), _dequantised(fit), _dequantised(val, key=jr.key(13))),
    )
    for name, model, x, v in builds:
        opt = train.default_optimizer(1e-3, num_steps=args.steps, warmup_steps=500)
        state, seconds, seen, loss = None, 0.0, [], []
        loss_best, lik_best, lik_seen = (np.inf, None, 0), (np.inf, None, 0), []
        for end in range(seg, args.steps + 1, seg):
            t0 = time.perf_counter()
            res = train.fit(
                model,
                x,
                num_steps=end,
                batch_size=BATCH,
                optimizer=opt,
                ema_decay=0.999,
                progress=False,
                key=jr.key(1),
                steps_per_chunk=every,
                validation=v,
                validate_every=every,
                state=state,
            )
            seconds += time.perf_counter() - t0
            state = res.state
            s_new = np.asarray(res.history["validation_step"])
            l_new = np.asarray(res.history["validation_loss"])
            keep = s_new > (seen[-1] if seen else 0)
            seen += [int(u) for u in s_new[keep]]
            loss += [float(u) for u in l_new[keep]]
            if float(np.min(l_new[keep])) < loss_best[0]:
                i = int(np.argmin(np.where(keep, l_new, np.inf)))
                loss_best = (float(l_new[i]), res.best_model, int(s_new[i]))
            v_bpd = float(np.mean(_bpd_per_image(res.ema_model, name, val_raw, draws=16)))
            lik_seen.append((end, round(v_bpd, 4)))
            print(name, end, "validation bits/dim", v_bpd, flush=True)
            if v_bpd < lik_best[0]:
                lik_best = (v_bpd, res.ema_model, end)
        for when, scored, step in (
            ("loss_stop", loss_best[1], loss_best[2]),
            ("likelihood_stop", lik_best[1], lik_best[2]),
            ("last", res.ema_model, args.steps),
        ):
            bpd = _bpd_per_image(scored, name, test_raw)
            per_image[name, when] = bpd
            rows[f"{name}/{when}"] = {
                "test_bpd": float(bpd.mean()),
                "stderr": float(bpd.std(ddof=1) / math.sqrt(bpd.size)),
                "step": step,
                "train_seconds": seconds,
            }
            print(name, when, rows[f"{name}/{when}"], flush=True)
        rows[f"{name}/validation"] = {
            "validation_step": seen,
            "validation_loss": [round(u, 4) for u in loss],
            "validation_bpd": lik_seen,
        }
    for when in ("loss_stop", "likelihood_stop", "last"):
        d = per_image["vdm", when] - per_image["ddpm", when]
        rows[f"vdm-ddpm/{when}"] = {
            "difference": float(d.mean()),
            "stderr": float(d.std(ddof=1) / math.sqrt(d.size)),
        }
        print("VDM - DDPM", when, rows[f"vdm-ddpm/{when}"], flush=True)
    rows["setup"] = {
        "steps": args.steps,
        "validate_every": every,
        "likelihood_every": seg,
        "fit_images": int(fit.shape[0]),
        "validation_images": int(val.shape[0]),
        "vdm": f"digits_models' vdm (width {WIDTH})",
        "ddpm": "digits_table.build('ddpm'), dequantised training draws",
    }
    _record(f"vdmddpm/{args.steps}", rows)


def binarised(split):
    return (np.asarray(data.digits_raw(split)).reshape(-1, 64) >= 8).astype(np.float64)


def _binarised_nll(model, images, k_eval):
    """Per-image IWAE-`k_eval` estimate of -log p(x) in nats (the same key per position)."""
    estimate = eqx.filter_jit(
        lambda m, x, k: m.log_prob_estimate(x, num_samples=k_eval, chunk_size=250, key=k)
    )
    values = []
    for i in range(0, images.shape[0], 64):
        est = estimate(model, images[i : i + 64], jr.fold_in(jr.key(3), i))
        values.append(np.asarray(est.value))
    return -np.concatenate(values)


def cmd_binarised(args):
    x, test = jnp.asarray(binarised("train")), jnp.asarray(binarised("test"))
    val = None
    if args.early_stop:
        # A fifth of the training images held out (the digits design's permutation); the
        # model of the lowest validation loss (its own training bound) is the one scored.
        perm = np.random.default_rng(0).permutation(x.shape[0])
        n_val = x.shape[0] // 5
        val, x = x[perm[:n_val]], x[perm[n_val:]]
    head, k = nn.Bernoulli(), jr.key(0)
    cases = {
        "k1": models.VAE((64,), 16, head=head, width=WIDTH, depth=1, num_samples=1, key=k),
        "k5": models.VAE((64,), 16, head=head, width=WIDTH, depth=1, num_samples=5, key=k),
        "k50": models.VAE((64,), 16, head=head, width=WIDTH, depth=1, num_samples=50, key=k),
        "two_layer_k50": models.HierarchicalVAE(
            (64,), (16, 8), head=head, width=WIDTH, depth=1, num_samples=50, key=k
        ),
        # Burda et al.'s own two-layer inference, q(z_1 | x) q(z_2 | z_1), and NVAE's
        # residual one; which two-layer row is reported is chosen by validation loss.
        "two_layer_k50_bottom_up": models.HierarchicalVAE(
            (64,),
            (16, 8),
            head=head,
            width=WIDTH,
            depth=1,
            num_samples=50,
            inference="bottom-up",
            key=k,
        ),
        "two_layer_k50_residual": models.HierarchicalVAE(
            (64,),
            (16, 8),
            head=head,
            width=WIDTH,
            depth=1,
            num_samples=50,
            inference="residual",
            key=k,
        ),
        # The cheaper two-layer row of a reduced run (IWAE K = 5).
        "two_layer_k5": models.HierarchicalVAE(
            (64,), (16, 8), head=head, width=WIDTH, depth=1, num_samples=5, key=k
        ),
    }
    for name, model in cases.items():
        if (args.names and name not in args.names) or (
            not args.names and (name == "two_layer_k5" or name.startswith("two_layer_k50_"))
        ):
            continue
        if val is None:
            res, seconds = _fit(model, x, args.steps, ema=None)
            fitted, extra = res.model, {}
        else:
            fitted, seconds, extra = _fit_early_stopped(
                model, x, val, args.steps, args.validate_every, ema=None
            )
            extra["fit_images"] = int(x.shape[0])
        t0 = time.perf_counter()
        v = _binarised_nll(fitted, test, args.k_eval)
        row = {
            "test_nll_nats": float(v.mean()),
            "stderr": float(v.std(ddof=1) / np.sqrt(v.size)),
            "train_seconds": seconds,
            "eval_seconds": time.perf_counter() - t0,
            "steps": args.steps,
            "k_eval": args.k_eval,
            "binarisation": "static, raw level >= 8 -> 1",
            "width": WIDTH,
            # Per test image, for paired differences between rows (same images, same key).
            "per_image_nll": [round(float(u), 5) for u in v],
            **extra,
        }
        if args.train_nll:
            # The same estimator on as many training images as there are test images:
            # the generalisation gap of each row.
            u = _binarised_nll(fitted, x[: test.shape[0]], args.k_eval)
            row["train_nll_nats"] = float(u.mean())
            row["train_stderr"] = float(u.std(ddof=1) / np.sqrt(u.size))
            row["per_train_image_nll"] = [round(float(a), 5) for a in u]
        _record(f"binarised/{name}{args.tag}", row)
        print(
            name, {k: w for k, w in row.items() if not k.startswith(("per_", "valid"))}, flush=True
        )


def cmd_table(args):
    """The binarised rows as markdown, with paired differences between consecutive rows."""
    rows = json.loads(pathlib.Path(str(OUT).format("binarised")).read_text())
    names = [
        n for n in ("k1", "k5", "k50", "two_layer_k50", "two_layer_k5") if f"binarised/{n}" in rows
    ]
    print("| model | test NLL (nats) | vs previous row (paired) | train s | eval s |")
    print("|---|---|---|---|---|")
    prev = None
    for n in names:
        r = rows[f"binarised/{n}"]
        v = np.asarray(r["per_image_nll"])
        diff = "—"
        if prev is not None:
            d = v - prev
            diff = f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(d.size):.3f}"
        print(
            f"| {n} | {r['test_nll_nats']:.3f} ± {r['stderr']:.3f} | {diff} "
            f"| {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |"
        )
        prev = v


def quadrature_log_prob(model, x, half_width=6.0, num=301, chunk=256):
    """$\log p(x)$ of a VAE with a 2-d latent by the trapezoid-free grid sum over z."""
    g = jnp.linspace(-half_width, half_width, num, dtype=x.dtype)
    z = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_pz = -0.5 * jnp.sum(z**2, -1) - jnp.log(2 * jnp.pi)
    params = model.decode(z)  # (num^2, 2, num_params)
    log_cell = 2 * jnp.log(g[1] - g[0])

    @jax.jit
    def one_chunk(xc):
        lp = jnp.sum(jax.vmap(lambda xi: model.head.log_prob(params, xi[None]))(xc), -1)
        return jax.nn.logsumexp(lp + log_pz[None], axis=1) + log_cell

    return jnp.concatenate([one_chunk(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def design_mixture_2d():
    """A 2-d design mixture, not the ring: six unequal Gaussians on a 3 x 2 grid."""
    r = np.random.default_rng(5)
    means = 4.0 * np.stack(np.meshgrid([-1.0, 0.0, 1.0], [-0.5, 0.5]), -1).reshape(-1, 2)
    w = r.dirichlet(np.full(6, 2.0))
    var = np.full((6, 2), 0.4**2)
    return sf.GaussianMixture(jnp.asarray(w, F32), jnp.asarray(means, F32), jnp.asarray(var, F32))


def cmd_ring(args):
    # `--design`: the same models on `design_mixture_2d`, where the hierarchical VAE's
    # settings are compared (rows under "ringdesign/").
    ring = design_mixture_2d() if args.design else data.ring_mixture(F32)
    tag = "ringdesign" if args.design else "ring"
    x = ring.sample(20_000, key=jr.key(0))
    head, k = nn.Gaussian(learn_variance=True), jr.key(0)
    vae = lambda n: models.VAE((2,), 2, head=head, width=WIDTH, depth=2, num_samples=n, key=k)
    hvae = lambda inference, warm, fb: models.HierarchicalVAE(
        (2,),
        (2, 2),
        head=head,
        width=WIDTH,
        depth=2,
        inference=inference,
        warmup_steps=int(warm * args.steps),
        free_bits=fb,
        key=k,
    )
    cases = {
        "vae": vae(1),
        "iwae5": vae(5),
        "iwae50": vae(50),
        # The plain ELBO collapses both top-down posteriors to their priors on these data
        # (every layer's KL ~ 1e-6 nats after 300 steps): warm-up and free bits.
        "hvae": hvae("top-down", 1 / 3, 0.5),
        "hvae_residual": hvae("residual", 1 / 3, 0.5),
        "hvae_plain": hvae("top-down", 0.0, 0.0),
    }
    for i, (name, model) in enumerate(cases.items()):
        if args.names and name not in args.names:
            continue
        res, seconds = _fit(model, x, args.steps, ema=0.999)
        trained = res.ema_model
        rep = evaluation.evaluate_2d(
            trained,
            ring,
            name=name,
            num_samples=2000,
            num_eval=args.num_eval,
            log_prob_options={"num_samples": args.k_eval, "chunk_size": 250},
            key=jr.fold_in(jr.key(20), i),
        )
        row = {**rep.asdict(), "train_seconds": seconds, "steps": args.steps, "width": WIDTH}
        if isinstance(trained, models.VAE):
            # The same evaluation points as evaluate_2d's (its first key split).
            x_eval = ring.sample(args.num_eval, key=jr.split(jr.fold_in(jr.key(20), i), 5)[0])
            log_q = quadrature_log_prob(trained, x_eval)
            kl = sf.metrics.kl_divergence(ring.log_prob(x_eval), log_q)
            row["kl_quadrature"], row["kl_quadrature_se"] = float(kl.value), float(kl.stderr)
        _record(f"{tag}/{name}", row)
        print(name, row, flush=True)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "what", choices=("digits", "binarised", "table", "ring", "digits-design", "vdm-ddpm")
    )
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--k-eval", type=int, default=5000)
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument(
        "--bound-draws", type=int, default=1, help="digits: also the VDM's bound, mean of N draws"
    )
    p.add_argument(
        "--train-nll", action="store_true", help="binarised: also the NLL of training images"
    )
    p.add_argument("--tag", default="", help="binarised: suffix of the rows' keys")
    p.add_argument(
        "--early-stop",
        action="store_true",
        help="binarised, digits-design: score the model of the least validation loss",
    )
    p.add_argument("--validate-every", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.0, help="digits-design: AdamW's")
    p.add_argument(
        "--likelihood-every", type=int, default=1000, help="vdm-ddpm: validation bits/dim"
    )
    p.add_argument("--num-eval", type=int, default=2000, help="ring: data points of the KL")
    p.add_argument("--design", action="store_true", help="ring: on the 2-d design mixture")
    args = p.parse_args()
    global WIDTH
    WIDTH = args.width or {
        "digits": WIDTH,
        "vdm-ddpm": WIDTH,
        "ring": 128,
        "digits-design": 256,
    }.get(args.what, 256)
    jax.config.update("jax_enable_x64", False)
    commands = {"digits": cmd_digits, "binarised": cmd_binarised, "table": cmd_table}
    commands["ring"], commands["digits-design"] = cmd_ring, cmd_digits_design
    commands["vdm-ddpm"] = cmd_vdm_ddpm
    commands[args.what](args)


if __name__ == "__main__":
    main()

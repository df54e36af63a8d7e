"""The sweep behind the VE row of RESULTS: VE variants on case A, scored on validation points.

KL(data || model) on 1000 validation points (key 100), never on train_quality.py's test
points (key 1); same data, seeds, network size and optimiser as train_quality.py.

    python benchmarks/train_quality_ve_sweep.py VARIANT [STEPS] [T_MIN]   # ES=4 sets the
    # c_noise Fourier scale; VARIANT in edm, edm_s2, edm_lik, edm_ln, vp, base
"""

import json
import os
import sys
import time

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import data, losses, models, nn, train

F32 = jnp.float32
variant = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 6000
mix = data.ring_mixture(F32)
x = mix.sample(50000, key=jr.key(0))
x_val = mix.sample(1000, key=jr.key(100))
tm = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5
sde = sf.VESDE(sigma_min=0.01, sigma_max=20.0, t_min=tm)
sd = float(jnp.std(x))
EVENT = dict(event_shape=(2,))


def edm_net():
    """EDM preconditioning around the TimeMLP every EDM variant shares."""
    mlp = nn.TimeMLP(
        (2,), width=128, depth=3, embedding_scale=float(os.environ.get("ES", 4.0)), key=jr.key(2)
    )
    return nn.EDMPrecond(sde, mlp, sigma_data=sd)


if variant == "edm":
    net = edm_net()
    m = models.ScoreSDE(sde, net, parameterisation="x0", weighting=losses.EDMWeighting(sd), **EVENT)
elif variant == "edm_s2":
    net = edm_net()
    m = models.ScoreSDE(
        sde, net, parameterisation="x0", weighting=losses.SigmaSquaredWeighting(), **EVENT
    )
elif variant == "edm_lik":
    net = edm_net()
    m = models.ScoreSDE(
        sde,
        net,
        parameterisation="x0",
        weighting=losses.LikelihoodWeighting(),
        time_sampling=losses.LogSNRUniformTime(),
        **EVENT,
    )
elif variant == "edm_ln":
    net = edm_net()
    m = models.ScoreSDE(
        sde,
        net,
        parameterisation="x0",
        weighting=losses.EDMWeighting(sd),
        time_sampling=losses.LogNormalTime(),
        **EVENT,
    )
elif variant == "vp":
    net = nn.TimeMLP((2,), width=128, depth=3, key=jr.key(2))
    m = models.ScoreSDE(sf.VPSDE(t_min=1e-5), net, parameterisation="eps", **EVENT)
elif variant == "base":
    net = nn.TimeMLP(
        (2,),
        width=128,
        depth=3,
        time_transform=nn.LogNoiseLevel(sde),
        embedding_scale=1.0,
        key=jr.key(2),
    )
    m = models.ScoreSDE(sde, net, parameterisation="eps", **EVENT)
else:
    raise SystemExit(f"unknown VARIANT {variant!r}")
t0 = time.perf_counter()
res = train.fit(
    m,
    x,
    num_steps=steps,
    batch_size=512,
    optimizer=train.default_optimizer(3e-3, num_steps=steps, warmup_steps=200),
    ema_decay=0.999,
    steps_per_chunk=250,
    progress=False,
    key=jr.key(3),
)
m = res.ema_model
tr = time.perf_counter() - t0
t0 = time.perf_counter()
lp = jnp.concatenate([m.log_prob(c, rtol=1e-5, atol=1e-5) for c in jnp.split(x_val, 2)])
gap = np.asarray(mix.log_prob(x_val) - lp, np.float64)
print(
    json.dumps(
        dict(
            variant=variant,
            t_min=tm,
            steps=steps,
            sd=sd,
            train_s=tr,
            ll_s=time.perf_counter() - t0,
            loss=float(res.losses[-200:].mean()),
            kl_val=gap.mean(),
            se=gap.std(ddof=1) / np.sqrt(gap.size),
        )
    ),
    flush=True,
)

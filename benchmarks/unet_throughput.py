"""Image-model throughput: the digits U-Net's training step and sampling, before and after
the matrix-product convolution (`scoreflow.nn._conv.conv2d`), against PyTorch.

The model is the digits U-Net (`nn.UNet((1, 8, 8), base_channels=16)`, channel
multipliers (1, 2), Fourier time embedding) in a `ScoreSDE` (VP, eps parameterisation,
denoising score matching with uniform t), AdamW 2e-3 with global-norm clipping, batch 64,
float32, on the digits training split. Runs, each in its own process:

- `matmul`: the machine's float32 matrix-product rate (1024 x 1024), the peak to which
  the achieved rates are compared;
- `direct`: scoreflow with Equinox's convolutions (`conv2d` patched back to `conv(x)`),
  the state before this change;
- `matmul-conv`: scoreflow as shipped;
- `torch eager` and `torch.compile`: the same network, loss, optimiser and batch in
  PyTorch (run by `--torch-python`, a Python with torch installed; torch is not a
  dependency of scoreflow), with one intra-op thread (`--torch-threads 1 2` adds two:
  on this shared 2-core machine two threads collapsed to 1 step/s under load).

Every run reports steps per second of wall time and CPU milliseconds per step (all
threads of the process together): on a shared machine the wall time grows with the other
jobs' load, while the CPU time per step measures the work itself and is the fairer
ratio between frameworks run at different moments. For scoreflow it also reports the
compile time of the first training chunk (50 steps, which includes those steps), XLA's
FLOP count of one step (`cost_analysis`) and the achieved GFLOP/s, and the compile and
run time of one `sample` call (256 images, Heun on `KarrasGrid(32)`: 65 evaluations of
the network).

    python benchmarks/unet_throughput.py [--steps 300] [--torch-python PATH] [--out FILE]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, CHUNK, SAMPLES = 64, 50, 256


def run_matmul():
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    a = jr.normal(jr.key(0), (1024, 1024), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        r = f(a)
    jax.block_until_ready(r)
    return {"gflops": 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9}


def run_scoreflow(steps, direct):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import scoreflow as sf
    import scoreflow.nn._unet as unet_module

    if direct:
        unet_module.conv2d = lambda conv, h: conv(h)
    x = sf.data.digits("train", dtype=jnp.float32)
    net = sf.nn.UNet((1, 8, 8), base_channels=16, key=jr.key(0))
    model = sf.ScoreSDE(sf.VPSDE(), net, parameterisation="eps", event_shape=(1, 8, 8))
    kw = dict(
        batch_size=BATCH,
        optimizer=sf.train.default_optimizer(2e-3),
        steps_per_chunk=CHUNK,
        progress=False,
    )
    t0 = time.perf_counter()
    warm = sf.train.fit(model, x, num_steps=CHUNK, key=jr.key(2), **kw)
    jax.block_until_ready(warm.state)
    compile_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    res = sf.train.fit(model, x, num_steps=CHUNK + steps, state=warm.state, key=jr.key(2), **kw)
    jax.block_until_ready(res.state)
    steps_per_s = steps / (time.perf_counter() - t0)
    cpu_ms = 1e3 * (time.process_time() - c0) / steps

    params, static = eqx.partition(model, eqx.is_inexact_array)
    xb = x[:BATCH]

    def loss_and_grad(p):
        return eqx.filter_value_and_grad(lambda m: m.loss(xb, key=jr.key(0)))(
            eqx.combine(p, static)
        )

    cost = jax.jit(loss_and_grad).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    gflop = float(cost.get("flops", 0.0)) / 1e9

    trained = res.model
    t0 = time.perf_counter()
    out = sf.sample(sf.VPSDE(), trained, (SAMPLES, 1, 8, 8), key=jr.key(3))
    jax.block_until_ready(out.samples)
    sample_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = sf.sample(sf.VPSDE(), trained, (SAMPLES, 1, 8, 8), key=jr.key(4))
    jax.block_until_ready(out.samples)
    sample_run = time.perf_counter() - t0
    return {
        "compile_s": compile_s,
        "steps_per_s": steps_per_s,
        "cpu_ms_per_step": cpu_ms,
        "gflop_per_step": gflop,
        "gflops": gflop * steps_per_s,
        "final_loss": float(res.losses[-1]),
        "sample_compile_s": sample_first - sample_run,
        "sample_run_s": sample_run,
        "sample_nfe": int(out.nfe),
    }


def run_torch(steps, compiled):
    import math

    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(int(os.environ.get("UNET_THROUGHPUT_THREADS", "1")))
    torch.manual_seed(0)
    # The digits training split as scoreflow's loader gives it, written by the parent.
    x_all = torch.from_numpy(np.load(os.environ["UNET_THROUGHPUT_DIGITS"]))

    def groups(c):
        return next(g for g in (8, 4, 2, 1) if c % g == 0)

    class Block(nn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.t = nn.Linear(tdim, cout)
            self.n2, self.c2 = nn.GroupNorm(groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = None if cin == cout else nn.Conv2d(cin, cout, 1)

        def forward(self, x, e):
            h = self.c1(nn.functional.silu(self.n1(x))) + self.t(e)[:, :, None, None]
            h = self.c2(nn.functional.silu(self.n2(h)))
            return h + (x if self.skip is None else self.skip(x))

    class UNet(nn.Module):
        def __init__(self, base=16, embed=64):
            super().__init__()
            tdim = 4 * base
            self.register_buffer("w", 16.0 * torch.randn(embed // 2))
            self.temb = nn.Sequential(nn.Linear(embed, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
            self.conv_in = nn.Conv2d(1, base, 3, padding=1)
            self.d1, self.down = Block(base, base, tdim), nn.Conv2d(base, base, 3, 2, 1)
            self.d2, self.mid = Block(base, 2 * base, tdim), Block(2 * base, 2 * base, tdim)
            self.u2, self.u1 = Block(4 * base, 2 * base, tdim), Block(3 * base, base, tdim)
            self.norm_out = nn.GroupNorm(groups(base), base)
            self.conv_out = nn.Conv2d(base, 1, 3, padding=1)

        def forward(self, t, x):
            arg = 2 * math.pi * self.w[None] * t[:, None]
            e = self.temb(torch.cat([torch.sin(arg), torch.cos(arg)], 1))
            h = self.conv_in(x)
            s1 = self.d1(h, e)
            s2 = self.d2(self.down(s1), e)
            h = self.u2(torch.cat([self.mid(s2, e), s2], 1), e)
            h = h.repeat_interleave(2, 2).repeat_interleave(2, 3)
            h = self.u1(torch.cat([h, s1], 1), e)
            return self.conv_out(nn.functional.silu(self.norm_out(h)))

    net = UNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)

    def loss_fn(x):
        # DSM in the eps parameterisation under the VP SDE (beta 0.1 -> 20), uniform t.
        t = 1e-5 + (1 - 1e-5) * torch.rand(x.shape[0])
        log_alpha = -0.25 * t**2 * (20 - 0.1) - 0.5 * t * 0.1
        alpha = torch.exp(log_alpha)[:, None, None, None]
        sigma = torch.sqrt(1 - alpha**2)
        eps = torch.randn_like(x)
        return ((net(t, alpha * x + sigma * eps) - eps) ** 2).mean()

    loss_c = torch.compile(loss_fn) if compiled else loss_fn

    def step():
        idx = torch.randint(0, x_all.shape[0], (BATCH,))
        opt.zero_grad(set_to_none=True)
        loss = loss_c(x_all[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(loss)

    t0 = time.perf_counter()
    for _ in range(CHUNK):
        step()
    warm = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        last = step()
    return {
        "compile_s": warm,
        "steps_per_s": steps / (time.perf_counter() - t0),
        "cpu_ms_per_step": 1e3 * (time.process_time() - c0) / steps,
        "final_loss": last,
    }


def child(which, steps):
    if which == "matmul":
        return run_matmul()
    if which.startswith("torch"):
        return run_torch(steps, which == "torch.compile")
    return run_scoreflow(steps, which == "direct")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--torch-python", default=None)
    ap.add_argument("--torch-threads", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default=os.path.join(HERE, "unet_throughput.json"))
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    import tempfile

    import numpy as np

    import scoreflow as sf

    digits = os.path.join(tempfile.mkdtemp(), "digits.npy")
    np.save(digits, np.asarray(sf.data.digits("train"), np.float32))
    env = dict(os.environ, UNET_THROUGHPUT_DIGITS=digits)
    rows = {}
    runs = [("matmul", sys.executable), ("direct", sys.executable), ("matmul-conv", sys.executable)]
    if args.torch_python:
        for threads in args.torch_threads:
            runs += [
                (f"torch eager ({threads} thread)", args.torch_python),
                (f"torch.compile ({threads} thread)", args.torch_python),
            ]
    for name, python in runs:
        which = name.split(" (")[0]
        cmd = [python, __file__, "--child", which, "--steps", str(args.steps)]
        threads = name.split("(")[-1].split()[0] if "(" in name else "1"
        run_env = dict(env, UNET_THROUGHPUT_THREADS=threads)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=run_env)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

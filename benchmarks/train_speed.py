"""Training throughput: scoreflow.train.fit against the same model, loss and batch in PyTorch.

The model is scoreflow's `TimeMLP` (Gaussian Fourier time embedding, a time projection
into every hidden layer, SiLU, residual hidden layers) with the denoising score-matching
loss in the eps parameterisation under the VP SDE (uniform t), AdamW with global-norm
clipping, on case A's ring mixture. PyTorch runs the same architecture, loss and
optimiser eagerly and under `torch.compile`. Each run is a separate process so that its
peak memory (max RSS) is its own. Compilation / warm-up is timed apart from the steady
state.

    python benchmarks/train_speed.py [--steps 2000] [--batch 512] [--width 128] [--out FILE]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_scoreflow(steps, batch, width, depth):
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import scoreflow as sf

    mix = sf.data.ring_mixture(jnp.float32)
    x = mix.sample(20000, key=jr.key(0))
    net = sf.nn.TimeMLP((2,), width=width, depth=depth, key=jr.key(1))
    model = sf.ScoreSDE(sf.VPSDE(), net, parameterisation="eps", event_shape=(2,))
    opt = sf.train.default_optimizer(1e-3)
    chunk = 250
    kw = dict(
        batch_size=batch, optimizer=opt, steps_per_chunk=chunk, progress=False, ema_decay=0.999
    )
    t0 = time.perf_counter()
    warm = sf.train.fit(model, x, num_steps=chunk, key=jr.key(2), **kw)  # compiles
    jax.block_until_ready(warm.state)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sf.train.fit(model, x, num_steps=steps + chunk, state=warm.state, key=jr.key(2), **kw)
    jax.block_until_ready(res.state)
    run_s = time.perf_counter() - t0
    return {
        "compile_s": compile_s,
        "steps_per_s": steps / run_s,
        "final_loss": float(res.losses[-100:].mean()),
    }


def run_torch(steps, batch, width, depth, compiled):
    import math

    import numpy as np
    import torch

    torch.manual_seed(0)
    # One intra-op thread: on a small MLP more threads only add synchronisation, and on a
    # shared machine OpenMP spin-waiting collapses throughput (measured: 4 steps/s).
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))

    class TimeMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", 16.0 * torch.randn(16))
            self.first = torch.nn.Linear(2, width)
            self.hidden = torch.nn.ModuleList(
                torch.nn.Linear(width, width) for _ in range(depth - 1)
            )
            self.proj = torch.nn.ModuleList(torch.nn.Linear(32, width) for _ in range(depth))
            self.last = torch.nn.Linear(width, 2)
            torch.nn.init.zeros_(self.last.weight)
            torch.nn.init.zeros_(self.last.bias)

        def forward(self, t, x):
            arg = 2 * math.pi * t[:, None] * self.w[None]
            e = torch.cat([torch.sin(arg), torch.cos(arg)], -1)
            h = torch.nn.functional.silu(self.first(x) + self.proj[0](e))
            for lin, p in zip(self.hidden, self.proj[1:]):
                h = h + torch.nn.functional.silu(lin(h) + p(e))
            return self.last(h)

    ang = 2 * np.pi * np.arange(8) / 8
    means = torch.tensor(4 * np.stack([np.cos(ang), np.sin(ang)], 1), dtype=torch.float32)
    data = means[torch.randint(0, 8, (20000,))] + 0.5 * torch.randn(20000, 2)
    net = TimeMLP()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    ema = [p.detach().clone() for p in net.parameters()]
    bmin, bmax, tmin = 0.1, 20.0, 1e-3

    def loss_fn(x0):
        t = tmin + (1 - tmin) * torch.rand(x0.shape[0])
        B = bmin * t + 0.5 * (bmax - bmin) * t**2
        alpha = torch.exp(-0.5 * B)[:, None]
        sigma = torch.sqrt(-torch.expm1(-B))[:, None]
        eps = torch.randn_like(x0)
        return ((net(t, alpha * x0 + sigma * eps) - eps) ** 2).mean()

    def step():
        x0 = data[torch.randint(0, data.shape[0], (batch,))]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.mul_(0.999).add_(p.detach(), alpha=0.001)
        return loss

    if compiled:
        loss_fn = torch.compile(loss_fn)
    t0 = time.perf_counter()
    for _ in range(50):
        step()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = [float(step()) for _ in range(steps)]
    run_s = time.perf_counter() - t0
    return {
        "compile_s": compile_s,
        "steps_per_s": steps / run_s,
        "final_loss": float(np.mean(losses[-100:])),
    }


def child(name, steps, batch, width, depth):
    if name == "scoreflow":
        out = run_scoreflow(steps, batch, width, depth)
    else:
        out = run_torch(steps, batch, width, depth, compiled=name == "torch.compile")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--child", default=None)
    p.add_argument("--out", default=os.path.join(HERE, "train_speed.json"), help="JSON written")
    a = p.parse_args()
    if a.child:
        child(a.child, a.steps, a.batch, a.width, a.depth)
        return
    rows = {}
    for name in ("scoreflow", "torch eager", "torch.compile"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--steps",
            str(a.steps),
            "--batch",
            str(a.batch),
            "--width",
            str(a.width),
            "--depth",
            str(a.depth),
        ]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.path.join(HERE, "..", "src")},
        )
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(f"{name} failed:\n{proc.stderr[-3000:]}")
            continue
        rows[name] = json.loads(line[-1][7:])
        print(name, rows[name], flush=True)
    best_peer = max(rows[n]["steps_per_s"] for n in ("torch eager", "torch.compile") if n in rows)
    print(
        f"\nTimeMLP width {a.width} depth {a.depth}, batch {a.batch}, "
        f"{a.steps} timed steps, {os.cpu_count()} CPUs"
    )
    print("| run | steps/s | compile / warm-up (s) | peak RSS (MB) | final loss |")
    print("|---|---|---|---|---|")
    for n, r in rows.items():
        print(
            f"| {n} | {r['steps_per_s']:.0f} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['final_loss']:.3f} |"
        )
    if "scoreflow" in rows:
        print(f"\nscoreflow / best PyTorch = {rows['scoreflow']['steps_per_s'] / best_peer:.2f}x")
    args = {k: v for k, v in vars(a).items() if k != "out"}
    with open(a.out, "w") as f:
        json.dump({"args": args, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

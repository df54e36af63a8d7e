"""Cost of scoreflow's checkpoint file (description + checksum) against a raw Equinox file.

The digits U-Net (base 16) with AdamW state and EMA; best of 5 after one warm call.
`python benchmarks/checkpoint_io.py`.
"""

import os
import tempfile
import time

import equinox as eqx
import jax.random as jr

import scoreflow as sf

net = sf.nn.UNet((1, 8, 8), base_channels=16, key=jr.key(0))
model = sf.ScoreSDE(sf.VPSDE(), net, parameterisation="eps", event_shape=(1, 8, 8))
state = sf.train.init_state(model, sf.train.default_optimizer(1e-3), key=jr.key(1))
d = tempfile.mkdtemp()


def t(f, n=5):
    f()
    best = 1e9
    for _ in range(n):
        s = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - s)
    return best


p1, p2 = os.path.join(d, "a.eqx"), os.path.join(d, "b.eqx")
raw_w = t(lambda: eqx.tree_serialise_leaves(p1, state))
ours_w = t(lambda: sf.train.save_checkpoint(p2, state))
raw_r = t(lambda: eqx.tree_deserialise_leaves(p1, state))
ours_r = t(lambda: sf.train.load_checkpoint(p2, state))
ours_r0 = t(lambda: sf.train.load_checkpoint(p2))
print(f"size raw {os.path.getsize(p1) / 1e6:.2f} MB, ours {os.path.getsize(p2) / 1e6:.2f} MB")
print(f"write: raw {raw_w * 1e3:.1f} ms, ours {ours_w * 1e3:.1f} ms ({ours_w / raw_w:.2f}x)")
print(
    f"read with like: raw {raw_r * 1e3:.1f} ms, ours {ours_r * 1e3:.1f} ms "
    f"({ours_r / raw_r:.2f}x); no skeleton {ours_r0 * 1e3:.1f} ms ({ours_r0 / raw_r:.2f}x)"
)

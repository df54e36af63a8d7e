"""Train the digits classifier behind `scoreflow.metrics.fd_digits` and its siblings.

A small CNN (`scoreflow.metrics._digits_classifier.DigitsClassifier`) trained on the
training split of scikit-learn's 8x8 digits only (`scoreflow.data.digits("train")`),
through `scoreflow.train.fit`, with random shifts of up to one pixel as augmentation.
A fixed 15 % of the training split is held out for validation: the EMA model is
evaluated on it every `--eval-every` steps and the best is kept. The test split is
read once, at the end, to report the accuracy.

    python benchmarks/train_digits_classifier.py [--steps 4000] [--out-dir DIR]

Writes `digits_classifier.eqx` (float32 weights) and `digits_classifier.json`
(accuracies, feature size, parameter count, the command) into `src/scoreflow/metrics/`,
or into `--out-dir` for a trial run. Deterministic: seed 0. About a minute on two
CPU cores.
"""

import argparse
import json
import os
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from scoreflow import data, train
from scoreflow.metrics._digits_classifier import DigitsClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "src", "scoreflow", "metrics")
# The value of pixel 0 (the background) at bin centres in [-1, 1].
BACKGROUND = 2 * 0.5 / data.DIGITS_LEVELS - 1


def shift(images, key):
    """Shift each image by up to one pixel in each direction, filling with background."""
    n = images.shape[0]
    padded = jnp.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=BACKGROUND)
    offsets = jr.randint(key, (n, 2), 0, 3)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (0, off[0], off[1]), (1, 8, 8))

    return jax.vmap(crop)(padded, offsets)


def loss_fn(model, batch, *, key):
    # A batch row is the 64 pixels followed by the label.
    images = batch[:, :64].reshape(-1, 1, 8, 8)
    labels = batch[:, 64].astype(jnp.int32)
    logits = model.logits(shift(images, key))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@eqx.filter_jit
def accuracy(model, images, labels):
    return jnp.mean(jnp.argmax(model.logits(images), -1) == labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=DEFAULT_OUT)
    args = parser.parse_args()

    f32 = jnp.float32
    x_all = data.digits("train", dtype=f32)
    y_all = data.digits_labels("train")
    # A fixed validation subset of the training split (the test split is not touched).
    perm = np.random.default_rng(args.seed + 1).permutation(x_all.shape[0])
    n_val = int(round(args.val_fraction * x_all.shape[0]))
    val, tr = perm[:n_val], perm[n_val:]
    x_tr, y_tr, x_val, y_val = x_all[tr], y_all[tr], x_all[val], y_all[val]
    packed = jnp.concatenate([x_tr.reshape(-1, 64), y_tr[:, None].astype(f32)], axis=1)

    key_init, key_fit = jr.split(jr.key(args.seed))
    model = DigitsClassifier(key=key_init)
    optimizer = train.default_optimizer(
        args.lr, num_steps=args.steps, warmup_steps=200, weight_decay=args.weight_decay
    )
    t0 = time.perf_counter()
    state, best, best_val, best_step, history = None, None, -1.0, 0, []
    for stop in range(args.eval_every, args.steps + 1, args.eval_every):
        res = train.fit(
            model,
            packed,
            num_steps=stop,
            batch_size=args.batch_size,
            optimizer=optimizer,
            ema_decay=0.999,
            steps_per_chunk=min(250, args.eval_every),
            loss_fn=loss_fn,
            state=state,
            progress=False,
            key=key_fit,
        )
        state = res.state
        acc_val = float(accuracy(res.ema_model, x_val, y_val))
        acc_tr = float(accuracy(res.ema_model, x_tr, y_tr))
        loss = float(res.losses[-100:].mean())
        history.append({"step": stop, "loss": loss, "train_acc": acc_tr, "val_acc": acc_val})
        print(f"step {stop:5d}  loss {loss:.4f}  train {acc_tr:.4f}  val {acc_val:.4f}")
        # Ties go to the later (longer-trained) model.
        if acc_val >= best_val:
            best, best_val, best_step = res.ema_model, acc_val, stop
    seconds = time.perf_counter() - t0

    x_te, y_te = data.digits("test", dtype=f32), data.digits_labels("test")
    acc_train = float(accuracy(best, x_tr, y_tr))
    acc_test = float(accuracy(best, x_te, y_te))
    num_params = sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(best, eqx.is_array)))
    num_features = int(best.features(x_te[:1]).shape[-1])
    # The features are divided by their RMS over the whole training split, so that they
    # are O(1) as Inception's pooled features are and KID's cubic kernel stays moderate.
    feats = best.features(data.digits("train", dtype=f32))
    feature_rms = float(jax.numpy.sqrt(jax.numpy.mean(feats**2)))
    print(
        f"kept step {best_step}: train {acc_train:.4f}  val {best_val:.4f}  test {acc_test:.4f}"
        f"  ({num_params} parameters, {num_features} features, {seconds:.0f} s)"
    )

    os.makedirs(args.out_dir, exist_ok=True)
    weights = os.path.join(args.out_dir, "digits_classifier.eqx")
    eqx.tree_serialise_leaves(weights, jax.tree_util.tree_map(lambda a: a.astype(f32), best))
    report = {
        "train_accuracy": acc_train,
        "val_accuracy": best_val,
        "test_accuracy": acc_test,
        "num_train": int(x_tr.shape[0]),
        "num_val": int(x_val.shape[0]),
        "num_test": int(x_te.shape[0]),
        "kept_step": best_step,
        "num_features": num_features,
        "feature_rms": feature_rms,
        "num_params": int(num_params),
        "weights_bytes": os.path.getsize(weights),
        "train_seconds": round(seconds, 1),
        "history": history,
        "command": " ".join(["python", "benchmarks/train_digits_classifier.py", *sys.argv[1:]]),
        "jax": jax.__version__,
        "equinox": eqx.__version__,
    }
    with open(os.path.join(args.out_dir, "digits_classifier.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

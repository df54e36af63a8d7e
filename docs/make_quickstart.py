"""Draw `docs/_static/quickstart.png`: the landing page's quickstart, run as it is written.

    python docs/make_quickstart.py

Reads the first Python block under "## Quickstart" in `docs/index.md`, executes it
unchanged (about a minute on a CPU) and plots its training data beside its samples. Run
it again whenever that block changes; the picture is committed so that the docs build
does not pay for the training.
"""

import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = pathlib.Path(__file__).parent


def quickstart_code() -> str:
    text = (HERE / "index.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def main():
    namespace = {}
    exec(compile(quickstart_code(), "docs/index.md (quickstart)", "exec"), namespace)
    x, samples = np.asarray(namespace["x"][:2000]), np.asarray(namespace["samples"])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
    for ax, points, title in ((axes[0], x, "training data"), (axes[1], samples, "samples")):
        ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.5, color="C0")
        ax.set(title=title, aspect="equal", xlim=(-6.5, 6.5), ylim=(-6.5, 6.5))
    fig.tight_layout()
    out = HERE / "_static" / "quickstart.png"
    fig.savefig(out, dpi=80)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()

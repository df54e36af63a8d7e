"""Every Python block of the README runs as written, each in a fresh process
(`pytest -m readme`; CI runs it after the default suite).

With `SCOREFLOW_DOCS_FAST=1` (the switch the tutorials use) the blocks run at a reduced
size: the substitutions in `SHRINK` cut training steps and sampler lengths, and nothing
else changes, so a renamed function or a missing import still fails here.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.readme

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

# keyword=value -> the reduced value (only ever smaller).
SHRINK = {
    "num_steps": 12,
    "steps_per_level": 5,
    "betas": 10,
    "optimise_steps": 2,
}


def shrink(code: str) -> str:
    for name, small in SHRINK.items():
        code = re.sub(rf"\b{name}=(\d[\d_]*)", lambda m: f"{name}={min(int(m[1]), small)}", code)
    return code


def blocks():
    text = README.read_text()
    out = []
    for match in BLOCK.finditer(text):
        line = text[: match.start()].count("\n") + 1
        out.append(pytest.param(match[1], id=f"line{line}"))
    return out


def test_the_readme_has_blocks_and_shrinking_changes_only_sizes():
    assert len(blocks()) >= 6
    assert shrink("fit(m, num_steps=3000, steps_per_level=50)") == (
        "fit(m, num_steps=12, steps_per_level=5)"
    )


@pytest.mark.parametrize("code", blocks())
def test_readme_block_runs(code, tmp_path):
    env = {**os.environ, "SCOREFLOW_DOCS_FAST": "1", "MPLBACKEND": "Agg"}
    env.pop("JAX_ENABLE_X64", None)  # as a user runs it
    script = tmp_path / "block.py"
    script.write_text(shrink(code))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

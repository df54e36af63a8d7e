"""Every tutorial runs, in a reduced size, so that none can rot (`pytest -m tutorial`).

This is the local check; CI does not run it, because the docs build executes the same
notebooks at the same size (SCOREFLOW_DOCS_FAST=1) with every cell error fatal, and
running them twice would not fit CI's time."""

import os
import pathlib

import jupytext
import nbclient
import pytest

pytestmark = pytest.mark.tutorial

TUTORIALS = sorted((pathlib.Path(__file__).parent.parent / "docs" / "tutorials").glob("*.md"))


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_executes(path, monkeypatch):
    monkeypatch.setenv("SCOREFLOW_DOCS_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=dict(os.environ))
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors


def test_landing_page_quickstart_runs():
    # The landing page's quickstart, exactly as written (its picture is committed, drawn by
    # docs/make_quickstart.py from the same block): it must still run.
    import importlib.util

    script = pathlib.Path(__file__).parent.parent / "docs" / "make_quickstart.py"
    spec = importlib.util.spec_from_file_location("make_quickstart", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace = {}
    exec(compile(module.quickstart_code(), "docs/index.md (quickstart)", "exec"), namespace)
    assert namespace["samples"].shape == (2000, 2)
    assert namespace["log_p"].shape == (256,)

"""Execute the notebooks once, all at the start of the build, in parallel, longest first.

myst-nb executes a notebook when Sphinx reads it, so under `sphinx-build -j N` which
notebooks run side by side is decided by how Sphinx cuts the sorted list of pages into
chunks, and on two cores the build waits for the unlucky chunk. Here, before the read
(`env-before-read-docs`), every notebook to be read whose code is not already in
myst-nb's jupyter-cache is executed in a pool of `-j` kernels (all cores when `-j` is
not given), the slowest first (by its last run, else by its amount of code), and stored
in that cache; the read then renders the cached outputs (`nb_execution_mode = "cache"`).

A cell that raises fails the build here, with the notebook's traceback, when
`nb_execution_raise_on_error` is set. Each notebook's cost is printed as it finishes.
The cache lives beside the build output, one per `SCOREFLOW_DOCS_FAST` mode, so a local
rebuild re-executes only the notebooks whose code changed.
"""

import concurrent.futures
import os
import pathlib
import time

from sphinx.errors import ExtensionError


def _cache_path(app, config):
    # One cache per size: the cache is keyed by the code alone, not by the environment.
    if not config.nb_execution_cache_path:
        fast = os.environ.get("SCOREFLOW_DOCS_FAST") == "1"
        name = ".jupyter_cache" + ("" if fast else "_full")
        config.nb_execution_cache_path = str(pathlib.Path(app.outdir).parent / name)


def _last_runtime(cache, uri):
    times = [r.data.get("execution_seconds") for r in cache.list_cache_records() if r.uri == uri]
    times = [t for t in times if t is not None]
    return times[-1] if times else None


def _execute(app, env, docnames):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.executors.utils import single_nb_execution
    from myst_nb.core.read import is_myst_markdown_notebook, read_myst_markdown_notebook

    config = env.mystnb_config
    if config.execution_mode != "cache":
        return
    cache = get_cache(config.execution_cache_path)
    todo = []
    for docname in docnames:
        path = pathlib.Path(env.doc2path(docname))
        if path.suffix != ".md":
            continue
        text = path.read_text()
        if not is_myst_markdown_notebook(text):
            continue
        nb = read_myst_markdown_notebook(text, config=env.myst_config, add_source_map=True)
        try:
            cache.match_cache_notebook(nb)
            continue  # the same code ran before: its outputs are reused
        except KeyError:
            pass
        code = sum(len(c.source) for c in nb.cells if c.cell_type == "code")
        last = _last_runtime(cache, str(path))
        todo.append(((last if last is not None else code / 100), docname, path, nb))
    if not todo:
        return
    todo.sort(key=lambda item: item[0], reverse=True)
    workers = max(1, min(len(todo), app.parallel if app.parallel > 1 else os.cpu_count() or 1))
    print(f"executing {len(todo)} notebooks, {workers} at a time, slowest first", flush=True)

    def run(path, nb):
        return single_nb_execution(
            nb,
            cwd=str(path.parent),
            timeout=config.execution_timeout,
            allow_errors=config.execution_allow_errors,
            meta_override=True,
        )

    start, failures = time.time(), []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(run, path, nb): (docname, path, nb) for _, docname, path, nb in todo}
        for future in concurrent.futures.as_completed(futures):
            docname, path, nb = futures[future]
            result = future.result()
            status = "FAILED" if result.err is not None else "ok"
            print(
                f"  {result.time:7.1f} s  {docname}  {status}  (at {time.time() - start:.0f} s)",
                flush=True,
            )
            if result.err is not None:
                failures.append((docname, result.exc_string))
                continue
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, str(path), data={"execution_seconds": result.time}),
                check_validity=False,
                overwrite=True,
            )
    if failures and config.execution_raise_on_error:
        report = "\n\n".join(f"{docname}:\n{tb}" for docname, tb in failures)
        raise ExtensionError(f"{len(failures)} notebook(s) raised:\n\n{report}")


def setup(app):
    app.connect("config-inited", _cache_path)
    app.connect("env-before-read-docs", _execute)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

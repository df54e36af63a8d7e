import importlib
import importlib.util
import os
import pathlib
import re
import sys
import time

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

# The build executes every tutorial, at the reduced size the tests use unless asked for the
# full one (`SCOREFLOW_DOCS_FAST=0 sphinx-build ...`); the kernels inherit this environment.
os.environ.setdefault("SCOREFLOW_DOCS_FAST", "1")
FAST = os.environ["SCOREFLOW_DOCS_FAST"] == "1"
# At the reduced size a tutorial is compile-bound like the test suite, so its kernels get the
# suite's cheap-compile XLA flags (see tests/conftest.py; no tutorial times anything, and
# the programs' semantics are unchanged). The full build compiles as users do.
if FAST:
    for _flag, _value in {
        "xla_backend_optimization_level": "0",
        "xla_cpu_use_fusion_emitters": "false",
        "xla_cpu_parallel_codegen_split_count": "1",
    }.items():
        if _flag not in os.environ.get("XLA_FLAGS", ""):
            _flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{_flags} --{_flag}={_value}".strip()

project = "scoreflow"
extensions = [
    "myst_nb",
    # Every notebook executed once, before the read, in parallel and longest first.
    "scoreflow_execute",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    # Docstrings write math as $...$; this turns what is left of it (display math) into
    # math nodes after docutils has read the docstring.
    "sphinx_math_dollar",
    # The CLI and configuration page, generated from `build_parser()` and `SCHEMA`.
    "scoreflow_cli",
]
napoleon_google_docstring = True
myst_enable_extensions = ["dollarmath", "amsmath"]
# MathJax must not also claim $...$ in the rendered pages.
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}
# MathJax is served from the built site itself, so math renders offline: the copy that the
# `sphinx-mathjax-offline` package ships (its own extension is not declared parallel-safe,
# which would force a serial read, so it is wired here instead).
_mathjax = importlib.util.find_spec("sphinx-mathjax-offline")
if _mathjax is None:
    raise RuntimeError("The docs need sphinx-mathjax-offline: pip install -e '.[docs]'.")
html_static_path = [str(pathlib.Path(_mathjax.submodule_search_locations[0]) / "static")]
mathjax_path = "mathjax/tex-chtml.js"
html_theme = "furo"
html_title = "scoreflow"
exclude_patterns = ["_build", "_inventories", "_ext", "**/.ipynb_checkpoints"]

# Notebooks: every tutorial runs (in `_ext/scoreflow_execute.py`, whose outputs myst-nb reads
# from its jupyter-cache), and a cell that raises fails the build.
nb_execution_mode = "cache"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
# Per cell; the reduced tutorials' slowest cell takes well under a minute.
nb_execution_timeout = 300 if FAST else 3600
nb_merge_streams = True

# `name` in a docstring is a cross-reference (rendered as code, a link where it resolves),
# not emphasis.
default_role = "py:obj"
autodoc_member_order = "bysource"
# Defaults as written in the source (`jax.nn.softplus`), not their repr.
autodoc_preserve_defaults = True

# No network at build time: the inventories are files in the repository, written by
# `_inventories/make_inventories.py` from each project's docs sources (see there).
intersphinx_mapping = {
    name: (url, str(HERE / "_inventories" / f"{name}.inv"))
    for name, url in {
        "jax": "https://docs.jax.dev/en/latest/",
        "equinox": "https://docs.kidger.site/equinox/",
        "diffrax": "https://docs.kidger.site/diffrax/",
        "optax": "https://optax.readthedocs.io/en/latest/",
        "jaxtyping": "https://docs.kidger.site/jaxtyping/",
    }.items()
}

# Inline math `$...$` in a docstring becomes a `:math:` role *before* docutils reads it:
# read as plain reST first, `s_\theta` would be a hyperlink reference to "s".
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)((?:[^$\\]|\\.)+?)(?<!\s)\$(?!\$)")


def _inline_math(match):
    text, start, end = match.string, match.start(), match.end()
    before = "\\ " if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "`") else ""
    after = "\\ " if end < len(text) and (text[end].isalnum() or text[end] == "`") else ""
    return f"{before}:math:`{match.group(1)}`{after}"


def _docstring_math(app, what, name, obj, options, lines):
    text = "\n".join(lines)
    # Leave literals and display math alone.
    parts = re.split(r"(``.*?``|`[^`]*`|\$\$.*?\$\$)", text, flags=re.S)
    for i in range(0, len(parts), 2):
        parts[i] = _INLINE_MATH.sub(_inline_math, parts[i])
    lines[:] = "".join(parts).split("\n")


# Signatures: jaxtyping expands an alias into the union it stands for
# (`float | Float[jaxlib._jax.Array, '*times'] | ...`); show the alias instead. Each name
# put here is documented on the API index page (`api/index.md`) or links through intersphinx.
_ATOMS = [
    (r"(?<![\w.~])~?(?:jax\.)?(?:jaxlib\._jax\.)?Array\b", "Array"),
    (r"~?numpy\.(ndarray|number|bool)\b", r"\1"),
    (r"~?jaxtyping\.(\w+)\[", r"\1["),
]
_SCALARS = r"(?: \| (?:number|bool|float|int|complex))"
_ALIASES = [
    # scoreflow._custom_types
    (r"Key\[Array, ''\] \| UInt32\[Array, '2'\](?: \| UInt32\[Array, '4'\])?", "PRNGKeyArray"),
    (r"float \| Float\[Array, '\*times'\] \| Float\[ndarray, '\*times'\] \| number", "TimeLike"),
    (r"float \| Float\[Array, ''\] \| Float\[ndarray, ''\] \| number", "ScalarLike"),
    (r"float \| int \| Float\[Array, ''\] \| Float\[ndarray, ''\]", "RealScalarLike"),
    # jaxtyping's `Dtype[ArrayLike, shape]`, spelt out for every array type it stands for.
    (rf"(\w+)\[Array, ('[^']*')\] \| \1\[ndarray, \2\]{_SCALARS}*", r"\1[ArrayLike, \2]"),
    (rf"Array \| ndarray{_SCALARS}+", "ArrayLike"),
]
_ATOMS = [(re.compile(p), r) for p, r in _ATOMS]
_ALIASES = [(re.compile(p), r) for p, r in _ALIASES]


def _short_types(text):
    for pattern, repl in _ATOMS + _ALIASES:
        text = pattern.sub(repl, text)
    return text


def _default_names(obj):
    """Readable names for defaults that are functions or classes (`jax.nn.silu`).

    `autodoc_preserve_defaults` reads defaults from the source, which a dataclass-made
    `__init__` (every `equinox.Module`) does not have.
    """
    import inspect

    from sphinx.util.inspect import object_description

    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return {}
    names = {}
    for p in params:
        d, name = p.default, getattr(p.default, "__name__", None)
        if p.default is p.empty or name is None:
            continue
        for module in ("jax.nn", "jax.numpy", "jax", "equinox", "diffrax"):
            if getattr(importlib.import_module(module), name, None) is d:
                names[object_description(d)] = f"{module}.{name}"
                break
    return names


def _signature(app, what, name, obj, options, signature, return_annotation):
    if signature is None:
        return None
    for text, short in _default_names(obj).items():
        signature = signature.replace(text, short)
    return _short_types(signature), _short_types(return_annotation or "")


# References that Python spells with private modules (`diffrax._solver.base.AbstractSolver`,
# an annotation's `__module__`) or the short imports the docs use (`dfx.Heun`) are retried
# under their public name, locally and then through intersphinx.
_PREFIXES = {
    "eqx": "equinox",
    "dfx": "diffrax",
    "jnp": "jax.numpy",
    "jr": "jax.random",
    "sf": "scoreflow",
    "jaxlib._jax": "jax",
}
_NAMESPACES = set(
    "analytic bijections data evaluation guidance losses metrics models nn sde solve train".split()
)
_PUBLIC = {"Array": "jax.Array", "ArrayLike": "jax.typing.ArrayLike"}
# jaxtyping's names, written bare in signatures (`Float[Array, "n"]`).
_JAXTYPING = set(
    "PRNGKeyArray PyTree Shaped Bool Key Num Inexact Float Complex Integer Int UInt UInt8 UInt32 "
    "Int32 Float32 Real".split()
)


def _candidates(target):
    if target in _PUBLIC:
        yield _PUBLIC[target]
    if target in _JAXTYPING:
        yield "jaxtyping." + target
    if target.split(".")[0] in _NAMESPACES:
        yield "scoreflow." + target
    for short, full in _PREFIXES.items():
        if target.startswith(short + "."):
            target = full + target[len(short) :]
            yield target
    parts = target.split(".")
    if any(p.startswith("_") and not p.startswith("__") for p in parts[:-1]):
        public = [p for p in parts[:-1] if not p.startswith("_")]
        for i in range(len(public), 0, -1):
            yield ".".join(public[:i] + parts[-1:])


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("_scoreflow_retry"):
        return None
    from sphinx.ext import intersphinx

    domain = env.get_domain("py")
    docname = node.get("refdoc", env.docname)
    targets = list(_candidates(node["reftarget"]))
    if node["reftarget"].isidentifier():
        # A bare name from another namespace (`VESDE` in `scoreflow.solve`), if unique.
        homes = [
            n for n in domain.objects if re.fullmatch(rf"scoreflow\.\w+\.{node['reftarget']}", n)
        ]
        targets += homes if len(homes) == 1 else []
    for target in targets:
        retry = node.deepcopy()
        # Any object type: an alias is data to Python but a class to its annotation.
        retry["reftarget"], retry["reftype"], retry["_scoreflow_retry"] = target, "obj", True
        ref = domain.resolve_xref(env, docname, app.builder, "obj", target, retry, contnode)
        if ref is None:
            ref = intersphinx.missing_reference(app, env, retry, contnode)
        if ref is not None:
            return ref
    return None


def _report_execution(app, exception):
    """Print what each notebook cost to execute, so that a slow tutorial is seen in CI."""
    if exception is not None:
        return
    from myst_nb.sphinx_ import NbMetadataCollector

    rows = []
    for docname in sorted(app.env.found_docs):
        data = NbMetadataCollector.get_exec_data(app.env, docname)
        if data and data.get("runtime") is not None:
            rows.append((data["runtime"], docname))
    if rows:
        mode = "reduced" if FAST else "full"
        print(f"\nnotebooks executed ({mode} size), seconds:")
        for runtime, docname in sorted(rows, reverse=True):
            print(f"  {runtime:7.1f}  {docname}")
        print(f"  {sum(r for r, _ in rows):7.1f}  total; build {time.time() - _START:.0f} s")


_START = time.time()


def setup(app):
    app.connect("autodoc-process-docstring", _docstring_math)
    app.connect("autodoc-process-signature", _signature)
    app.connect("missing-reference", _missing_reference)
    app.connect("build-finished", _report_execution)

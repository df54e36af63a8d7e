"""Write the intersphinx inventories in this folder, so that the docs build never fetches one.

The docs build cannot reach the network, so `conf.py` reads these files instead of each
project's published `objects.inv`. Each one is made here from that project's documentation
*sources* (what its docs render, and on which page), with the object types read from the
installed package; the links point at the public docs:

    jax        https://docs.jax.dev/en/latest/              (Sphinx, autosummary pages)
    optax      https://optax.readthedocs.io/en/latest/      (Sphinx, autosummary pages)
    equinox    https://docs.kidger.site/equinox/            (MkDocs, `::: name` blocks)
    diffrax    https://docs.kidger.site/diffrax/            (MkDocs)
    jaxtyping  https://docs.kidger.site/jaxtyping/          (MkDocs, and the array page)

Regenerate (with the docs environment, after cloning each project's repository) by

    python docs/_inventories/make_inventories.py --jax ../jax --optax ../optax \
        --equinox ../equinox --diffrax ../diffrax --jaxtyping ../jaxtyping

Any subset of the projects may be given; the others' files are left alone.
"""

import argparse
import importlib
import inspect
import pathlib
import re
import warnings
import zlib

HERE = pathlib.Path(__file__).parent
URLS = {
    "jax": "https://docs.jax.dev/en/latest/",
    "optax": "https://optax.readthedocs.io/en/latest/",
    "equinox": "https://docs.kidger.site/equinox/",
    "diffrax": "https://docs.kidger.site/diffrax/",
    "jaxtyping": "https://docs.kidger.site/jaxtyping/",
}


def _resolve(name):
    """The object a dotted name refers to in the installed packages, or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _role(obj, name):
    if inspect.ismodule(obj):
        return "py:module"
    if inspect.isclass(obj):
        return "py:class"
    if inspect.isroutine(obj) or callable(obj):
        parent = _resolve(name.rsplit(".", 1)[0])
        return "py:method" if inspect.isclass(parent) else "py:function"
    if isinstance(obj, property):
        return "py:property"
    return "py:data"


def _sphinx_entries(docs: pathlib.Path):
    """(name, uri) for what autosummary / autodoc directives document in .rst sources."""
    for path in sorted(docs.rglob("*.rst")):
        page = path.relative_to(docs).with_suffix(".html").as_posix()
        folder = path.relative_to(docs).parent.as_posix()
        folder = "" if folder == "." else folder + "/"
        module, toctree, in_summary = "", None, False
        for line in path.read_text(errors="replace").splitlines():
            if m := re.match(r"\.\. (?:currentmodule|module|automodule|py:module)::\s*(\S+)", line):
                module = m.group(1)
                if "module::" in line and "current" not in line:
                    yield module, f"{page}#module-{module}"
                in_summary = False
                continue
            if m := re.match(
                r"\.\. auto(?:class|function|data|exception|attribute)::\s*(\S+)", line
            ):
                name = m.group(1) if "." in m.group(1) or not module else f"{module}.{m.group(1)}"
                yield name, f"{page}#{name}"
                in_summary = False
                continue
            if re.match(r"\.\. autosummary::", line):
                in_summary, toctree = True, None
                continue
            if in_summary:
                if m := re.match(r"\s+:toctree:\s*(\S+)", line):
                    toctree = m.group(1).rstrip("/")
                elif re.match(r"\s+:", line) or not line.strip():
                    continue
                elif m := re.match(r"\s+([A-Za-z_][\w.]*)\s*$", line):
                    name = f"{module}.{m.group(1)}" if module else m.group(1)
                    if toctree:
                        yield name, f"{folder}{toctree}/{name}.html#{name}"
                    else:
                        yield name, f"{page}#{name}"
                else:
                    in_summary = False


def _mkdocs_entries(docs: pathlib.Path):
    """(name, uri) for the `::: name` blocks of MkDocs sources (directory URLs)."""
    for path in sorted(docs.rglob("*.md")):
        rel = path.relative_to(docs).with_suffix("")
        page = "" if rel.as_posix() == "index" else rel.as_posix() + "/"
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            # Also indented, inside a collapsible admonition (`??? abstract "..."`).
            m = re.match(r"(\s*):::\s*([\w.]+)", line)
            if not m:
                continue
            indent, name = len(m.group(1)), m.group(2)
            yield name, f"{page}#{name}"
            # The members listed under `options: members:` get their own anchors.
            for follow in lines[i + 1 :]:
                if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                    break
                if mm := re.match(r"\s+-\s+(\w+)\s*$", follow):
                    yield f"{name}.{mm.group(1)}", f"{page}#{name}.{mm.group(1)}"


# jaxtyping documents its array annotations in prose on one page; these are its headings.
_JAXTYPING_ARRAY = {
    **{
        f"jaxtyping.{d}": "api/array/#dtype"
        for d in (
            "Shaped Bool Key Num Inexact Float Float16 Float32 Float64 BFloat16 Complex "
            "Complex64 Complex128 Integer Int Int8 Int16 Int32 Int64 UInt UInt8 UInt16 "
            "UInt32 UInt64 Real"
        ).split()
    },
    "jaxtyping.Array": "api/array/#jax-specific-types",
    "jaxtyping.ArrayLike": "api/array/#jax-specific-types",
    "jaxtyping.PRNGKeyArray": "api/array/#jax-specific-types",
    "jaxtyping.Scalar": "api/array/#jax-specific-types",
    "jaxtyping.ScalarLike": "api/array/#jax-specific-types",
}


def _write(project, entries, version):
    seen, lines = set(), []
    for name, uri in entries:
        if name in seen:
            continue
        obj = _resolve(name)
        if obj is None:
            continue  # renamed or removed in the installed version
        seen.add(name)
        if uri.endswith("#" + name):
            uri = uri[: -len(name)] + "$"
        lines.append(f"{name} {_role(obj, name)} 1 {uri} -")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = zlib.compress(("\n".join(sorted(lines)) + "\n").encode(), 9)
    (HERE / f"{project}.inv").write_bytes(header.encode() + body)
    print(f"{project}.inv: {len(lines)} objects")


def main():
    warnings.simplefilter("ignore")  # deprecated names are still documented
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for project in URLS:
        parser.add_argument(f"--{project}", type=pathlib.Path, help=f"a clone of {project}")
    args = parser.parse_args()
    for project in URLS:
        repo = getattr(args, project)
        if repo is None:
            continue
        docs = repo / "docs"
        version = importlib.import_module(project).__version__
        if project in ("jax", "optax"):
            entries = list(_sphinx_entries(docs))
        else:
            entries = list(_mkdocs_entries(docs))
        if project == "jaxtyping":
            entries += list(_JAXTYPING_ARRAY.items())
        _write(project, entries, version)


if __name__ == "__main__":
    main()

"""Every public name of every public namespace is documented in the API pages.

Cheap on purpose: it reads the directives of `docs/api/*.md` (no Sphinx run), so a new
export without its `.. autoclass::` / `.. autofunction::` line fails here, in the default
suite, rather than going missing from the docs.
"""

import importlib
import pathlib
import pkgutil
import re
import types

import pytest

import scoreflow

API = pathlib.Path(__file__).parent.parent / "docs" / "api"
_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?:class|function|data|exception|attribute)"
    r"|py:(?:class|function|data|exception|type)):: +(scoreflow[\w.]*)",
    re.M,
)


def _namespaces():
    subpackages = [
        f"scoreflow.{m.name}"
        for m in pkgutil.iter_modules(scoreflow.__path__)
        if m.ispkg and not m.name.startswith("_")
    ]
    return ["scoreflow", *sorted(subpackages)]


def _public_names(namespace):
    module = importlib.import_module(namespace)
    return sorted(
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    )


def _documented():
    return {
        name for page in sorted(API.glob("*.md")) for name in _DIRECTIVE.findall(page.read_text())
    }


def test_the_namespaces_are_the_documented_ones():
    # One page per namespace; a new namespace needs its page (and a line in api/index.md).
    for namespace in _namespaces():
        page = API / f"{namespace.removeprefix('scoreflow.')}.md"
        assert page.exists(), f"{namespace} has no API page {page.name}"
        assert f"({page.name})" in (API / "index.md").read_text()


@pytest.mark.parametrize("namespace", _namespaces())
def test_every_public_name_is_documented(namespace):
    documented = _documented()
    missing = [n for n in _public_names(namespace) if f"{namespace}.{n}" not in documented]
    assert not missing, f"not in docs/api/*.md: {', '.join(f'{namespace}.{n}' for n in missing)}"


def test_every_documented_name_exists():
    stale = []
    for name in sorted(_documented()):
        module, _, attr = name.rpartition(".")
        try:
            getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            stale.append(name)
    assert not stale, f"documented in docs/api/*.md but not importable: {stale}"

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


def _cli_page_generator():
    pytest.importorskip("sphinx")
    import importlib.util

    path = API.parent / "_ext" / "scoreflow_cli.py"
    spec = importlib.util.spec_from_file_location("scoreflow_cli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_page_renders_the_parser_and_the_schema():
    import argparse
    import dataclasses

    gen = _cli_page_generator()

    @dataclasses.dataclass(frozen=True)
    class Option:
        type: object
        default: object
        help: str
        choices: tuple | None = None
        minimum: float | None = None
        exclusive: bool = False

    schema = {
        "sde": Option(str, "vp", "the `score_sde` SDE", choices=("vp", "ve")),
        "clip_norm": Option((float, type(None)), 1.0, "clip", minimum=0.0, exclusive=True),
    }
    text = "\n".join(gen.config_rst(schema))
    assert "``sde``" in text and '``"ve"``' in text and "``score_sde``" in text
    assert "float | null > 0.0" in text and '"clip_norm": 1.0' in text

    parser = argparse.ArgumentParser(prog="scoreflow")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run the demo")
    demo.add_argument("--steps", type=int, default=20, help="ODE steps")
    text = "\n".join(gen.cli_rst(parser))
    assert "``scoreflow demo``" in text and "Run the demo." in text and "``--steps``" in text

    from sphinx.errors import ExtensionError

    with pytest.raises(ExtensionError, match="SCHEMA"):
        gen.config_rst({})
    with pytest.raises(ExtensionError, match="build_parser"):
        gen.cli_rst(argparse.ArgumentParser())

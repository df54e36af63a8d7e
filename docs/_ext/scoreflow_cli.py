"""The CLI and configuration reference, generated from the code that defines them.

Two reST directives, used by `docs/cli.md` (inside `{eval-rst}` blocks: what they generate is reST):

- `scoreflow-cli` renders `scoreflow.cli.build_parser()` (an `argparse.ArgumentParser`
  whose sub-commands are `add_subparsers` parsers): for each sub-command its help, usage
  line and a table of its options (flags, default, choices, help).
- `scoreflow-config` renders `scoreflow._config.SCHEMA`, a `dict[str, Option]` in the
  order of the config file, each `Option` with the fields `type` (a type, or a tuple of
  types with `type(None)` for a nullable key), `default`, `help` and `choices` (None or a
  tuple), and optionally `minimum` / `exclusive` (a lower bound, shown with the type): a
  table of every key and a config file of the defaults.

A missing or malformed interface fails the build with a message that says what is expected;
the page is never silently empty.
"""

import argparse
import json
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

_EXPECTED_SCHEMA = (
    "scoreflow._config.SCHEMA: dict[str, Option], Option a frozen dataclass with fields "
    "`type`, `default`, `help`, `choices` (None or a tuple)"
)
_EXPECTED_PARSER = "scoreflow.cli.build_parser() -> argparse.ArgumentParser with sub-commands"


def _literal(value) -> str:
    """A value as a config file writes it (JSON), as inline reST code."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"``{text}``"


def _type_name(t) -> str:
    if t is None:
        return ""
    if isinstance(t, tuple):  # a union, `type(None)` where the key may be null
        return " | ".join(_type_name(u) for u in t)
    if t is type(None):
        return "null"
    if isinstance(t, str):
        return t
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "")


def _bound(option) -> str:
    # An optional `minimum` (strict when `exclusive`), shown with the type.
    minimum = getattr(option, "minimum", None)
    if minimum is None:
        return ""
    return f" {'>' if getattr(option, 'exclusive', False) else '≥'} {minimum}"


def _text(help_: str) -> str:
    # Help strings are plain text for `--help` too: their `name` is code, not a reference.
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", help_ or "")


def _cell(text: str) -> str:
    # A list-table cell is one line here; an empty one still needs content.
    return " ".join(str(text).split()) or " "


def _table(header, rows, widths) -> list[str]:
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        f"   :widths: {' '.join(map(str, widths))}",
        "",
    ]
    for row in [header, *rows]:
        lines.append(f"   * - {_cell(row[0])}")
        lines += [f"     - {_cell(c)}" for c in row[1:]]
    return lines + [""]


def config_rst(schema) -> list[str]:
    """reST lines for the configuration keys of `SCHEMA`."""
    if not isinstance(schema, dict) or not schema:
        raise ExtensionError(f"docs/cli.md: expected a non-empty {_EXPECTED_SCHEMA}.")
    rows = []
    for key, option in schema.items():
        try:
            type_, default, help_, choices = (
                option.type,
                option.default,
                option.help,
                option.choices,
            )
        except AttributeError as e:
            raise ExtensionError(
                f"docs/cli.md: SCHEMA[{key!r}]: expected {_EXPECTED_SCHEMA}."
            ) from e
        choice_text = ", ".join(_literal(c) for c in choices) if choices else ""
        rows.append(
            (
                f"``{key}``",
                _type_name(type_) + _bound(option),
                _literal(default),
                choice_text,
                _text(help_),
            )
        )
    lines = _table(("key", "type", "default", "choices", "meaning"), rows, (14, 8, 14, 22, 42))
    defaults = json.dumps({k: o.default for k, o in schema.items()}, indent=2, default=repr)
    lines += [
        "Every key with its default, as a JSON config (a TOML file takes the same keys):",
        "",
        ".. code-block:: json",
        "",
        *("   " + line for line in defaults.splitlines()),
        "",
    ]
    return lines


def _option_rows(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            flags = ", ".join(f"``{s}``" for s in action.option_strings)
            if action.nargs != 0:
                flags += f" *{action.metavar or action.dest.upper()}*"
        else:
            flags = f"*{action.metavar or action.dest}*"
        if action.required:
            default = "required"
        elif action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            default = ""
        else:
            default = _literal(action.default)
        choices = ", ".join(_literal(c) for c in action.choices) if action.choices else ""
        help_ = "" if action.help in (None, argparse.SUPPRESS) else action.help
        type_ = "flag" if action.nargs == 0 else _type_name(action.type) or "str"
        yield (
            flags,
            type_,
            default,
            choices,
            _text(help_ % vars(action) if "%(" in help_ else help_),
        )


def cli_rst(parser) -> list[str]:
    """reST lines, one section per sub-command of `parser`."""
    if not isinstance(parser, argparse.ArgumentParser):
        raise ExtensionError(f"docs/cli.md: expected {_EXPECTED_PARSER}, got {type(parser)}.")
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        raise ExtensionError(f"docs/cli.md: expected {_EXPECTED_PARSER}; it has none.")
    helps = {a.dest: a.help for a in subs[0]._choices_actions}
    lines = []
    for name, sub in subs[0].choices.items():
        title = f"``{parser.prog} {name}``"
        lines += [title, "~" * len(title), ""]
        if helps.get(name):
            text = _text(helps[name])
            lines += [text[0].upper() + text[1:] + ("" if text.endswith(".") else "."), ""]
        lines += [".. code-block:: text", "", "   " + sub.format_usage().strip(), ""]
        rows = list(_option_rows(sub))
        if rows:
            lines += _table(
                ("option", "type", "default", "choices", "meaning"), rows, (22, 8, 14, 18, 38)
            )
    return lines


class _Generated(SphinxDirective):
    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self):
        container = nodes.container()
        nested_parse_with_titles(
            self.state, StringList(self.lines(), source="<scoreflow_cli>"), container
        )
        return container.children


class CliDirective(_Generated):
    def lines(self):
        try:
            from scoreflow.cli import build_parser
        except ImportError as e:
            raise ExtensionError(f"docs/cli.md needs {_EXPECTED_PARSER}: {e}") from e
        return cli_rst(build_parser())


class ConfigDirective(_Generated):
    def lines(self):
        try:
            from scoreflow._config import SCHEMA
        except ImportError as e:
            raise ExtensionError(f"docs/cli.md needs {_EXPECTED_SCHEMA}: {e}") from e
        return config_rst(SCHEMA)


def setup(app):
    app.add_directive("scoreflow-cli", CliDirective)
    app.add_directive("scoreflow-config", ConfigDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

import re

project = "scoreflow"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # Docstrings write math as $...$; this turns what is left of it (display math) into
    # math nodes after docutils has read the docstring.
    "sphinx_math_dollar",
]
napoleon_google_docstring = True
myst_enable_extensions = ["dollarmath", "amsmath"]
# MathJax must not also claim $...$ in the rendered pages.
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}
nb_execution_mode = "auto"
nb_execution_timeout = 600
html_theme = "furo"
exclude_patterns = ["_build"]

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


def setup(app):
    app.connect("autodoc-process-docstring", _docstring_math)

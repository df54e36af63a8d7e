project = "scoreflow"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # Docstrings write math as $...$; this turns it into reST math before docutils reads it.
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

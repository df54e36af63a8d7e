project = "scoreflow"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
napoleon_google_docstring = True
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "auto"
nb_execution_timeout = 600
html_theme = "furo"
exclude_patterns = ["_build"]

"""Sphinx configuration for the deeplab_nb site.

The pages are nbdev's processed notebooks (`_proc/`, made by `docs/build.py`), rendered by myst-nb from their stored
outputs: nothing is executed here, so the site shows exactly what the committed, executed notebooks show.
"""
from configparser import ConfigParser
from pathlib import Path

_cfg = ConfigParser(delimiters=['='])
_cfg.read(Path(__file__).resolve().parents[1]/'settings.ini', encoding='utf-8')
_d = _cfg['DEFAULT']

project = _d['lib_name']
author = _d['author']
copyright = _d['copyright']
release = version = _d['version']

# MathJax 3.2 ships with the site: the sphinx-mathjax-offline package copies it into _static/mathjax and points
# mathjax_path there, so equations render without a network (Sphinx's default loads MathJax from a CDN).
# sphinx-copybutton: a copy button on every code cell (prompts and outputs are not copied).
extensions = ['myst_nb', 'sphinx-mathjax-offline', 'sphinx_copybutton']
nb_execution_mode = 'off'                 # the notebooks were executed when committed; render their outputs
nb_output_stderr = 'remove'               # warnings printed while executing are not part of the story
nb_render_markdown_format = 'myst'        # show_doc's API reference comes as markdown outputs
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'html_image']
myst_heading_anchors = 3
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure', 'toc.not_included']
exclude_patterns = ['**.ipynb_checkpoints', '_quarto.yml', 'nbdev.yml', 'sidebar.yml', 'styles.css']

html_theme = 'sphinx_book_theme'
html_title = f"{project} {version}"
html_theme_options = {
    'repository_url': _d['git_url'],
    'use_repository_button': True,
    'show_toc_level': 2,
    'home_page_in_toc': True,
    # The page's table of contents sits in the left sidebar under the chapters, not in a right one: on a 1,440-px
    # screen the right sidebar took ~300 px from the code (the project's code lines run to ~150 characters).
    'secondary_sidebar_items': [],
}
html_sidebars = {'**': ['navbar-logo.html', 'icon-links.html', 'search-button-field.html', 'sbt-sidebar-nav.html', 'page-toc.html']}
html_last_updated_fmt = None
html_static_path = ['_static']
html_css_files = ['custom.css']
copybutton_exclude = '.linenos, .gp, .go'   # line numbers, prompts and printed output are not part of what is copied

"""Build the deeplab_nb documentation from the committed, executed notebooks, offline.

    python docs/build.py site [--out _site/html]  # nbdev's processing, then Sphinx + myst-nb -> _site/html/index.html
    python docs/build.py readme               # README.md from nbs/index.ipynb (what `nbdev_readme` does with Quarto)

nbdev's own `nbdev_docs` needs Quarto, which cannot be installed offline; users who have Quarto can still run it
(nbs/_quarto.yml and nbs/nbdev.yml are kept). This script uses the same processing step (`nbdev.serve.proc_nbs`:
directives, `show_doc` for every exported symbol, hidden cells removed) and hands the result to Sphinx instead.
"""
import html, json, re, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
WIDGET_NOTE = ('*Interactive widget: run this notebook in Jupyter to use it. '
               'The static figure on this page shows the same idea.*')


def _md_cell(text):
    import hashlib
    return {'cell_type': 'markdown', 'id': hashlib.sha1(text.encode()).hexdigest()[:8], 'metadata': {}, 'source': text}


def _yaml_front_matter(cell):
    "The `{title, description}` of nbdev's front-matter raw cell, or None."
    if cell['cell_type'] != 'raw': return None
    src = ''.join(cell['source']).strip()
    if not (src.startswith('---') and src.endswith('---')): return None
    import yaml  # nbdev writes the front matter with yaml.dump, which folds long lines
    return yaml.safe_load(src.strip('-')) or {}


def _show_doc_executes_only_definitions():
    """nbdev's `exec_show_docs` runs every export cell and every cell that contains an import, even when that cell
    also computes (a `#|slow` experiment, a figure). For `show_doc` only the definitions matter: run export cells,
    cells made of imports and `show_doc` calls alone (the API reference), never `#|slow`/`#|gpu` cells. (The notebooks
    were executed when committed.)"""
    import ast
    import nbdev.processors as procs
    from nbdev.config import get_config
    if getattr(procs._do_eval, 'only_definitions', False): return
    flags, do_eval = set(get_config().tst_flags.split()), procs._do_eval
    def _do_eval(cell):
        directives = set(getattr(cell, 'directives_', {}) or {})
        if flags & directives or not do_eval(cell): return False
        if directives & {'export', 'exports', 'exporti', 'exec_doc'}: return True
        return all(isinstance(node, (ast.Import, ast.ImportFrom)) or procs._show_docs([node]) for node in cell.parsed_())
    _do_eval.only_definitions = True
    procs._do_eval = _do_eval  # proc_nbs runs in this process (n_workers=0), so the processors see this one


def process_notebooks(proc: Path):
    "Run nbdev's processors over nbs/ into `proc` (no Quarto needed)."
    import os
    os.chdir(ROOT)
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    _show_doc_executes_only_definitions()
    _build_modidx()
    if proc.exists(): shutil.rmtree(proc)
    proc_nbs(ROOT/'nbs', n_workers=0, force=True)
    made = ROOT/'_proc'
    if made.resolve() != proc.resolve(): shutil.move(str(made), proc)
    return proc


def chapter_order(proc: Path):
    "Chapters in the order a reader learns them: the notebooks' numeric prefixes."
    return sorted(p.stem for p in proc.glob('*.ipynb') if p.stem != 'index')


def _quarto_options_to_tags(cell):
    "nbdev leaves Quarto's cell options (`#| echo: false`) in the source; myst-nb reads tags instead."
    lines = ''.join(cell['source']).splitlines(True)
    options = []
    while lines and lines[0].replace(' ', '').startswith('#|'):
        options.append(lines.pop(0).replace(' ', '').lstrip('#|').strip().lower())
    tags = cell.setdefault('metadata', {}).setdefault('tags', [])
    if 'echo:false' in options: tags.append('remove-input')
    if 'output:false' in options: tags.append('remove-output')
    cell['source'] = ''.join(lines)


def _doc_pages(proc: Path):
    "nbdev's page name of each notebook (its name without the number, as Quarto publishes it) -> ours (the stem)."
    return {re.sub(r'^\d+_', '', p.stem): p.stem for p in proc.glob('*.ipynb')}


def _published_page():
    "Pattern of a link nbdev writes to the published site (doc_host/doc_baseurl/<page>.html); group 1: the page."
    from nbdev.config import get_config
    cfg = get_config()
    return re.escape(cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/') + r'(\w+)\.html'


def _chapter_links(text, pages):
    "A chapter named in code style in the text (`01_atrous`) links to its page."
    return re.sub(r'(?<!\[)`(\d\d_\w+)`(?!\])',
                  lambda m: f'[`{m.group(1)}`]({m.group(1)}.ipynb)' if m.group(1) in pages.values() else m.group(0), text)


def _local_links(text, pages):
    "nbdev links symbols to the published site (doc_host/doc_baseurl/<module>.html#name): point them at this site's pages."
    text = re.sub(_published_page(), lambda m: f'{pages.get(m.group(1), m.group(1))}.html', text)
    def html_link(m):  # MyST would take a relative link for a cross-reference it cannot resolve: write the anchor
        label, href = m.group(1), m.group(2)
        inner = f'<code>{html.escape(label[1:-1])}</code>' if label.startswith('`') and label.endswith('`') else html.escape(label)
        return f'<a href="{href}">{inner}</a>'
    local = '|'.join(re.escape(p) for p in sorted(set(pages.values()), key=len, reverse=True))
    return re.sub(r'\[([^\]\n]+)\]\(((?:' + local + r')\.html(?:#[^)\s]*)?)\)', html_link, text)


def _unlink_code(text):
    "Inside code fences a markdown link is not rendered: keep its text (show_doc links names in signature comments)."
    parts = re.split(r'(```.*?```)', text, flags=re.S)
    return ''.join(re.sub(r'\[`?([^\]`]+?)`?\]\([^)]*\)', r'\1', p) if p.startswith('```') else p for p in parts)


def _md_escape(text):
    "Markdown's special characters taken literally (outside `code` spans): a docstring's k*OS+1, <stem>, __add__."
    parts = re.split(r'(`[^`\n]*`)', text)
    return ''.join(p if p.startswith('`') else re.sub(r'([\\*_<>\[\]])', r'\\\1', p) for p in parts)


def _show_doc_markdown(text):
    """show_doc's markdown, made for Quarto: its `---` rule (a transition docutils refuses inside an output), the
    Quarto attributes on the source link, the heading ids Quarto gives to methods (`#xception.set_output_stride`;
    plain names get the same id from MyST), and names and docstrings pasted in unescaped."""
    text = re.sub(r'^---[ \t]*\n', '', text, flags=re.M)
    text = re.sub(r'\[source\]\((\S+?)\)\{[^}]*\}', r'<a href="\1" style="float:right; font-size:smaller">source</a>', text)
    def heading(m):
        level, name = m.group(1), m.group(2)
        anchor = f'<a id="{name.lower()}"></a>\n\n' if '.' in name else ''
        return f'{anchor}{level} {_md_escape(name)}'
    text = re.sub(r'^(#{2,5}) ([\w.]+)[ \t]*$', heading, text, flags=re.M)
    return re.sub(r'^\*(.+)\*[ \t]*$', lambda m: f'*{_md_escape(m.group(1))}*', text, flags=re.M)  # the docstring line


def adapt_for_sphinx(nb_path: Path, chapters=None, pages=None):
    "Turn nbdev's Quarto-flavoured processed notebook into one myst-nb renders well."
    nb = json.loads(nb_path.read_text())
    pages = pages or _doc_pages(nb_path.parent)
    cells = []
    for cell in nb['cells']:
        fm = _yaml_front_matter(cell)
        if fm is not None:   # Quarto reads the title from YAML; Sphinx needs it as the page's first heading
            text = f"# {fm.get('title', nb_path.stem)}\n"
            if fm.get('description'): text += f"\n> {fm['description']}\n"
            cells.append(_md_cell(text))
            continue
        if cell['cell_type'] == 'markdown':
            cell['source'] = _local_links(_chapter_links(''.join(cell['source']), pages), pages)
        if cell['cell_type'] == 'code':
            _quarto_options_to_tags(cell)
            outs = []
            for o in cell.get('outputs', []):
                data = o.get('data', {})
                if WIDGET_MIME in data: outs.append({'output_type': 'display_data', 'metadata': {},
                                                     'data': {'text/markdown': WIDGET_NOTE}})
                elif o['output_type'] == 'stream' and not ''.join(o.get('text', '')).strip(): continue  # e.g. a widget's '\r'
                else:
                    if 'text/markdown' in data:
                        md = ''.join(data['text/markdown'])
                        if 'show_doc' in ''.join(cell['source']): md = _unlink_code(_show_doc_markdown(md))
                        data['text/markdown'] = _local_links(md, pages)
                    outs.append(o)
            cell['outputs'] = outs
        cells.append(cell)
    if chapters is not None:   # the navigation follows the notebook order
        cells.append(_md_cell('```{toctree}\n:hidden:\n:maxdepth: 1\n\n' + '\n'.join(chapters) + '\n```\n'))
    nb['cells'] = cells
    nb.get('metadata', {}).pop('widgets', None)
    nb_path.write_text(json.dumps(nb, indent=1))


def build_site(out: Path = ROOT/'_site'/'html', proc: Path = ROOT/'_proc', quiet=True):
    "Process the notebooks and render them with Sphinx; returns the folder holding index.html."
    # (myst-nb writes the outputs it extracts to `jupyter_execute/` beside `out`, so `out` sits one level down)
    from sphinx.cmd.build import build_main
    process_notebooks(proc)
    chapters = chapter_order(proc)
    pages = _doc_pages(proc)
    for p in proc.glob('*.ipynb'): adapt_for_sphinx(p, chapters if p.stem == 'index' else None, pages)
    if out.exists(): shutil.rmtree(out)
    args = ['-b', 'html', '-c', str(ROOT/'docs'), '-j', '1', str(proc), str(out)]
    if quiet: args.insert(0, '-q')
    rc = build_main(args)
    if rc: raise SystemExit(f'sphinx-build failed with exit code {rc}')
    return out


def _outputs_md(cell):
    parts = []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream' and o.get('name') == 'stdout':
            parts.append('```\n' + ''.join(o['text']).rstrip() + '\n```')
        data = o.get('data', {})
        if 'text/markdown' in data: parts.append(''.join(data['text/markdown']).rstrip())
        elif 'text/plain' in data and not any(k.startswith('image/') for k in data):
            parts.append('```\n' + ''.join(data['text/plain']).rstrip() + '\n```')
    return parts


def readme_text(proc: Path):
    "GitHub-flavoured markdown of the processed index notebook."
    nb = json.loads((proc/'index.ipynb').read_text())
    parts = []
    for cell in nb['cells']:
        fm = _yaml_front_matter(cell)
        if fm is not None:
            parts.append(f"# {fm.get('title', 'index')}\n" + (f"\n> {fm['description']}" if fm.get('description') else ''))
        elif cell['cell_type'] == 'markdown': parts.append(''.join(cell['source']).strip())
        elif cell['cell_type'] == 'code':
            src = ''.join(cell['source']).strip()
            if src: parts.append('```python\n' + src + '\n```')
            parts += _outputs_md(cell)
    text = '\n\n'.join(p for p in parts if p) + '\n'
    text = re.sub(r'\]\((\d\d_\w+\.ipynb)\)', r'](nbs/\1)', text)  # chapter links from the repository root
    pages = _doc_pages(proc)  # nbdev's symbol links point at a published site: link the chapter notebook instead
    text = re.sub(_published_page() + r'(#[\w.]*)?', lambda m: f'nbs/{pages.get(m.group(1), m.group(1))}.ipynb', text)
    return '<!-- generated from nbs/index.ipynb by `python docs/build.py readme`: edit the notebook, not this file -->\n\n' + text


def build_readme(proc: Path = ROOT/'_proc'):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        text = readme_text(process_notebooks(Path(d)/'_proc'))
    (ROOT/'README.md').write_text(text)
    return text


if __name__ == '__main__':
    what = sys.argv[1] if len(sys.argv) > 1 else 'site'
    if what == 'site':
        out = Path(sys.argv[sys.argv.index('--out') + 1]) if '--out' in sys.argv else ROOT/'_site'/'html'
        print(build_site(out.resolve(), quiet='--verbose' not in sys.argv)/'index.html')
    elif what == 'readme': build_readme(); print(ROOT/'README.md')
    else: raise SystemExit(f"unknown target {what!r}: use 'site' or 'readme'")

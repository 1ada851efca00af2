"""Build the deeplab_nb documentation from the committed, executed notebooks, offline.

    python docs/build.py site [--out _site/html]  # nbdev's processing, then Sphinx + myst-nb -> _site/html/index.html
    python docs/build.py readme               # README.md from nbs/index.ipynb (what `nbdev_readme` does with Quarto)

nbdev's own `nbdev_docs` needs Quarto, which cannot be installed offline; users who have Quarto can still run it
(nbs/_quarto.yml and nbs/nbdev.yml are kept). This script uses the same processing step (`nbdev.serve.proc_nbs`:
directives, `show_doc` for every exported symbol, hidden cells removed) and hands the result to Sphinx instead, with
what a learner reading the site needs: the exported code on the page (a chapter's main definitions always in view,
other long cells and `#|fold` cells folded behind a toggle that names what is inside), chapter numbers from the file names (`05_aspp` -> 5, `14c_cpu` -> 14c), figures with captions and
alt text taken from the notebook, an API reference page and a general index, and the *source* notebook (from
`nbs/`, cleaned) as each page's download.
"""
import ast, html, json, re, shutil, sys, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
WIDGET_NOTE = ('*Interactive widget: run this notebook in Jupyter to use it. '
               'The static figure on this page shows the same idea.*')
FOLD_LINES = 25      # a code cell longer than this is folded behind a toggle that says what is inside...
CORE_TAG = 'core'    # ...unless it is a chapter's main definition (`#|core`, or named by the index's map): never folded
FOLD_TAG = 'fold'    # `#|fold`: plumbing a reader can skip (argument checks, error-path tests), folded at any length
EXPORT_TAG = 'nbdev-export'
PAPER_MAP = '## Where each idea of the paper lives'  # the index's table: paper -> chapter -> `deeplab_nb.module.name`
API_PAGE = 'api'


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


def _keep_exported_source():
    """nbdev's `rm_export` drops every exported cell from the page (an API reference shows signatures only). Here the
    implementation is what the chapters teach: keep exported cells, tagged so `adapt_for_sphinx` can fold the long ones;
    `#|default_exp` and `#|hide` cells are still removed."""
    import nbdev.processors as procs
    if getattr(procs.rm_export, 'keeps_source', False): return
    def rm_export(cell):
        directives = set(cell.directives_ or {})
        if directives & {'default_exp', 'hide'}: del cell['source']; return
        tags = cell.metadata.setdefault('tags', [])
        if directives & {'export', 'exports', 'exporti'}: tags.append(EXPORT_TAG)
        tags += sorted(directives & {CORE_TAG, FOLD_TAG})  # myst-nb writes them as classes: div.cell.tag_core
    rm_export.keeps_source = True
    procs.rm_export = rm_export  # `FilterDefaults.base_procs` looks the name up when proc_nbs runs


def _is_record(obj):
    "A NamedTuple or dataclass class: its fields are its signature."
    import dataclasses, inspect
    return inspect.isclass(obj) and (dataclasses.is_dataclass(obj) or (issubclass(obj, tuple) and hasattr(obj, '_fields')))


def _short_default(obj, limit=40):
    "A default value as a signature shows it: its repr, or for a long one its type and size (`<dict of 8>`)."
    text = obj.__name__ if hasattr(obj, '__name__') else repr(obj)
    if len(text) <= limit: return text
    size = f' of {len(obj)}' if hasattr(obj, '__len__') else ''
    return f'<{type(obj).__name__}{size}>'


def _signatures_for_readers():
    """fastcore's docments (behind show_doc) read a NamedTuple as `(*args, **kwargs)` (its `__init__`) and print a
    default however long its repr (a 9,431-character tuple). Read NamedTuples like dataclasses (fields, with their
    trailing comments) and abbreviate long defaults."""
    import dataclasses, fastcore.docments as fd
    if getattr(fd._fmt_default, 'abbreviates', False): return
    def _fmt_default(o):
        return '' if o is fd.empty else _short_default(o)
    _fmt_default.abbreviates = True
    fd._fmt_default = _fmt_default
    fd.isdataclass = _is_record
    fd.is_dataclass = lambda o: _is_record(o) or dataclasses.is_dataclass(o)


def process_notebooks(proc: Path):
    "Run nbdev's processors over nbs/ into `proc` (no Quarto needed)."
    import os
    os.chdir(ROOT)
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    _show_doc_executes_only_definitions()
    _keep_exported_source()
    _signatures_for_readers()
    _build_modidx()
    if proc.exists(): shutil.rmtree(proc)
    proc_nbs(ROOT/'nbs', n_workers=0, force=True)
    made = ROOT/'_proc'
    if made.resolve() != proc.resolve(): shutil.move(str(made), proc)
    return proc


def chapter_order(proc: Path):
    "Chapters in the order a reader learns them: the notebooks' prefixes (`14_...` < `14a_...` < `14b_...` < `15_...`)."
    return sorted((p.stem for p in proc.glob('*.ipynb') if p.stem != 'index'), key=lambda stem: (chapter_number(stem) is None, _chapter_key(stem)))


SIDEBAR_GROUPS = ('Core', 'Measured', 'Training', 'Study', 'Tools')  # the sidebar's captions, in this order


def chapter_group(stem):
    """The sidebar group of a chapter, by a rule on its number so that a new notebook finds its place: 01-07 the
    model idea by idea (Core), their lettered side chapters and 08 (Measured), 09-14 with theirs (Training: data,
    metrics, inference, the protocol and its engine), 15 and its appendices (Tools: the command line, runners), 16 and
    later with theirs (Study: the experiments, other datasets)."""
    m = re.match(r'(\d+)([a-z]?)_', stem)
    if not m: return 'Tools'
    number, letter = int(m.group(1)), m.group(2)
    if number <= 7: return 'Measured' if letter else 'Core'
    if number == 8: return 'Measured'
    if number <= 14: return 'Training'
    return 'Tools' if number == 15 else 'Study'


def _toctrees(chapters):
    "One hidden toctree per sidebar group, captioned, in SIDEBAR_GROUPS order; the API reference and index under Tools."
    groups = {group: [stem for stem in chapters if chapter_group(stem) == group] for group in SIDEBAR_GROUPS}
    groups['Tools'] += [API_PAGE, 'genindex']
    return [_md_cell(f'```{{toctree}}\n:hidden:\n:caption: {group}\n:maxdepth: 1\n\n' + '\n'.join(stems) + '\n```\n')
            for group, stems in groups.items() if stems]


def chapter_number(stem):
    "The chapter number a reader sees, from the file name: `05_aspp` -> '5', `14c_cpu` -> '14c'; None if unnumbered."
    m = re.match(r'(\d+)([a-z]?)_', stem)
    return f'{int(m.group(1))}{m.group(2)}' if m else None


def _chapter_key(stem):
    m = re.match(r'(\d+)([a-z]?)_', stem)
    return (int(m.group(1)), m.group(2), stem) if m else (0, '', stem)


def _quarto_options_to_tags(cell):
    """nbdev leaves Quarto's cell options (`#| echo: false`) in the source; myst-nb reads tags instead.
    Returns the options as `{name: value}` (e.g. `fig-cap`)."""
    lines = ''.join(cell['source']).splitlines(True)
    options = {}
    while lines and lines[0].replace(' ', '').startswith('#|'):
        name, _, value = lines.pop(0).strip().lstrip('#|').partition(':')
        options[name.strip().lower()] = value.strip()
    tags = cell.setdefault('metadata', {}).setdefault('tags', [])
    if options.get('echo', '').lower() == 'false': tags.append('remove-input')
    if options.get('output', '').lower() == 'false': tags.append('remove-output')
    cell['source'] = ''.join(lines)
    return options


def _doc_pages(proc: Path):
    "nbdev's page name of each notebook (its name without the number, as Quarto publishes it) -> ours (the stem)."
    return {re.sub(r'^\d+[a-z]?_', '', p.stem): p.stem for p in proc.glob('*.ipynb')}


def _published_page():
    "Pattern of a link nbdev writes to the published site (doc_host/doc_baseurl/<page>.html); group 1: the page."
    from nbdev.config import get_config
    cfg = get_config()
    return re.escape(cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/') + r'(\w+)\.html'


def _chapter_links(text, pages):
    "A chapter named in code style in the text (`01_atrous`) links to its page."
    return re.sub(r'(?<!\[)`(\d\d[a-z]?_\w+)`(?!\])',
                  lambda m: f'[`{m.group(1)}`]({m.group(1)}.ipynb)' if m.group(1) in pages.values() else m.group(0), text)


def _local_links(text, pages):
    "nbdev links symbols to the published site (doc_host/doc_baseurl/<module>.html#name): point them at this site's pages."
    text = re.sub(_published_page(), lambda m: f'{pages.get(m.group(1), m.group(1))}.html', text)
    def html_link(m):  # MyST would take a relative link for a cross-reference it cannot resolve: write the anchor
        label, href = m.group(1), m.group(2)
        if '#_' in href: return label  # a private name (`_set_atrous`) has no API entry to link to: its code text stays
        inner = f'<code>{html.escape(label[1:-1])}</code>' if label.startswith('`') and label.endswith('`') else html.escape(label)
        return f'<a href="{href}">{inner}</a>'
    local = '|'.join(re.escape(p) for p in sorted(set(pages.values()), key=len, reverse=True))
    return re.sub(r'\[([^\]\n]+)\]\(((?:' + local + r')\.html(?:#[^)\s]*)?)\)', html_link, text)


def _unlink_code(text):
    "Inside code fences a markdown link is not rendered: keep its text (show_doc links names in signature comments)."
    parts = re.split(r'(```.*?```)', text, flags=re.S)
    return ''.join(re.sub(r'\[`?([^\]`]+?)`?\]\([^)]*\)', r'\1', p) if p.startswith('```') else p for p in parts)


_MD_KEEP = re.compile(r'(`[^`\n]*`'                          # code spans
                      r'|\$\$.+?\$\$|(?<![\\\w])\$[^$\n]+?\$(?!\w)'   # $$math$$ and $math$ (not a price like "$5")
                      r'|\[[^\]\n]+\]\([^)\s]+\)'                   # [markdown](links)
                      r'|<https?://[^>\s]+>|https?://[^\s)>]+)')    # <autolinks> and bare URLs


def _md_escape(text):
    """Markdown's special characters taken literally (a docstring's k*OS+1, <stem>, __add__), except where the
    docstring means markdown: `code`, $math$ (MathJax typesets it) and [links](...)."""
    parts = _MD_KEEP.split(text)
    return ''.join(p if i % 2 else re.sub(r'([\\*_<>\[\]])', r'\\\1', p) for i, p in enumerate(parts))


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


def _defined_names(source):
    "Names a cell defines at top level (classes, functions, assignments), in order; [] if it does not parse."
    try: tree = ast.parse(source)
    except SyntaxError: return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def paper_map():
    """The index's map of the paper, `[(chapter stem, name)]`: the definition each idea lives in (a chapter's main
    definitions; `tests/test_structure.py` checks that each exists where the map says)."""
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    text = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    section = text.split(PAPER_MAP, 1)[1].split('\n## ', 1)[0] if PAPER_MAP in text else ''
    return re.findall(r'\]\((\w+)\.ipynb\) \| `deeplab_nb\.\w+\.(\w+)` \|$', section, re.M)


def folds(source, tags, main_names=()):
    """Whether a code cell is folded on the page: `#|fold` always; a main definition (`#|core`, or a cell defining a
    name of `main_names`, the chapter's names in the index's map) never; any other cell when over FOLD_LINES lines."""
    if 'remove-input' in tags or CORE_TAG in tags or set(_defined_names(source)) & set(main_names): return False
    return FOLD_TAG in tags or len(source.strip().splitlines()) > FOLD_LINES


def _fold_prompt(source, exported):
    "What a folded cell's toggle says: `Show the code of Decoder (38 lines)`, `Show the test (31 lines)`."
    n = len(source.strip().splitlines())
    answer = re.match(r'#\s*(Answer \d+)', source.strip())  # an exercise's answer (`#|fold`, first line `# Answer 1: ...`)
    if answer: return f'Show {answer.group(1).lower()}', f'Hide {answer.group(1).lower()}'
    defs = [d for d in _defined_names(source) if not d.startswith('_')] or _defined_names(source)
    if exported and defs:
        shown = ', '.join(defs[:3]) + (f' and {len(defs) - 3} more' if len(defs) > 3 else '')
        return f'Show the code of {shown} ({n} lines)', f'Hide the code of {shown}'
    what = 'test' if re.search(r'\btest_(eq|close|fail|ne|is|stdout|warns|shuffled|eq_type)\b|^\s*assert\b', source, re.M) else 'code'
    return f'Show the {what} ({n} lines)', f'Hide the {what}'


def _string_value(node):
    "A title's text from the source: a string literal, or an f-string with its fields shown as '...'."
    if isinstance(node, ast.Constant) and isinstance(node.value, str): return node.value
    if isinstance(node, ast.JoinedStr):  # an f-string: worth a caption only if at most one field is left unknown
        if sum(not isinstance(v, ast.Constant) for v in node.values) > 1: return None
        return ''.join(v.value if isinstance(v, ast.Constant) else '...' for v in node.values)
    return None


def _figure_titles(source):
    "The titles a cell gives its figure (`suptitle`, then `set_title`/`title`), in source order."
    try: tree = ast.parse(source)
    except SyntaxError: return []
    found = {'suptitle': [], 'title': []}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            kind = {'suptitle': 'suptitle', 'set_title': 'title', 'title': 'title'}.get(node.func.attr)
            text = _string_value(node.args[0])
            if kind and text and text.strip() and text.strip() != '...': found[kind].append((node.lineno, text.strip()))
    return [t for _, t in sorted(found['suptitle'])] or [t for _, t in sorted(found['title'])]


def _plain_text(md):
    "Markdown as plain words (for alt text): math, code marks, links and emphasis reduced to their text."
    text = re.sub(r'\[([^\]]+)\]\([^)]*\)', r'\1', md)
    text = re.sub(r'[`*_$\\]|\{[^}]*\}', '', text)
    return ' '.join(text.split())


def _last_sentence(markdown):
    "The last sentence of the markdown before a figure (a figure's introduction), or ''."
    text = ' '.join(l for l in markdown.splitlines() if l.strip() and not l.lstrip().startswith(('#', '|', '```', '$$')))
    sentences = re.split(r'(?<=[.:!?])\s+(?=[A-Z(])', text.strip())
    return sentences[-1].rstrip(':') + ('.' if sentences[-1].endswith(':') else '') if text.strip() else ''


def figure_caption(source, options, previous_markdown=''):
    """A figure's caption, taken from the notebook in this order: a `#| fig-cap:` option, the figure's own title(s)
    (`suptitle`, `set_title`), the cell's first comment, the last sentence of the markdown before it."""
    if options.get('fig-cap'): return options['fig-cap'].strip('"\'')
    titles = _figure_titles(source)
    if titles: return '; '.join(dict.fromkeys(titles[:3])) + ('; ...' if len(set(titles)) > 3 else '')
    comment = next((l.strip().lstrip('#').strip() for l in source.splitlines() if l.strip().startswith('#') and not l.strip().startswith('#|')), '')
    return comment or _last_sentence(previous_markdown)


def _caption_markdown(text):
    "A caption is one MyST paragraph: mathtext `$...$` stays math, other markdown characters literal, one line."
    return _md_escape(' '.join(text.split()))


def public_names(module):
    "`__all__` of one of the package's modules (what a user imports), or []."
    import importlib
    try: return list(getattr(importlib.import_module(module), '__all__', []))
    except Exception: return []


def _default_exp(stem):
    "The module a chapter exports (`#|default_exp aspp` -> deeplab_nb.aspp), read from its source notebook."
    from nbdev.config import get_config
    nb = ROOT/'nbs'/f'{stem}.ipynb'
    if not nb.exists(): return None
    for cell in json.loads(nb.read_text())['cells']:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(cell['source']), re.M)
        if m and cell['cell_type'] == 'code': return f'{get_config().lib_name}.{m.group(1)}'
    return None


def _py_kind(module, name):
    import importlib, inspect
    obj = getattr(importlib.import_module(module), name, None)
    return 'class' if inspect.isclass(obj) else 'function' if callable(obj) else 'data'


def _py_target(module, name):
    "A Sphinx Python object for `name` (index entry, search result, link target) without a second signature on the page."
    return f'```{{py:{_py_kind(module, name)}}} {name}\n:module: {module}\n:no-typesetting:\n```\n'


def _show_doc_name(cell):
    m = re.search(r'^show_doc\(([\w.]+)', ''.join(cell['source']), re.M)
    return m.group(1) if m else None


def adapt_for_sphinx(nb_path: Path, chapters=None, pages=None):
    "Turn nbdev's Quarto-flavoured processed notebook into one myst-nb renders well."
    nb = json.loads(nb_path.read_text())
    pages = pages or _doc_pages(nb_path.parent)
    module = _default_exp(nb_path.stem)
    public = set(public_names(module)) if module else set()
    number = chapter_number(nb_path.stem)
    main_names = [name for stem, name in paper_map() if stem == nb_path.stem]
    cells, previous_markdown, extra = [], '', []
    for cell in nb['cells']:
        cell.pop('has_sd', None)  # nbdev's mark on the show_doc cells it adds: not nbformat (myst-nb's validation logs an error)
        fm = _yaml_front_matter(cell)
        if fm is not None:   # Quarto reads the title from YAML; Sphinx needs it as the page's first heading
            title = fm.get('title', nb_path.stem)
            text = f"# {number}. {title}\n" if number else f"# {title}\n"
            if fm.get('description'): text += f"\n> {fm['description']}\n"
            cells.append(_md_cell(text))
            continue
        if cell['cell_type'] == 'markdown':
            cell['source'] = _local_links(_chapter_links(''.join(cell['source']), pages), pages)
            previous_markdown = cell['source']
        if cell['cell_type'] == 'code':
            options = _quarto_options_to_tags(cell)
            meta = cell['metadata']
            exported = EXPORT_TAG in meta.get('tags', [])
            source = cell['source']
            if folds(source, meta['tags'], main_names):
                meta['tags'].append('hide-input')
                show, hide = _fold_prompt(source, exported)
                meta.setdefault('mystnb', {}).update(code_prompt_show=show, code_prompt_hide=hide)
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
            for o in outs: _size_image(o)
            cell['outputs'], after = _split_after_figures(outs)
            if any(k.startswith('image/') for o in outs for k in o.get('data', {})):
                caption = figure_caption(source, options, previous_markdown)
                if caption:
                    meta.setdefault('mystnb', {})['figure'] = {'caption': _caption_markdown(caption)}
                    meta['mystnb']['image'] = {'alt': options.get('fig-alt', '').strip('"\'') or _plain_text(caption)}
            if after: extra.append({'cell_type': 'code', 'execution_count': None, 'id': cell.get('id', 'x') + 'b', 'source': '',
                                    'metadata': {'tags': ['remove-input']}, 'outputs': after})
            sd_name = _show_doc_name(cell)
            if sd_name in public:      # the object's target sits on its API entry
                cells.append(_md_cell(_py_target(module, sd_name))); public.discard(sd_name)
            elif exported:             # public names a cell defines without a show_doc (constants, tables): on the code
                defined = [n for n in _defined_names(source) if n in public]
                if defined: cells.append(_md_cell(''.join(_py_target(module, n) for n in defined))); public -= set(defined)
        cells.append(cell)
        cells += extra; extra = []
    cells = _docs_before_code(cells)
    if chapters is not None:   # the navigation: the chapters in notebook order, grouped (SIDEBAR_GROUPS)
        cells += _toctrees(chapters)
    nb['cells'] = cells
    nb.get('metadata', {}).pop('widgets', None)
    nb_path.write_text(json.dumps(nb, indent=1))
    return sorted(public)  # public names this page did not place (the API page lists them at their module)


def _size_image(output):
    """An image output without a display size (a JPEG, a PNG shown at its pixel size) gets its pixel size: myst-nb
    writes width/height on the <img>, and Sphinx links every sized image to its file (click to enlarge)."""
    import base64, io
    data, meta = output.get('data', {}), output.setdefault('metadata', {})
    for mime in [k for k in data if k in ('image/png', 'image/jpeg')]:
        if isinstance(meta.get(mime), dict) and meta[mime].get('width'): continue
        from PIL import Image
        raw = data[mime] if isinstance(data[mime], str) else ''.join(data[mime])
        width, height = Image.open(io.BytesIO(base64.b64decode(raw))).size
        meta[mime] = {**(meta.get(mime) or {}), 'width': width, 'height': height}


def _split_after_figures(outs):
    """myst-nb wraps every displayed output of a cell with a caption in the figure: the displays after a cell's last
    image (a widget's note, a table) go to an input-less cell of their own. Returns (kept, moved)."""
    last = max((i for i, o in enumerate(outs) if any(k.startswith('image/') for k in o.get('data', {}))), default=None)
    if last is None: return outs, []
    moved = [o for o in outs[last + 1:] if o['output_type'] in ('display_data', 'execute_result')]
    return [o for o in outs if not any(o is m for m in moved)], moved


def _docs_before_code(cells):
    """nbdev puts each exported cell's `show_doc` entries after its code; a reader wants what a thing is (signature,
    docstring) before how it is done: move those entries (and their targets) above the code they document."""
    out = []
    i = 0
    while i < len(cells):
        cell = cells[i]
        if cell['cell_type'] == 'code' and EXPORT_TAG in cell['metadata'].get('tags', []):
            j, docs = i + 1, []
            defined = set(_defined_names(cell['source']))
            while j < len(cells):
                c = cells[j]
                is_target = c['cell_type'] == 'markdown' and ''.join(c['source']).startswith('```{py:')
                name = _show_doc_name(c) if c['cell_type'] == 'code' else None
                if is_target or (name and name.split('.')[0] in defined): docs.append(c); j += 1
                else: break
            if 'hide-input' not in cell['metadata'].get('tags', []): docs = [_without_signature(c) for c in docs]
            out += docs + [cell]
            i = j
        else:
            out.append(cell); i += 1
    return out


def _without_signature(cell):
    """A show_doc entry above code that is in view (not folded) keeps its heading, anchor and docstring but not the
    signature: the code right below shows it, and twice on one screen reads as a slip."""
    for o in cell.get('outputs', []):
        md = o.get('data', {}).get('text/markdown')
        if md: o['data']['text/markdown'] = re.sub(r'```python\n(?:async def|def|class) .*?```\n*', '', ''.join(md), flags=re.S)
    return cell


def api_page(proc: Path, chapters):
    "The API reference: every public name, grouped by module in chapter order, each linked to where its chapter explains it."
    lines = ['# API reference', '',
             'Every public name of the package (its modules\' `__all__`), grouped by module in the order of the chapters. '
             'Each name links to where its chapter defines and explains it; [the index](genindex) lists them alphabetically.', '']
    for stem in chapters:
        module = _default_exp(stem)
        names = public_names(module) if module else []
        if not names: continue
        title = next((c for c in json.loads((proc/f'{stem}.ipynb').read_text())['cells'] if c['cell_type'] == 'markdown'), None)
        heading = ''.join(title['source']).splitlines()[0].lstrip('# ').strip() if title else stem
        lines += [f'## `{module}`', '', f'Chapter [{heading}]({stem}.ipynb).', '',
                  '| name | what it is |', '|---|---|']
        for name in names:
            lines.append(f'| {{py:{_py_role(module, name)}}}`~{module}.{name}` | {_summary(module, name)} |')
        lines.append('')
    (proc/f'{API_PAGE}.md').write_text('\n'.join(lines))


def _py_role(module, name):
    return {'class': 'class', 'function': 'func', 'data': 'data'}[_py_kind(module, name)]


def _summary(module, name):
    "The first line of a public name's docstring (a constant: its kind), escaped for a table cell."
    import importlib, inspect
    obj = getattr(importlib.import_module(module), name, None)
    doc = (inspect.getdoc(obj) or '') if (inspect.isclass(obj) or callable(obj)) else ''
    first = doc.strip().split('\n\n')[0].replace('\n', ' ') if doc else f'a `{type(obj).__name__}`'
    return _md_escape(first).replace('|', '\\|')


def _source_notebooks(out: Path, names):
    """Each page's download is the notebook from nbs/ (the one that runs), cleaned as nbdev_clean cleans it, in place
    of the processed copy Sphinx put in _sources/."""
    from nbdev.clean import clean_nb
    for stem in names:
        src = ROOT/'nbs'/f'{stem}.ipynb'
        if not src.exists(): continue
        nb = json.loads(src.read_text())
        clean_nb(nb)
        (out/'_sources'/f'{stem}.ipynb').write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


def build_site(out: Path = ROOT/'_site'/'html', proc: Path = ROOT/'_proc', quiet=True):
    """Process the notebooks and render them with Sphinx; returns the folder holding index.html.
    Every warning (nbdev's and Sphinx's) is written to `out.parent/'warnings.txt'`: a clean build leaves it empty."""
    # (myst-nb writes the outputs it extracts to `jupyter_execute/` beside `out`, so `out` sits one level down)
    from sphinx.cmd.build import build_main
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        process_notebooks(proc)
        chapters = chapter_order(proc)
        pages = _doc_pages(proc)
        for p in proc.glob('*.ipynb'): adapt_for_sphinx(p, chapters if p.stem == 'index' else None, pages)
        api_page(proc, chapters)
    caught = [f'{w.category.__name__}: {w.message}' for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    warnfile = out.parent/'warnings.txt'
    args = ['-b', 'html', '-c', str(ROOT/'docs'), '-j', '1', '-w', str(warnfile), str(proc), str(out)]
    if quiet: args.insert(0, '-q')
    from sphinx.deprecation import RemovedInSphinx11Warning
    with warnings.catch_warnings():
        # sphinx-book-theme 1.4 and myst-parser 5.2 (the latest releases) still read Sphinx's deprecated `.app`: their
        # warning is for them to fix, and it buried everything else in a test run (248 lines); ours still show
        warnings.filterwarnings('ignore', category=RemovedInSphinx11Warning, module=r'(sphinx_book_theme|myst_parser)\.')
        rc = build_main(args)
    if rc: raise SystemExit(f'sphinx-build failed with exit code {rc}')
    _source_notebooks(out, [p.stem for p in proc.glob('*.ipynb')])
    sphinx_warnings = warnfile.read_text().strip()
    warnfile.write_text('\n'.join(caught + ([sphinx_warnings] if sphinx_warnings else [])))
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
            if src and not re.match(r'#\|\s*echo:\s*false', src): parts.append('```python\n' + src + '\n```')  # echo: its output only
            parts += _outputs_md(cell)
    text = '\n\n'.join(p for p in parts if p) + '\n'
    text = re.sub(r'\]\((\d\d[a-z]?_\w+\.ipynb)\)', r'](nbs/\1)', text)  # chapter links from the repository root (14c_cpu too)
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
        site = build_site(out.resolve(), quiet='--verbose' not in sys.argv)
        found = (site.parent/'warnings.txt').read_text()
        print(site/'index.html')
        if found: raise SystemExit(f'the build warned:\n{found}')
    elif what == 'readme': build_readme(); print(ROOT/'README.md')
    else: raise SystemExit(f"unknown target {what!r}: use 'site' or 'readme'")

"""The documentation site, built offline from the committed notebooks and checked in a real browser.

Builds the site with `docs/build.py` (nbdev's processing + Sphinx/myst-nb), serves it on localhost and opens every
page in headless Chromium (Debian's `chromium`, driven by Playwright): each page loads, shows its notebook's title,
every image on it has really loaded (with its own aspect ratio), every exported function and class has its API
entry (`show_doc`), every internal link (and its #anchor) resolves, the equations are typeset by the
MathJax that ships with the site, and nothing is fetched from outside it. A screenshot of the home page is written to
`artifacts/docs-home.png`.
"""
import functools, http.server, json, os, re, shutil, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse, unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'docs'))
import build  # docs/build.py

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
ARTIFACTS = ROOT/'artifacts'


def notebook_title(nb_path):
    "The `# Title` of a notebook's first markdown cell (nbdev's front matter)."
    nb = json.loads(Path(nb_path).read_text())
    first = next(c for c in nb['cells'] if c['cell_type'] == 'markdown')
    return ''.join(first['source']).strip().splitlines()[0].lstrip('#').strip()


def plain(text):
    "Text as a reader compares it: Sphinx's typographic quotes and heading-link marks (#, ¶) aside."
    for a, b in (('\u2019', "'"), ('\u2018', "'"), ('\u201c', '"'), ('\u201d', '"'), ('\u2013', '-'), ('\u2014', '-'), ('¶', ''), ('#', '')):
        text = text.replace(a, b)
    return ' '.join(text.split())


def markdown_text(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    return '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')


def api_names(nb_path):
    "Public functions and classes a chapter defines in its exported cells: nbdev gives each a `show_doc` entry."
    nb = json.loads(Path(nb_path).read_text())
    source = '\n'.join(''.join(c['source']) for c in nb['cells']
                       if c['cell_type'] == 'code' and re.match(r'#\|\s*exports?\b', ''.join(c['source'])))
    source = re.sub(r'^@patch\b.*\n(?:def|class) ', '', source, flags=re.M)  # methods patched onto a class: Class.name entries
    return [n for n in re.findall(r'^(?:def|class) (\w+)', source, flags=re.M) if not n.startswith('_')]


def notebook_has_images(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    return any(k.startswith('image/') for c in nb['cells'] if c['cell_type'] == 'code'
               for o in c.get('outputs', []) for k in o.get('data', {}))


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')/'_site'
    build.build_site(out, proc=tmp_path_factory.mktemp('proc')/'_proc')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    class Quiet(handler.func):
        def log_message(self, *a): pass
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{server.server_address[1]}/'
    server.shutdown()


def test_readme_is_generated_from_index():
    "README.md is what docs/build.py makes of nbs/index.ipynb (edit the notebook, then `python docs/build.py readme`)."
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        expected = build.readme_text(build.process_notebooks(Path(d)/'_proc'))
    assert (ROOT/'README.md').read_text() == expected, 'README.md is stale: run `python docs/build.py readme`'


def test_every_page_in_a_browser(site):
    if CHROMIUM is None:
        if os.environ.get('CI'): pytest.fail('chromium is not installed: .ci/run installs it with apt-get')
        pytest.skip('headless chromium not installed (apt-get install chromium)')
    from playwright.sync_api import sync_playwright
    out, base = site
    notebooks = sorted((ROOT/'nbs').glob('*.ipynb'))
    pages = {('index' if p.stem == 'index' else p.stem): p for p in notebooks}
    for name in pages: assert (out/f'{name}.html').exists(), f'{name}.html was not built'
    broken, anchors_needed = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync'])
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        outside = []  # the site must be self-contained: readers open it offline too
        page.on('request', lambda r: outside.append(r.url) if not r.url.startswith((base, 'data:', 'blob:')) else None)
        ids = {}
        for name, nb in pages.items():
            url = urljoin(base, f'{name}.html')
            resp = page.goto(url, wait_until='load')
            assert resp is not None and resp.ok, f'{url} did not load'
            title = plain(notebook_title(nb))
            h1 = plain(page.locator('h1').first.inner_text())
            assert title in h1, f'{name}: first heading {h1!r} is not the notebook title {title!r}'
            assert title in plain(page.title()), f'{name}: window title {page.title()!r} lacks {title!r}'
            raw_h1 = page.eval_on_selector_all('article h1', 'els => els.map(e => e.textContent.trim())')
            assert len(raw_h1) == 1, f'{name}: a page has one title, this one has {len(raw_h1)} <h1>: {raw_h1[:5]}'
            assert not raw_h1[0].startswith('#'), f'{name}: title {raw_h1[0]!r} starts with a literal #'
            if '$' in markdown_text(nb):
                try: page.wait_for_function('() => window.MathJax && MathJax.startup && MathJax.startup.promise', timeout=15_000)
                except Exception: pytest.fail(f'{name}: MathJax did not load (requests outside the site: {outside[:3]})')
                page.evaluate('() => MathJax.startup.promise')
                typeset = page.eval_on_selector_all('mjx-container', 'els => els.length')
                errors = page.eval_on_selector_all('mjx-merror', 'els => els.map(e => e.getAttribute("data-mjx-error"))')
                assert typeset > 0, f'{name}: the notebook has equations but MathJax typeset none'
                assert not errors, f'{name}: MathJax errors {errors[:5]}'
            imgs = page.eval_on_selector_all('article img', 'els => els.map(e => [e.src, e.complete && e.naturalWidth > 0])')
            bad = [src for src, ok in imgs if not ok]
            assert not bad, f'{name}: images that did not load: {bad}'
            if notebook_has_images(nb): assert imgs, f'{name}: the notebook has figures but the page shows none'
            squeezed = page.eval_on_selector_all('article img', """els => els.filter(e => e.naturalWidth > 0 && Math.abs(
                (e.clientWidth / e.clientHeight) / (e.naturalWidth / e.naturalHeight) - 1) > 0.02).map(e => e.src)""")
            assert not squeezed, f'{name}: figures drawn with another aspect ratio than their own: {squeezed[:3]}'
            page_ids = set(page.eval_on_selector_all('[id]', 'els => els.map(e => e.id)'))
            undocumented = [n for n in api_names(nb) if n.lower() not in page_ids]
            assert not undocumented, f'{name}: no API entry (show_doc) on the page for {undocumented[:5]}'
            shown = plain(page.locator('article').inner_text())
            assert 'target="_blank"' not in shown, f'{name}: Quarto link attributes shown as text'
            ids[name] = set(page.eval_on_selector_all('[id]', 'els => els.map(e => e.id)'))
            for href in page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)'):
                u = urlparse(href)
                if not href.startswith(base): continue
                target = out/unquote(u.path.lstrip('/'))
                if target.is_dir(): target = target/'index.html'
                if not target.exists(): broken.append((name, href)); continue
                if u.fragment and target.suffix == '.html': anchors_needed.append((name, target.stem, u.fragment, href))
            if name == 'index':
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS/'docs-home.png'), full_page=False)
        browser.close()
    for src, stem, frag, href in anchors_needed:
        if stem in ids and frag not in ids[stem]: broken.append((src, href))
    assert not broken, f'broken internal links: {broken[:20]}'
    assert not outside, f'the site fetched from outside itself: {sorted(set(outside))[:10]}'
    assert (ARTIFACTS/'docs-home.png').stat().st_size > 10_000

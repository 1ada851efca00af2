"""The package's shape: no import cycle between its modules (imports inside functions included), and no chapter that
uses what a later chapter defines (read in order, each notebook imports only modules of earlier notebooks)."""
import ast, json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'deeplab_nb'


def imported_modules(source:str, own:str=None) -> set:
    "deeplab_nb modules imported anywhere in `source` (top level or inside functions); `own`: the module, for relative imports."
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: found.add(node.module.split('.')[0])
            elif node.level == 1: found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith('deeplab_nb.'): found.add(node.module.split('.')[1])
            elif node.module == 'deeplab_nb': found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split('.')[1] for alias in node.names if alias.name.startswith('deeplab_nb.'))
    modules = {p.stem for p in PACKAGE.glob('*.py')}
    return {m for m in found if m in modules and m != own}


def import_graph() -> dict:
    return {p.stem: imported_modules(p.read_text(), p.stem) for p in PACKAGE.glob('*.py') if not p.stem.startswith('_')}


def find_cycle(graph:dict):
    "One cycle of `graph` as a list of nodes, or None."
    state, stack = {}, []
    def visit(node):
        state[node] = 'open'; stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open': return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)): return cycle
        state[node] = 'done'; stack.pop()
    for node in sorted(graph):
        if node not in state and (cycle := visit(node)): return cycle


def test_find_cycle_finds_one():
    "The checker itself: a known cycle is found, an acyclic graph passes."
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert imported_modules('def f():\n    from .data import x\n', 'synthetic') == {'data'}  # lazy imports count


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 10
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def cell_sources(path:Path, kind:str='code') -> list:
    "The sources of a notebook's cells of one kind ('code' or 'markdown'), in order."
    return [''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == kind]


def chapter_key(path:Path):
    number, letter = re.match(r'(\d+)([a-z]?)_', path.name).groups()
    return int(number), letter


def test_chapters_use_only_earlier_chapters():
    "Each numbered notebook imports (in any code cell, hidden ones included) only modules exported by itself or earlier notebooks."
    chapters = sorted((p for p in (ROOT / 'nbs').glob('*.ipynb') if re.match(r'\d+[a-z]?_', p.name)), key=chapter_key)
    cells = {p: cell_sources(p) for p in chapters}
    exported_by = {}
    for p in chapters:
        for source in cells[p]:
            if m := re.search(r'^#\|\s*default_exp\s+(\w+)', source, re.M): exported_by[m[1]] = p
    assert len(exported_by) > 10
    late = []
    for p in chapters:
        for source in cells[p]:
            code = '\n'.join(line for line in source.splitlines() if not line.lstrip().startswith(('%', '!', '#|')))
            for module in imported_modules(code):
                if module in exported_by and chapter_key(exported_by[module]) > chapter_key(p):
                    late.append(f'{p.name} imports deeplab_nb.{module} ({exported_by[module].name})')
    assert not late, 'chapters that use what a later chapter defines:\n' + '\n'.join(sorted(set(late)))


def test_each_idea_of_the_paper_has_one_chapter_and_one_definition():
    """The index's table "Where each idea of the paper lives": every row names a chapter and a `deeplab_nb.module.name`
    that exists, belongs to the module that chapter exports (`#|default_exp`), and is defined there, not imported."""
    import importlib
    index = '\n'.join(cell_sources(ROOT / 'nbs' / 'index.ipynb', 'markdown'))
    section = index.split('## Where each idea of the paper lives', 1)[1].split('\n## ', 1)[0]
    rows = re.findall(r'^\|[^|]+\|[^|]+\| \[\w+\]\((\w+)\.ipynb\) \| `deeplab_nb\.(\w+)\.(\w+)` \|$', section, re.M)
    assert len(rows) >= 15 and len(rows) == section.count('\n| ') - 1, 'a row of the table does not parse'  # minus the header
    for chapter, module, name in rows:
        code = '\n'.join(cell_sources(ROOT / 'nbs' / f'{chapter}.ipynb'))
        assert re.search(rf'^#\|\s*default_exp\s+{module}$', code, re.M), f'{chapter} does not export deeplab_nb.{module}'
        mod = importlib.import_module(f'deeplab_nb.{module}')
        assert name in mod.__all__, f'deeplab_nb.{module}.{name} is not a public name of its module'
        obj = getattr(mod, name)
        assert getattr(obj, '__module__', mod.__name__) == mod.__name__, f'{name} is defined in {obj.__module__}, not {module}'


def reading_path() -> list:
    "The core chapters in the index's reading order ('Read the core in this order', a numbered list of links)."
    index = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    text = next(''.join(c['source']) for c in index['cells'] if 'Read the core in this order' in ''.join(c['source']))
    path = text.split('Read the core in this order', 1)[1].split('\n\n')[1]
    return re.findall(r'^\d+\. \[[^\]]+\]\(([\w.]+\.ipynb)\)', path, re.M)


def test_core_chapters_end_with_checked_exercises():
    "Each chapter of the reading path ends (before an optional Provenance section) with 3-5 exercises, each answered by a folded cell that checks."
    path = reading_path()
    assert path[:2] == ['01_atrous.ipynb', '02_separable.ipynb'] and len(path) >= 8, path  # the index's list, read right
    problems = []
    for name in path:
        cells = json.loads((ROOT / 'nbs' / name).read_text())['cells']
        sections = [i for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and ''.join(c['source']).startswith('## ')]
        starts = [i for i in sections if ''.join(cells[i]['source']).startswith('## Exercises')]
        if not starts: problems.append(f'{name}: no "## Exercises" section'); continue
        later = [''.join(cells[i]['source']).split('\n')[0] for i in sections if i > starts[-1]]
        if any(not title.startswith('## Provenance') for title in later): problems.append(f'{name}: sections after the exercises: {later}')
        end = min([i for i in sections if i > starts[-1]], default=len(cells))
        section = cells[starts[-1]:end]
        questions = sum(len(re.findall(r'^\d+\. ', ''.join(c['source']), re.M)) for c in section if c['cell_type'] == 'markdown')
        answers = [''.join(c['source']) for c in section if c['cell_type'] == 'code' and not ''.join(c['source']).startswith('#|hide')]
        checked = [a for a in answers if a.startswith('#|fold') and re.search(r'\b(test_eq|test_close|test_fail|assert)\b', a)]
        if not 3 <= questions <= 5: problems.append(f'{name}: {questions} exercises (want 3-5)')
        if len(checked) != len(answers) or len(answers) < questions:
            problems.append(f'{name}: {questions} exercises, {len(answers)} answer cells, {len(checked)} folded and checking')
    assert not problems, problems

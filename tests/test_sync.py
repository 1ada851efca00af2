"""The library is what `nbdev_export` makes of the notebooks: nobody hand-edits `deeplab_nb/*.py`."""
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_matches_notebooks(tmp_path):
    "Export the notebooks into a scratch copy and compare every module, byte for byte, with the committed library."
    for name in ('settings.ini',): shutil.copy(ROOT/name, tmp_path/name)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
    (tmp_path/'deeplab_nb').mkdir()  # only the package marker: a module that no notebook exports must show up
    shutil.copy(ROOT/'deeplab_nb'/'__init__.py', tmp_path/'deeplab_nb'/'__init__.py')
    exporter = Path(sys.executable).parent/'nbdev_export'
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True)
    committed = {p.relative_to(ROOT/'deeplab_nb'): p.read_text() for p in (ROOT/'deeplab_nb').rglob('*.py')}
    exported = {p.relative_to(tmp_path/'deeplab_nb'): p.read_text() for p in (tmp_path/'deeplab_nb').rglob('*.py')}
    assert sorted(map(str, exported)) == sorted(map(str, committed)), 'modules differ: run nbdev_export and commit'
    stale = [str(k) for k in committed if committed[k] != exported[k]]
    assert not stale, f'{stale} differ from what nbdev_export makes of nbs/: run nbdev_export and commit'

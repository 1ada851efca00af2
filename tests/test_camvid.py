"""CamVid (SegNet's 11-class layout) through the registry and the three console scripts: on a generated fixture, which
runs everywhere, and on the real copy beside the repository (../shared/camvid), which users' clones do not have and
where those tests skip."""
import json, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_nb.data import CamVid, CAMVID_CLASSES, CAMVID_SPLITS, IGNORE_INDEX, build_dataset, _make_camvid_fixture

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / 'shared' / 'camvid'  # the repo root's sibling; research use only, never copied into the project
needs_camvid = pytest.mark.skipif(not (CAMVID / 'testannot').is_dir(), reason='../shared/camvid (CamVid) is absent')
BIN = Path(sys.executable).parent


def script(name, *args, timeout=300):
    "Run console script `name`; the CompletedProcess (text), failing the test with its output if it exits non-zero."
    result = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0: pytest.fail(f'{name} {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}')
    return result


@pytest.fixture(scope='module')
def fixture_root(tmp_path_factory):
    "A CamVid tree in SegNet's layout: 8 train, 2 val, 2 test frames of 72x96."
    return _make_camvid_fixture(tmp_path_factory.mktemp('camvid'), counts={'train': 8, 'val': 2, 'test': 2}, size=(72, 96))


def test_train_eval_predict_on_the_fixture(fixture_root, tmp_path):
    "deeplab_nb_train --dataset camvid trains, deeplab_nb_eval scores test, deeplab_nb_predict writes an index PNG."
    run_dir = tmp_path / 'run'
    script('deeplab_nb_train', '--dataset', 'camvid', '--root', fixture_root, '--crop_size', 65, '--batch_size', 4,
           '--steps', 2, '--eval_every', 2, '--run_dir', run_dir, '--quiet')
    metrics = json.loads((run_dir / 'metrics.json').read_text())
    assert (metrics['dataset'], metrics['split'], metrics['step']) == ('camvid', 'val', 2)
    out = tmp_path / 'eval.json'
    script('deeplab_nb_eval', run_dir, '--split', 'test', '--output', out, '--quiet')
    scored = json.loads(out.read_text())
    assert len(scored['iou']) == len(CAMVID_CLASSES) == 11 and 0 <= scored['miou'] <= 1
    image = fixture_root / 'test' / sorted(p.name for p in (fixture_root / 'test').iterdir())[0]
    script('deeplab_nb_predict', run_dir, image, '--output_dir', tmp_path / 'pred')
    written = np.asarray(Image.open(tmp_path / 'pred' / f'{image.stem}.png'))
    assert written.shape == (72, 96) and written.max() < 11  # a class index per pixel, never void


def test_a_partial_copy_fails_in_one_line_naming_what_is_missing(fixture_root, tmp_path):
    broken = tmp_path / 'CamVid'; shutil.copytree(fixture_root, broken)
    shutil.rmtree(broken / 'valannot')
    result = subprocess.run([str(BIN / 'deeplab_nb_train'), '--dataset', 'camvid', '--root', str(broken), '--steps', '1'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert 'valannot: no such folder' in last and 'Traceback' not in result.stderr


@needs_camvid
def test_real_camvid_splits_and_labels():
    "The SegNet split's sizes (367/101/233, 480x360); every stored value 0..11, and 11 (Unlabelled) read as void."
    sizes = {split: len(CamVid(CAMVID, split)) for split in CAMVID_SPLITS}
    assert sizes == {'train': 367, 'val': 101, 'test': 233}
    test = build_dataset('camvid', CAMVID, 'test')
    for k in (0, 116, 232):
        image, mask = test[k]
        stored = np.asarray(Image.open(test.masks[k]))
        assert image.shape == (3, 360, 480) and stored.max() <= 11
        np.testing.assert_array_equal(mask.numpy(), np.where(stored == 11, IGNORE_INDEX, stored))
    assert set(np.unique(np.concatenate([np.unique(np.asarray(Image.open(p))) for p in test.masks]))) == set(range(12))


@needs_camvid
def test_real_camvid_split_files_agree_with_the_folders():
    "Each <split>.txt names exactly the PNGs of its folder (its SegNet paths are from another machine: names only)."
    for split in CAMVID_SPLITS:
        listed = sorted(CamVid(CAMVID, split).ids)
        assert listed == sorted(p.stem for p in (CAMVID / split).glob('*.png'))


@needs_camvid
def test_the_shipped_camvid_model_rescores_to_its_number(tmp_path):
    "deeplab_nb_eval camvid on the real test split gives the registered mIOU (the tools score a BN-folded copy: 5e-5)."
    from deeplab_nb.training import WEIGHTS
    out = tmp_path / 'camvid.json'
    # 233 frames at 480x360 took over the default 300 s on a two-core machine that was also training: the limit
    # here only guards against a hang
    script('deeplab_nb_eval', 'camvid', '--dataset', 'camvid', '--root', CAMVID, '--split', 'test', '--output', out, '--quiet',
           timeout=1800)
    scored = json.loads(out.read_text())
    assert scored['num_images'] == 233 and abs(scored['miou'] - WEIGHTS['camvid'].metrics['miou']) < 5e-5


@needs_camvid
def test_camvid_records_replay_on_the_cpu_kind_they_name(tmp_path, replay_losses):
    "A CamVid run's first five losses replay bit-equal here when this CPU is the kind (model name + ISA flags) its record names."
    from deeplab_nb.study_runner import _cpu_kind, _study_dirs, load_records
    folder = _study_dirs('camvid')[0]  # the study's records, and the first four runs at N = 8,000 (n8000/, kept)
    records = {**{f'n8000/{rid}': r for rid, r in load_records(folder / 'n8000').items()}, **load_records(folder)}
    here = sorted(rid for rid, r in records.items() if _cpu_kind(r) == _cpu_kind())
    if not here: pytest.skip(f'no CamVid record was made on this kind of CPU ({_cpu_kind()})')
    # a record whose flags were added after the run (cpu_flags_source) first: its flags rest on this replay
    rid = sorted(here, key=lambda rid: 'cpu_flags_source' not in records[rid])[0]
    record = records[rid]
    config = {**record['config'], 'train': {**record['config']['train'], 'root': str(CAMVID)}}  # this clone's copy of CamVid
    losses = replay_losses(config, tmp_path / rid.replace('/', '-'), record['threads'])
    # same code, data order, seed and kernels: equal to float32 rounding (1e-5 relative); another kind differs by step 4
    assert losses == pytest.approx(record['losses']['first'][:5], rel=1e-5), rid

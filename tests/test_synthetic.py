"""The committed dataset in data/synthetic is exactly what `deeplab_nb.synthetic` generates, and a copy without it
(a `pip install`) regenerates the same data into a cache folder."""
import csv, io, json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deeplab_nb.synthetic as synthetic
from deeplab_nb.data import build_dataset, read_image, read_index_mask
from deeplab_nb.synthetic import (_JPEG_OPTIONS, SYNTHETIC_CLASSES, _SYNTHETIC_DEFAULTS, synthetic_dataset, _synthetic_root,
                                  _synthetic_sample)

ROOT = Path(__file__).resolve().parents[1]/'data'/'synthetic'
VOC = ROOT/'VOCdevkit'/'VOC2012'
pytestmark = pytest.mark.skipif(not (ROOT/'synthetic.json').is_file(), reason='no data/synthetic in this checkout')


def _rows(path):
    with open(path) as f: return list(csv.DictReader(f))


def _split(root, split):
    return (Path(root)/'VOCdevkit'/'VOC2012'/'ImageSets'/'Segmentation'/f'{split}.txt').read_text().split()


def _sha256(array):
    return synthetic._sha256(array)


def test_committed_copy_is_the_default_dataset():
    "The committed copy was made with _SYNTHETIC_DEFAULTS, so _synthetic_root() picks it and the cache would match it."
    meta = json.loads((ROOT/'synthetic.json').read_text())
    assert synthetic._is_default(ROOT)
    assert _synthetic_root() == ROOT
    assert meta['classes'] == SYNTHETIC_CLASSES
    assert meta['counts'] == dict(train=_SYNTHETIC_DEFAULTS['n_train'], val=_SYNTHETIC_DEFAULTS['n_val'])
    assert meta['megabytes'] < 20


def test_split_files_and_no_leak():
    "Split files list train_0000.., val_0000..; trainval is their union; train and val share no id and no image."
    train, val = _split(ROOT, 'train'), _split(ROOT, 'val')
    assert train == [f'train_{i:04d}' for i in range(_SYNTHETIC_DEFAULTS['n_train'])]
    assert val == [f'val_{i:04d}' for i in range(_SYNTHETIC_DEFAULTS['n_val'])]
    assert _split(ROOT, 'trainval') == train + val
    assert not set(train) & set(val)
    rows = _rows(ROOT/'samples.csv')
    assert [r['id'] for r in rows] == train + val
    by_split = {s: {r['image_sha256'] for r in rows if r['split'] == s} for s in ('train', 'val')}
    assert not by_split['train'] & by_split['val']  # no val image is also a training image
    assert len(by_split['train']) == len(train) and len(by_split['val']) == len(val)  # no duplicates inside a split
    on_disk = {p.stem for p in (VOC/'JPEGImages').glob('*.jpg')} | {p.stem for p in (VOC/'SegmentationClass').glob('*.png')}
    assert on_disk == set(train + val)  # no stray files


@pytest.mark.parametrize('split,index', [('train', 0), ('train', 137), ('train', 399), ('val', 0), ('val', 58), ('val', 99)])
def test_regenerated_sample_equals_committed_files(split, index):
    "Regenerating one image with the committed seed gives the committed mask exactly and the committed image up to JPEG."
    meta = json.loads((ROOT/'synthetic.json').read_text())
    params = {k: v for k, v in meta['params'].items()}
    params['scale_range'] = tuple(params['scale_range'])
    seed, min_size, max_size = params.pop('seed'), params.pop('min_size'), params.pop('max_size')
    sample = _synthetic_sample(split, index, seed, min_size, max_size, **params)
    row = {r['id']: r for r in _rows(ROOT/'samples.csv')}[sample['id']]
    assert _sha256(sample['mask']) == row['mask_sha256']
    assert _sha256(sample['image']) == row['image_sha256']  # the generated pixels, before JPEG
    np.testing.assert_array_equal(read_index_mask(VOC/'SegmentationClass'/f"{sample['id']}.png"), sample['mask'])
    committed = read_image(VOC/'JPEGImages'/f"{sample['id']}.jpg")
    assert np.abs(committed.astype(int) - sample['image']).mean() < 5  # JPEG quality 90: a few grey levels
    if Image.__version__ == meta['made_with']['pillow']:  # same encoder: the very same file
        buffer = io.BytesIO(); Image.fromarray(sample['image']).save(buffer, format='JPEG', **_JPEG_OPTIONS)
        assert buffer.getvalue() == (VOC/'JPEGImages'/f"{sample['id']}.jpg").read_bytes()


def test_readers_see_the_synthetic_classes():
    "The VOC reader (directly and through build_dataset) serves the dataset with its own classes."
    val = synthetic_dataset('val')
    assert len(val) == _SYNTHETIC_DEFAULTS['n_val'] and val.classes == SYNTHETIC_CLASSES
    image, mask = val[0]
    assert image.shape[1:] == mask.shape and int(mask.max()) == 255
    same = build_dataset('synthetic', split='val')
    assert same.ids == val.ids and same.classes == val.classes


def test_without_the_bundled_copy_the_cache_regenerates_it(tmp_path, monkeypatch):
    "A package with no data/ folder (pip install) regenerates the full default dataset into $DEEPLAB_NB_DATA: identical."
    monkeypatch.setattr(synthetic, '_repo_synthetic', lambda: tmp_path/'no_clone_here')
    monkeypatch.setenv('DEEPLAB_NB_DATA', str(tmp_path/'cache'))
    root = _synthetic_root()
    assert root == tmp_path/'cache'/'synthetic'
    assert (root/'samples.csv').read_text() == (ROOT/'samples.csv').read_text()  # every image and mask hash
    assert (root/'objects.csv').read_text() == (ROOT/'objects.csv').read_text()
    assert json.loads((root/'synthetic.json').read_text())['sha256'] == json.loads((ROOT/'synthetic.json').read_text())['sha256']
    for split in ('train', 'val', 'trainval'): assert _split(root, split) == _split(ROOT, split)
    for name in _split(ROOT, 'trainval'):
        np.testing.assert_array_equal(read_index_mask(root/'VOCdevkit'/'VOC2012'/'SegmentationClass'/f'{name}.png'),
                                      read_index_mask(VOC/'SegmentationClass'/f'{name}.png'))
    stamp = (root/'synthetic.json').stat().st_mtime_ns
    assert _synthetic_root() == root and (root/'synthetic.json').stat().st_mtime_ns == stamp  # made once, then reused
    assert not [p for p in root.parent.iterdir() if p.name.startswith('.synthetic-')]  # no scratch folder left behind

"""Data readers against the real VOC 2012 files beside the repository (skipped when absent), the full train_aug
count (only where the full VOC + SBD lists are available), and what DataLoader workers need (pickling)."""
import os, pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from deeplab_nb.data import (VOCSegmentation, VOC_PALETTE, IGNORE_INDEX, voc_colormap, read_index_mask, train_aug_ids,
                             make_voc_fixture, make_sbd_fixture, make_cityscapes_fixture, build_dataset, _read_split)

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent/'shared'/'realdata'  # the repo root's sibling; users' clones have none
needs_real = pytest.mark.skipif(not (REALDATA/'VOCdevkit'/'VOC2012'/'SegmentationClass').is_dir(),
                                reason='../shared/realdata (real VOC 2012 samples) is absent')


@needs_real
def test_real_voc_matches_torchvision_and_keeps_void():
    "Our reading equals torchvision's, pixel for pixel, and the labels are the ones realdata/README.md lists."
    ours = VOCSegmentation(REALDATA, 'trainval')
    theirs = torchvision.datasets.VOCSegmentation(REALDATA, year='2012', image_set='trainval')
    expected = {'2007_000032': [0, 1, 15, 255], '2007_000033': [0, 1, 255], '2011_003114': [0, 6, 7, 15, 255],
                '2011_003271': [0, 5, 255]}
    assert ours.ids == list(expected)
    for (image, mask), (pil_image, pil_mask), labels in zip(ours, theirs, expected.values()):
        assert image.dtype == torch.uint8 and mask.dtype == torch.int64
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.asarray(pil_image))
        np.testing.assert_array_equal(mask.numpy(), np.asarray(pil_mask))
        assert sorted(mask.unique().tolist()) == labels


@needs_real
def test_real_voc_palette_is_the_devkit_colormap():
    for png in (REALDATA/'VOCdevkit'/'VOC2012'/'SegmentationClass').glob('*.png'):
        stored = np.array(Image.open(png).getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(stored, voc_colormap())
        np.testing.assert_array_equal(stored[:21], VOC_PALETTE)


@needs_real
def test_rgb_decoding_loses_exactly_the_void_band():
    "Decoding through the 21 class colours turns every 255 pixel (and only those) into background."
    codes = lambda rgb: (rgb[..., 0].astype(np.int64) * 256 + rgb[..., 1]) * 256 + rgb[..., 2]
    palette_codes = codes(VOC_PALETTE)
    for png in (REALDATA/'VOCdevkit'/'VOC2012'/'SegmentationClass').glob('*.png'):
        indices = read_index_mask(png)
        pixel_codes = codes(np.asarray(Image.open(png).convert('RGB')))
        hits = pixel_codes[..., None] == palette_codes  # (H, W, 21): which class colour, if any
        decoded = np.where(hits.any(-1), hits.argmax(-1), 0)  # d2l-style: unknown colours -> 0
        assert (indices == IGNORE_INDEX).sum() > 0
        np.testing.assert_array_equal(decoded, np.where(indices == IGNORE_INDEX, 0, indices))


VOC_FULL, SBD_FULL = os.environ.get('DEEPLAB_NB_VOC_ROOT'), os.environ.get('DEEPLAB_NB_SBD_ROOT')


@pytest.mark.skipif(not (VOC_FULL and SBD_FULL), reason='full VOC 2012 + SBD not available (set DEEPLAB_NB_VOC_ROOT, DEEPLAB_NB_SBD_ROOT)')
def test_full_train_aug_has_10582_ids():
    "The paper's count, from the official lists."
    voc = Path(VOC_FULL)/'VOCdevkit'/'VOC2012'/'ImageSets'/'Segmentation'
    ids = train_aug_ids(_read_split(voc/'train.txt'), _read_split(Path(SBD_FULL)/'train.txt'),
                        _read_split(Path(SBD_FULL)/'val.txt'), _read_split(voc/'val.txt'))
    assert len(ids) == 10582


def test_datasets_pickle_for_dataloader_workers(tmp_path):
    "DataLoader workers receive the dataset by pickling: every dataset must survive it and read the same items."
    voc, sbd = make_voc_fixture(tmp_path/'voc'), make_sbd_fixture(tmp_path/'sbd')
    cs = make_cityscapes_fixture(tmp_path/'cs')
    for ds in (build_dataset('voc', voc, 'train_aug', sbd_root=sbd), build_dataset('cityscapes', cs, 'val')):
        copy = pickle.loads(pickle.dumps(ds))
        for (a, b), (c, d) in zip(ds, copy):
            assert torch.equal(a, c) and torch.equal(b, d)


def test_dataloader_with_a_worker_process(tmp_path):
    "One real worker process reads the same batch as the main process."
    ds = VOCSegmentation(make_voc_fixture(tmp_path/'voc'), 'train')
    main = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    worker = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)))
    assert torch.equal(main[0], worker[0]) and torch.equal(main[1], worker[1])


def test_augmentation_with_workers_is_seeded_and_distinct(tmp_path):
    """The transforms draw from torch's generator, which DataLoader seeds per worker from its own generator: two
    workers augmenting the same image differ, and the same loader seed repeats the whole epoch."""
    from deeplab_nb.transforms import train_transforms
    voc = make_voc_fixture(tmp_path/'voc', splits={'train': ['2007_000001'] * 4}, size=(40, 56))
    ds = VOCSegmentation(voc, 'train', transforms=train_transforms(crop_size=33))

    def epoch(seed):
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return [image for image, _ in loader]

    first, again = epoch(0), epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len({tuple(img.flatten()[:200].tolist()) for img in first}) > 1  # not the same crop four times


def test_build_dataset_synthetic_reads_the_bundled_copy():
    "The CLI's name 'synthetic' gives the bundled VOC-layout dataset with its own classes (chapter 11)."
    synthetic = pytest.importorskip('deeplab_nb.synthetic')
    ds = build_dataset('synthetic', None, 'val')
    assert ds.classes == synthetic.SYNTHETIC_CLASSES and ds.root == synthetic.synthetic_root()
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and mask.dtype == torch.int64 and image.shape[1:] == mask.shape


def test_voc_aug_trains_on_train_aug_and_scores_voc_val(tmp_path):
    "The registry's voc_aug entry drives the training run: train_aug (VOC + SBD) whatever train_split says, VOC's val to score."
    from deeplab_nb.training import TrainConfig, _build_run
    from deeplab_nb.model import build_model
    voc, sbd = make_voc_fixture(tmp_path/'voc'), make_sbd_fixture(tmp_path/'sbd')
    config = TrainConfig(dataset='voc_aug', root=str(voc), sbd_root=str(sbd), crop_size=33, steps=1)
    _, train, val = _build_run(config, model=build_model('deeplabv3plus_xception_tiny', 21))
    assert train.ids == build_dataset('voc', voc, 'train_aug', sbd_root=sbd).ids
    assert val.ids == build_dataset('voc', voc, 'val').ids

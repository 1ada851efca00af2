"""Data readers against the real VOC 2012 files beside the repository (skipped when absent), the full train_aug
count (only where the full VOC + SBD lists are available), what DataLoader workers need (pickling), and every way a
dataset copy or an argument can be wrong: each error names the file or argument, the problem and the fix (chapter 09
shows two of them; the catalogue is here)."""
import os, pickle, shutil, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from deeplab_nb.data import (VOCSegmentation, SBDSegmentation, Cityscapes, FolderSegmentation, VOC_PALETTE, IGNORE_INDEX,
                             voc_colormap, read_image, read_index_mask, save_index_png, overlay, _check_number, _check_output_dir,
                             _check_output_file, _check_classes, build_dataset, register_dataset, make_voc_fixture,
                             make_folder_fixture, _train_aug_ids, _make_sbd_fixture, _make_cityscapes_fixture, _read_split,
                             _check_mask_values)

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
    ids = _train_aug_ids(_read_split(voc/'train.txt'), _read_split(Path(SBD_FULL)/'train.txt'),
                        _read_split(Path(SBD_FULL)/'val.txt'), _read_split(voc/'val.txt'))
    assert len(ids) == 10582


def test_datasets_pickle_for_dataloader_workers(tmp_path):
    "DataLoader workers receive the dataset by pickling: every dataset must survive it and read the same items."
    voc, sbd = make_voc_fixture(tmp_path/'voc'), _make_sbd_fixture(tmp_path/'sbd')
    cs = _make_cityscapes_fixture(tmp_path/'cs')
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
    assert ds.classes == synthetic.SYNTHETIC_CLASSES and ds.root == synthetic._synthetic_root()
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and mask.dtype == torch.int64 and image.shape[1:] == mask.shape


def test_voc_aug_trains_on_train_aug_and_scores_voc_val(tmp_path):
    "The registry's voc_aug entry drives the training run: train_aug (VOC + SBD) whatever train_split says, VOC's val to score."
    from deeplab_nb.training import TrainConfig, _build_run
    from deeplab_nb.model import build_model
    voc, sbd = make_voc_fixture(tmp_path/'voc'), _make_sbd_fixture(tmp_path/'sbd')
    config = TrainConfig(dataset='voc_aug', root=str(voc), sbd_root=str(sbd), crop_size=33, steps=1)
    _, train, val = _build_run(config, model=build_model('deeplabv3plus_xception_tiny', 21))
    assert train.ids == build_dataset('voc', voc, 'train_aug', sbd_root=sbd).ids
    assert val.ids == build_dataset('voc', voc, 'val').ids


def fails(fn, contains, exc=Exception):
    "`fn()` raises `exc` whose message contains `contains` (a plain substring, not a pattern)."
    with pytest.raises(exc) as info: fn()
    assert contains in str(info.value), f'{contains!r} not in {str(info.value)!r}'


def test_check_number_cases():
    assert _check_number('lr', 1, 0, low_open=True) == 1.0 and type(_check_number('lr', 1)) is float  # an int is a number too
    fails(lambda: _check_number('crop_size', 129.0, 1, integer=True), 'crop_size=129.0 is not an integer')
    fails(lambda: _check_number('lr', '0.1'), "lr='0.1' is not a number")
    fails(lambda: _check_number('lr', float('inf')), 'lr=inf is not a finite number')
    fails(lambda: _check_number('steps', np.bool_(True), 1, integer=True), 'is not an integer')


def test_check_output_paths(tmp_path):
    "A folder to be created is fine; a file where a folder must be, or a folder where a file must be, is refused before any work."
    (tmp_path/'a_file').write_text('x')
    assert _check_output_dir(tmp_path/'new'/'deeper') == tmp_path/'new'/'deeper'
    assert _check_output_file(tmp_path/'new'/'r.json') == tmp_path/'new'/'r.json'
    fails(lambda: _check_output_dir(tmp_path/'a_file', '--output_dir'), 'a_file is an existing file, not a folder: choose another --output_dir')
    fails(lambda: _check_output_file(tmp_path/'a_file'/'x.json', '--output'), 'a_file is an existing file, not a folder')
    fails(lambda: _check_output_file(tmp_path, '--output'), 'is a folder: give a file name')


def test_check_classes_and_mask_values():
    fails(lambda: _check_classes(['a', 'a']), "classes name ['a'] more than once")
    fails(lambda: _check_classes([0, 1]), 'classes must be non-empty strings')
    fails(lambda: _check_classes([]), '0 classes: need 1..255')
    fails(lambda: _check_classes(None), 'is not a list of names')
    fails(lambda: _check_mask_values(np.array([[-1, 300]]), 21), '[-1, 300]')
    _check_mask_values(np.zeros((0, 0), np.uint8), 1)  # an empty mask has no bad value


def test_overlay_refuses_a_mask_of_another_size():
    fails(lambda: overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 3))), 'pass the mask of this image')


@pytest.fixture
def voc_copy(tmp_path):
    "A fresh VOC fixture, and a function returning (root, VOC2012 folder) of a copy to break."
    root = make_voc_fixture(tmp_path/'voc')
    def copy(name):
        dst = tmp_path/name; shutil.copytree(root, dst)
        return dst, dst/'VOCdevkit'/'VOC2012'
    return root, copy


def test_broken_voc_copies(voc_copy, tmp_path):
    root, copy = voc_copy
    fails(lambda: VOCSegmentation(tmp_path/'no_such_folder'), 'dataset root does not exist: pass the folder that contains VOCdevkit')
    fails(lambda: VOCSegmentation(root/'VOCdevkit'/'VOC2012'), 'it looks like VOC2012 itself: pass')
    fails(lambda: VOCSegmentation(root/'VOCdevkit'), 'it looks like VOCdevkit itself: pass')
    fails(lambda: VOCSegmentation(root, 'test'), "no such split file: use one of ['train', 'trainval', 'val', 'train_aug']")
    fails(lambda: VOCSegmentation(root, 'train_aug'), 'needs sbd_root')
    # a split file naming an image that is not there (checked when the dataset is built)
    broken, voc = copy('missing_image'); (voc/'JPEGImages'/'2007_000002.jpg').unlink()
    fails(lambda: VOCSegmentation(broken, 'train'), "train.txt names 1 images that do not exist, e.g. ['")
    # an empty split file
    broken, voc = copy('empty_split'); (voc/'ImageSets'/'Segmentation'/'train.txt').write_text('\n')
    fails(lambda: VOCSegmentation(broken, 'train'), 'the split file lists no ids')
    # image and mask of different sizes (checked when the item is read)
    broken, voc = copy('wrong_size'); save_index_png(np.zeros((10, 12), np.uint8), voc/'SegmentationClass'/'2007_000002.png')
    fails(lambda: VOCSegmentation(broken, 'train')[1], '2007_000002.png is 12x10 (WxH) but its image')
    # a label that is neither a class nor void, fine once the classes cover it
    broken, voc = copy('bad_label'); save_index_png(np.full((48, 64), 30, np.uint8), voc/'SegmentationClass'/'2007_000002.png')
    fails(lambda: VOCSegmentation(broken, 'train')[1], '2007_000002.png: label values [30] are outside the 21 classes')
    assert int(VOCSegmentation(broken, 'train', classes=[f'c{k}' for k in range(31)])[1][1].max()) == 30
    # a truncated JPEG, and a PNG that is not an image at all
    broken, voc = copy('corrupt'); jpg = voc/'JPEGImages'/'2007_000001.jpg'; jpg.write_bytes(jpg.read_bytes()[:300])
    (voc/'SegmentationClass'/'2007_000002.png').write_bytes(b'not a png')
    fails(lambda: VOCSegmentation(broken, 'train')[0], '2007_000001.jpg: cannot decode this image file')
    fails(lambda: VOCSegmentation(broken, 'train')[1], '2007_000002.png: cannot decode this mask file')
    # a palette of the wrong shape
    fails(lambda: VOCSegmentation(root, 'train', palette=np.zeros((3, 3), np.uint8)), 'palette has shape (3, 3): need (21, 3)')


def test_image_modes(voc_copy, tmp_path):
    "Grayscale and CMYK have one RGB rendering: converted with a warning; RGBA is refused; 16-bit grayscale is scaled, not clipped."
    _, copy = voc_copy
    root, voc = copy('modes')
    rgb = np.asarray(Image.open(voc/'JPEGImages'/'2007_000001.jpg'))
    Image.fromarray(rgb).convert('L').save(voc/'JPEGImages'/'2007_000001.jpg')
    Image.fromarray(rgb).convert('CMYK').save(voc/'JPEGImages'/'2007_000002.jpg')
    ds = VOCSegmentation(root, 'train')
    for k, mode in enumerate(['L', 'CMYK']):
        with pytest.warns(UserWarning, match=f"image mode '{mode}' converted to RGB"): image, _ = ds[k]
        assert image.shape[0] == 3
        if mode == 'L': assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    Image.fromarray(rgb).convert('RGBA').save(voc/'JPEGImages'/'2008_000003.jpg', format='PNG')  # RGBA behind a .jpg name
    fails(lambda: ds[2], "image mode 'RGBA' is not supported")
    gray16 = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491: most of the 16-bit range
    Image.fromarray(gray16).save(tmp_path/'gray16.png')
    assert Image.open(tmp_path/'gray16.png').mode == 'I;16'
    with pytest.warns(UserWarning, match='16-bit grayscale image'): read16 = read_image(tmp_path/'gray16.png')
    np.testing.assert_array_equal(read16[..., 0], np.round(gray16 / 65535 * 255).astype(np.uint8))  # scaled, not clipped to white
    np.testing.assert_array_equal(read16[..., 1], read16[..., 0])


def test_broken_sbd(tmp_path):
    "A truncated .mat, an instance (not class) annotation, and a missing root are named in the error."
    import scipy.io
    sbd = _make_sbd_fixture(tmp_path/'sbd')
    (sbd/'cls'/'2008_000100.mat').write_bytes(b'MATLAB 5.0 MAT-file, truncated')
    scipy.io.savemat(sbd/'cls'/'2007_000010.mat', {'GTinst': {'Segmentation': np.zeros((48, 64), np.uint8)}})
    fails(lambda: SBDSegmentation(sbd, 'train')[1], '2008_000100.mat: cannot read this .mat file')
    fails(lambda: SBDSegmentation(sbd, 'train')[2], '2007_000010.mat: not an SBD class annotation')
    fails(lambda: SBDSegmentation(tmp_path/'nowhere'), 'SBD root does not exist')
    fails(lambda: SBDSegmentation(sbd, 'test'), "SBD split 'test': use 'train' or 'val'")


def test_broken_cityscapes(tmp_path):
    root = _make_cityscapes_fixture(tmp_path/'cs')
    fails(lambda: Cityscapes(root, 'test'), "splits found: ['train', 'val']")
    fails(lambda: Cityscapes(tmp_path/'nowhere'), 'dataset root does not exist')
    labels = root/'gtFine'/'train'/'aachen'/'aachen_000000_000019_gtFine_labelIds.png'
    Image.fromarray(np.full((32, 64), 200, np.uint8), mode='L').save(labels)  # not a labelIds file
    fails(lambda: Cityscapes(root, 'train')[0], 'label ids [200] are not in the Cityscapes table')
    (root/'gtFine'/'val'/'frankfurt'/'frankfurt_000001_000020_gtFine_labelIds.png').unlink()
    fails(lambda: Cityscapes(root, 'val'), 'names 1 images without a gtFine labelIds file')


def test_broken_folders(tmp_path):
    root = make_folder_fixture(tmp_path/'folder')
    images, masks = root/'images', root/'masks'
    fails(lambda: FolderSegmentation(images, root/'nope', ['a']), 'nope: no such folder')
    (masks/'sample_001.png').rename(masks/'sample_9.png')
    fails(lambda: FolderSegmentation(images, masks, ['a', 'b', 'c']), "no <stem>.png mask for 1 images, e.g. ['sample_001']")
    (masks/'sample_9.png').rename(masks/'sample_001.png')
    shutil.copy(masks/'sample_000.png', masks/'orphan.png')
    fails(lambda: FolderSegmentation(images, masks, ['a', 'b', 'c']), "no image for 1 masks, e.g. ['orphan']")
    (masks/'orphan.png').unlink()
    shutil.copy(images/'sample_000.png', images/'sample_000.jpg')
    fails(lambda: FolderSegmentation(images, masks, ['a', 'b', 'c']), "several images share the stem(s) ['sample_000']")


def test_registry_cases(tmp_path):
    "The 'folder' entry reads classes= or root/classes.txt (checked); unknown names, missing roots and bad names are refused."
    root = make_folder_fixture(tmp_path/'folder', n=2, split='train')
    assert len(build_dataset('folder', root, 'train', classes=['bg', 'a', 'b'])) == 2
    fails(lambda: build_dataset('folder', root, 'train'), "dataset 'folder' needs its class names: write")
    (root/'classes.txt').write_text('bg\na\nb\n')
    assert build_dataset('folder', root, 'train').classes == ['bg', 'a', 'b']
    (root/'classes.txt').write_text('bg\na\na\n')
    fails(lambda: build_dataset('folder', root, 'train'), "classes.txt: classes name ['a'] more than once")
    fails(lambda: build_dataset('voc'), "dataset 'voc' needs root=")
    fails(lambda: register_dataset('my data', VOCSegmentation), 'use a word such as my_data')

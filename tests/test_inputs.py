"""Issue 13: the twelve ways bad input went wrong for a new user, one test each (test_01 ... test_12, numbered as the
issue lists them), run through the installed console scripts where a user meets them. Each was seen failing on
3a9641c (the code before the fix). An error must be one line `prog: error: ...`, exit status 1, no traceback, and
come before any file is written."""
import json, os, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_nb.synthetic import make_synthetic_voc, SYNTHETIC_CLASSES
from deeplab_nb.data import make_folder_fixture, read_image, build_dataset, SegmentationDataset

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
FUNCS = dict(deeplab_nb_train='train_cli', deeplab_nb_eval='eval_cli', deeplab_nb_predict='predict_cli',
             deeplab_nb_export='export_cli')
TINY = ['--crop_size', 33, '--batch_size', 2, '--eval_every', 0, '--device', 'cpu', '--quiet']


def cli(name, *args, check=True):
    "Run the console script `name` (through its function where `pip install -e .` has not installed it yet)."
    path, command = BIN / name, [str(BIN / name)]
    if not path.exists():  # the same two lines as the script pip writes (fastcore parses the command line of a __main__ file)
        shim = Path(tempfile.gettempdir()) / f'{name}_{os.getpid()}.py'
        shim.write_text(f"import sys\nfrom deeplab_nb.cli import {FUNCS[name]}\nif __name__ == '__main__': sys.exit({FUNCS[name]}())\n")
        command = [sys.executable, str(shim)]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0: pytest.fail(f'{name} {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}')
    return result


def error(name, *args) -> str:
    "The one-line error of a command that must fail cleanly."
    result = cli(name, *args, check=False)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert 'Traceback' not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{name}: error: '), result.stderr
    return lines[0]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp('synthetic'), n_train=4, n_val=2, seed=5)


@pytest.fixture(scope='module')
def run(data, tmp_path_factory):
    "A 2-step run through deeplab_nb_train."
    run_dir = tmp_path_factory.mktemp('runs') / 'run'
    cli('deeplab_nb_train', '--root', data, '--steps', 2, '--run_dir', run_dir, *TINY)
    return run_dir


def image_of(data): return data / 'VOCdevkit/VOC2012/JPEGImages/val_0000.jpg'


def test_01_own_folder_from_the_command_line(tmp_path):
    "Train, evaluate and predict on a folder of images + masks; class names from classes.txt or --classes; bad masks named."
    mine = make_folder_fixture(tmp_path / 'mine', n=4, split='train', seed=1, classes=['soil', 'leaf', 'stem'])
    make_folder_fixture(mine, n=2, split='val', seed=2)
    names = build_dataset('folder', mine, 'train').classes  # was a TypeError: no way to give the names
    assert names == ['soil', 'leaf', 'stem']
    cli('deeplab_nb_train', '--dataset', 'folder', '--root', mine, '--steps', 2, '--run_dir', tmp_path / 'run', *TINY)
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert metrics['classes'] == ['soil', 'leaf', 'stem']
    cli('deeplab_nb_eval', tmp_path / 'run', '--quiet')
    assert json.loads((tmp_path / 'run' / 'eval-val-os16.json').read_text())['miou'] == metrics['miou']
    cli('deeplab_nb_predict', tmp_path / 'run', mine / 'images' / 'val', '--output_dir', tmp_path / 'out')
    assert (tmp_path / 'out' / 'sample_000.png').is_file() and (tmp_path / 'out' / 'sample_001_overlay.png').is_file()
    (mine / 'classes.txt').unlink()
    message = error('deeplab_nb_train', '--dataset', 'folder', '--root', mine, '--run_dir', tmp_path / 'named')
    assert "needs its class names" in message and '--classes' in message and 'classes.txt' in message
    cli('deeplab_nb_train', '--dataset', 'folder', '--root', mine, '--classes', 'a,b,c', '--steps', 1, '--run_dir', tmp_path / 'named', *TINY)
    mask = np.asarray(Image.open(mine / 'masks' / 'train' / 'sample_002.png')).copy(); mask[0, 0] = 7
    Image.fromarray(mask).save(mine / 'masks' / 'train' / 'sample_002.png')
    message = error('deeplab_nb_train', '--dataset', 'folder', '--root', mine, '--classes', 'a,b,c', '--run_dir', tmp_path / 'never')
    assert 'sample_002.png: label values [7] are outside the 3 classes' in message
    assert not (tmp_path / 'never').exists()


@pytest.mark.parametrize('tool', ['deeplab_nb_eval', 'deeplab_nb_predict'])
def test_02_broken_checkpoints_are_named(run, data, tmp_path, tool):
    "Empty, truncated and plain-text files, another library's state dict and a pickle that needs code: one line naming the file."
    whole = (run / 'checkpoint.pt').read_bytes()
    files = {'empty.pt': (b'', 'is empty (0 bytes)'), 'truncated.pt': (whole[:len(whole) // 3], 'cannot be read as a PyTorch checkpoint'),
             'notes.pt': (b'my notes\n', ('cannot be read as a PyTorch checkpoint', 'is not a PyTorch checkpoint'))}
    for name, (content, expected) in files.items():
        (tmp_path / name).write_bytes(content)
        extra = [image_of(data), '--output_dir', tmp_path / 'out'] if tool == 'deeplab_nb_predict' else []
        message = error(tool, tmp_path / name, *extra)
        assert any(f'{tmp_path / name} {e}' in message for e in ((expected,) if isinstance(expected, str) else expected)), message
    torch.save({'conv.weight': torch.zeros(2, 2)}, tmp_path / 'state_dict.pt')
    assert 'is not a deeplab_nb checkpoint: it is a bare state dict' in error(tool, tmp_path / 'state_dict.pt', *extra)
    assert not (tmp_path / 'out').exists()


def test_03_nan_image_refused(run):
    from deeplab_nb.training import load_trained_model
    from deeplab_nb.inference import predict
    model, _ = load_trained_model(run, 'cpu')
    image = torch.rand(3, 40, 40); image[1, 3, 3] = float('nan')
    with pytest.raises(ValueError, match='non-finite values'): predict(model, image)  # was: all class 0, silently


def test_04_nan_learning_rate_refused(data, tmp_path):
    for flag, value in (('--lr', 'nan'), ('--lr', '-1'), ('--weight_decay', 'inf'), ('--momentum', '2')):
        message = error('deeplab_nb_train', '--root', data, flag, value, '--run_dir', tmp_path / 'run', *TINY)
        assert f'{flag[2:]}=' in message and ('not a finite number' in message or 'out of range' in message), message
    assert not (tmp_path / 'run').exists()


def test_05_existing_run_dir_refused_overwrite_and_resume_explicit(run, data, tmp_path):
    log_before = (run / 'log.jsonl').read_text()
    message = error('deeplab_nb_train', '--root', data, '--steps', 3, '--run_dir', run, *TINY)
    assert f'run_dir {run} already holds a training run' in message and '--resume' in message and '--overwrite' in message
    assert (run / 'log.jsonl').read_text() == log_before  # nothing mixed in
    other = tmp_path / 'other'
    cli('deeplab_nb_train', '--root', data, '--steps', 1, '--run_dir', other, *TINY)
    cli('deeplab_nb_train', '--root', data, '--steps', 2, '--run_dir', other, '--overwrite', *TINY)
    assert [json.loads(l)['step'] for l in (other / 'log.jsonl').read_text().splitlines() if 'loss' in l] == [1, 2]
    message = error('deeplab_nb_train', '--resume', other, '--steps', 5, '--lr', 0.1)
    assert "cannot change ['lr', 'steps'] when resuming" in message and 'steps=2 (given 5)' in message


def test_06_alpha_out_of_range(run, data, tmp_path):
    for alpha in ('-1', '1.5', 'nan'):
        message = error('deeplab_nb_predict', run, image_of(data), '--alpha', alpha, '--output_dir', tmp_path / 'out')
        assert '--alpha=' in message
    assert not (tmp_path / 'out').exists()


def test_07_output_path_is_an_existing_file(run, data, tmp_path):
    (tmp_path / 'a_file').write_text('x')
    assert 'is an existing file, not a folder' in error('deeplab_nb_predict', run, image_of(data), '--output_dir', tmp_path / 'a_file')
    assert 'is an existing file, not a folder' in error('deeplab_nb_train', '--root', data, '--run_dir', tmp_path / 'a_file', *TINY)
    assert 'is a folder: give a file name' in error('deeplab_nb_eval', run, '--output', tmp_path)
    assert (tmp_path / 'a_file').read_text() == 'x'


def test_08_eval_output_checked_before_evaluating(run, tmp_path):
    out = tmp_path / 'missing' / 'deeper' / 'x.json'
    cli('deeplab_nb_eval', run, '--output', out, '--quiet')  # the folder is made before the evaluation
    assert json.loads(out.read_text())['miou'] == json.loads((run / 'metrics.json').read_text())['miou']
    (tmp_path / 'a_file').write_text('x')
    result = cli('deeplab_nb_eval', run, '--output', tmp_path / 'a_file' / 'x.json', check=False)
    assert result.returncode == 1 and 'is an existing file' in result.stderr and 'mIOU' not in result.stdout  # before evaluating


def test_09_stale_temporary_files_cleaned(data, tmp_path):
    run_dir = tmp_path / 'run'
    cli('deeplab_nb_train', '--root', data, '--steps', 2, '--checkpoint_every', 1, '--run_dir', run_dir, *TINY)
    dead = subprocess.Popen(['true']); dead.wait()
    stale = run_dir / f'.checkpoint.pt.tmp{dead.pid}'
    stale.write_bytes(b'half a checkpoint')  # what a kill during a save leaves
    from deeplab_nb.training import load_checkpoint
    assert load_checkpoint(run_dir)['step'] == 2  # never mistaken for the checkpoint
    cli('deeplab_nb_train', '--resume', run_dir, '--quiet')
    assert not stale.exists()


def test_10_python_api_arguments():
    from deeplab_nb.transforms import train_transforms
    from deeplab_nb.model import build_model
    with pytest.raises(ValueError, match='crop_size=-5 is out of range'): train_transforms(crop_size=-5)
    with pytest.raises(ValueError, match="classes='abc' is one string"): SegmentationDataset([], [], [], 'abc')
    assert build_model('deeplabv3plus_xception_tiny', num_classes=np.int64(7)).num_classes == 7


def test_11_sixteen_bit_png_scaled_not_saturated(tmp_path):
    gray = np.linspace(0, 65535, 40 * 56).reshape(40, 56).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / 'g16.png')
    with pytest.warns(UserWarning, match='16-bit grayscale'): image = read_image(tmp_path / 'g16.png')
    np.testing.assert_array_equal(image[..., 0], np.round(gray / 65535 * 255).astype(np.uint8))  # exact: integer rounding
    assert image.mean() < 200  # was: 255 everywhere (white)


def test_12_shipped_model_path(data, tmp_path):
    "The README's path: train, export to data/results/default_run/model.pt, eval reproduces the mIOU (4 decimals), predict writes masks."
    run_dir, shipped = tmp_path / 'run', tmp_path / 'data' / 'results' / 'default_run' / 'model.pt'
    cli('deeplab_nb_train', '--root', data, '--steps', 3, '--run_dir', run_dir, *TINY)
    cli('deeplab_nb_export', run_dir, '--output', shipped)
    state = torch.load(shipped, weights_only=True)
    assert 'optimizer' not in state and state['classes'] == SYNTHETIC_CLASSES and state['model_name'] == 'deeplabv3plus_xception_tiny'
    assert shipped.stat().st_size < (run_dir / 'checkpoint.pt').stat().st_size / 1.5
    cli('deeplab_nb_eval', shipped, '--quiet')
    report = json.loads((shipped.parent / 'eval-val-os16.json').read_text())
    # the same weights; eval runs for_cpu's copy (BN folded: float32 rounding differs): the same mIOU to 4 decimals
    assert abs(report['miou'] - json.loads((run_dir / 'metrics.json').read_text())['miou']) < 5e-5
    cli('deeplab_nb_eval', shipped.parent, '--output', tmp_path / 'by_folder.json', '--quiet')  # the folder, as the README writes it
    cli('deeplab_nb_predict', shipped, image_of(data), '--output_dir', tmp_path / 'predictions')
    mask = Image.open(tmp_path / 'predictions' / 'val_0000.png')
    assert mask.mode == 'P' and mask.size == Image.open(image_of(data)).size
    ignored = subprocess.run(['git', 'check-ignore', '-q', 'data/results/default_run/model.pt'], cwd=ROOT)
    assert ignored.returncode == 1  # .gitignore lets the shipped model file in (*.pt stays ignored elsewhere)


def test_val_split_empty_run_is_evaluable(data, tmp_path):
    cli('deeplab_nb_train', '--root', data, '--steps', 1, '--val_split', '', '--run_dir', tmp_path / 'run', *TINY)
    assert "trained without a validation split (--val_split ''): name the split to score, e.g. --split val" in error('deeplab_nb_eval', tmp_path / 'run')
    cli('deeplab_nb_eval', tmp_path / 'run', '--split', 'val', '--quiet')
    assert (tmp_path / 'run' / 'eval-val-os16.json').is_file()


def test_debug_shows_the_traceback(tmp_path):
    result = cli('deeplab_nb_eval', tmp_path / 'nothing', '--debug', check=False)
    assert result.returncode != 0 and 'Traceback' in result.stderr and 'no checkpoint at' in result.stderr

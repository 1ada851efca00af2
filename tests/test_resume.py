"""Resume is exact: a training run killed (SIGKILL) after a checkpoint and resumed logs the same losses, bit for bit,
as the same run left alone; the real model and the real data pipeline (augmentation, dropout, DataLoader workers)."""
import json, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from deeplab_nb.synthetic import make_synthetic_voc
from deeplab_nb.engine import load_checkpoint, train_loader
from deeplab_nb.training import TrainConfig, Trainer, read_log
from deeplab_nb.data import build_dataset
from deeplab_nb.transforms import train_transforms

BIN = Path(sys.executable).parent
MODEL = 'deeplabv3plus_xception_tiny'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp('synthetic'), n_train=8, n_val=2, seed=2)


def config(data, run_dir, **kwargs):
    return TrainConfig(**{**dict(model=MODEL, root=str(data), crop_size=33, batch_size=2, steps=6, lr=0.01, eval_every=0,
                                 checkpoint_every=3, run_dir=str(run_dir), device='cpu'), **kwargs})


def losses(run_dir): return [r['loss'] for r in read_log(run_dir)[0]]


def test_resume_in_process_with_workers(data, tmp_path):
    "Interrupted at step 3 and resumed, data loaded by 2 worker processes: the same losses as 6 steps in one go."
    Trainer(config(data, tmp_path / 'whole', workers=2), progress=False).fit(until=6)
    first = Trainer(config(data, tmp_path / 'split', workers=2), progress=False)
    first.fit(until=3)
    assert load_checkpoint(tmp_path / 'split')['step'] == 3
    resumed = Trainer.resume(tmp_path / 'split', progress=False)
    assert resumed.step_count == 3 and resumed.config.workers == 2
    while resumed.step_count < 6: resumed.step()
    assert losses(tmp_path / 'split') == losses(tmp_path / 'whole')  # bit for bit
    for k, v in load_checkpoint(tmp_path / 'whole')['model'].items(): assert torch.equal(v, resumed.module.state_dict()[k]), k


def test_batches_do_not_depend_on_workers(data):
    "With or without worker processes: the same images, scales, crops, flips (pixels equal up to float rounding)."
    dataset = build_dataset('synthetic', data, 'train', transforms=train_transforms(33))
    inline, workers = list(train_loader(dataset, 2, 6, seed=3)), list(train_loader(dataset, 2, 6, seed=3, workers=2))
    for (image, mask), (image_w, mask_w) in zip(inline, workers):
        assert torch.equal(mask, mask_w)
        # a worker resizes with 1 thread, the main process with all: other summation orders, float32 pixels in [0, 1] within 1e-6
        torch.testing.assert_close(image, image_w, rtol=0, atol=1e-6)


def test_killed_and_resumed_from_the_command_line(data, tmp_path):
    "SIGKILL a deeplab_nb_train process after its first checkpoint, resume it with --resume: same log as a clean run."
    train = str(BIN / 'deeplab_nb_train')
    common = ['--model', MODEL, '--root', data, '--crop_size', 33, '--batch_size', 2, '--steps', 16, '--lr', 0.01,
              '--eval_every', 0, '--checkpoint_every', 2, '--device', 'cpu', '--quiet']
    subprocess.run([train, *map(str, common), '--run_dir', tmp_path / 'clean'], check=True, capture_output=True)
    killed = tmp_path / 'killed'
    process = subprocess.Popen([train, *map(str, common), '--run_dir', killed], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / 'checkpoint.pt').exists() and process.poll() is None and time.time() < deadline: time.sleep(0.02)
    process.send_signal(signal.SIGKILL); process.wait()
    assert process.returncode == -signal.SIGKILL, 'the run ended before it could be killed: make it longer'
    step = load_checkpoint(killed)['step']  # the checkpoint is whole (written atomically), wherever the kill landed
    assert 2 <= step < 16
    subprocess.run([train, '--resume', str(killed), '--quiet'], check=True, capture_output=True)
    assert losses(killed) == losses(tmp_path / 'clean')
    assert json.loads((killed / 'metrics.json').read_text())['miou'] == json.loads((tmp_path / 'clean' / 'metrics.json').read_text())['miou']

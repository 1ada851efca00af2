"""Data-parallel training: 2 CPU processes (gloo) with DistributedDataParallel + SyncBatchNorm + the step-indexed
DistributedSampler batches, against one process holding the whole global batch."""
import os, socket, tempfile
from pathlib import Path
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.multiprocessing as mp
from deeplab_nb.training import Trainer, TrainConfig, CPUSyncBatchNorm

STEPS, BATCH = 3, 4  # global batch 4 = 2 processes x 2


class Net(nn.Module):
    "Conv-BN-ReLU, a separable unit with BN, biased logits; no dropout (its masks differ per process by design)."
    def __init__(self, num_classes=3, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.separable = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False), nn.BatchNorm2d(width),
                                       nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.classifier = nn.Conv2d(width, num_classes, 1)
    def forward(self, x):
        y = self.classifier(self.separable(self.stem(x)))
        return F.interpolate(y, size=x.shape[-2:], mode='bilinear', align_corners=True)


class Shapes(torch.utils.data.Dataset):
    "8 noisy images with a square of class 1 or 2; every pixel labelled, so every process averages its loss over as many."
    classes = ['background', 'bright', 'dark']
    def __init__(self, n=8, size=20):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            image, mask = torch.rand(3, size, size, generator=g), torch.zeros(size, size, dtype=torch.int64)
            top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
            mask[top:top + 7, left:left + 7] = 1 + i % 2
            image[:, top:top + 7, left:left + 7] += 0.8 if i % 2 == 0 else -0.8
            self.items.append((image, mask))
    def __len__(self): return len(self.items)
    def __getitem__(self, i):
        image, mask = self.items[i]
        if torch.rand(()) < 0.5: image, mask = image.flip(-1), mask.flip(-1)  # augmentation from the seeded generator
        top, left = torch.randint(0, 5, (2,)).tolist()
        return image[:, top:top + 16, left:left + 16], mask[top:top + 16, left:left + 16]


def run(freeze_bn, run_dir):
    "Train STEPS steps; returns the final weights (BN statistics included) and the logged losses."
    torch.manual_seed(0)
    # the model is Net (passed in); the config names a model TrainConfig knows, whose weight decay (1e-4, not Xception) Net gets
    config = TrainConfig(model='deeplabv3plus_resnet_small', steps=STEPS, batch_size=BATCH, lr=0.1, freeze_bn=freeze_bn, device='cpu',
                         eval_every=0, checkpoint_every=0, run_dir=str(run_dir))
    trainer = Trainer(config, Net(), Shapes(), progress=False)
    if trainer.world_size > 1: assert any(isinstance(m, CPUSyncBatchNorm) for m in trainer.module.modules())
    losses = [trainer.step()['loss'] for _ in range(STEPS)]
    return {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}, losses


def worker(rank, world_size, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for freeze_bn in (False, True):
            weights, losses = run(freeze_bn, Path(out) / f'run-{freeze_bn}')
            torch.save(dict(weights=weights, losses=losses), Path(out) / f'rank{rank}-{freeze_bn}.pt')
    finally:
        torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def results():
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(2, free_port(), out), nprocs=2, join=True)
        distributed = {(r, f): torch.load(Path(out) / f'rank{r}-{f}.pt', weights_only=True) for r in (0, 1) for f in (False, True)}
        single = {}
        for freeze_bn in (False, True):
            weights, losses = run(freeze_bn, Path(out) / f'single-{freeze_bn}')
            single[freeze_bn] = dict(weights=weights, losses=losses)
        yield distributed, single


@pytest.mark.parametrize('freeze_bn', [False, True])
def test_replicas_stay_identical(results, freeze_bn):
    distributed, _ = results
    for k, v in distributed[0, freeze_bn]['weights'].items():
        assert torch.equal(v, distributed[1, freeze_bn]['weights'][k]), f'{k} differs between the two processes'


@pytest.mark.parametrize('freeze_bn', [False, True])
def test_two_processes_equal_one_process_with_the_global_batch(results, freeze_bn):
    "SyncBN statistics over the global batch + averaged gradients = one process training on the whole batch."
    distributed, single = results
    weights = distributed[0, freeze_bn]['weights']
    assert weights.keys() == single[freeze_bn]['weights'].keys()
    for k, v in single[freeze_bn]['weights'].items():
        if v.is_floating_point(): torch.testing.assert_close(weights[k], v, rtol=1e-5, atol=1e-6, msg=k)
        else: assert torch.equal(weights[k], v), k  # num_batches_tracked
    torch.testing.assert_close(distributed[0, freeze_bn]['losses'], single[freeze_bn]['losses'], rtol=1e-5, atol=1e-6)
    changed = [k for k, v in weights.items() if 'running' in k and not torch.equal(v, Net().state_dict()[k])]
    assert bool(changed) == (not freeze_bn)  # fine-tuned BN moved its statistics; frozen BN did not

"""Data-parallel training: 2 CPU processes (gloo) with DistributedDataParallel + SyncBatchNorm + the step-indexed
DistributedSampler batches, against one process holding the whole global batch. The labels have void (255) pixels,
a different number on each process, so the loss must be normalised by the count over both processes to match."""
import os, socket, tempfile
from pathlib import Path
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.multiprocessing as mp
from deeplab_nb.protocol import segmentation_loss
from deeplab_nb.engine import _CPUSyncBatchNorm
from deeplab_nb.training import Trainer, TrainConfig

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
    "8 noisy images with a square of class 1 or 2, and a void (255) band of 1, 4, 7 or 10 columns: unequal counts per process."
    classes = ['background', 'bright', 'dark']
    def __init__(self, n=8, size=20):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            image, mask = torch.rand(3, size, size, generator=g), torch.zeros(size, size, dtype=torch.int64)
            top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
            mask[top:top + 7, left:left + 7] = 1 + i % 2
            image[:, top:top + 7, left:left + 7] += 0.8 if i % 2 == 0 else -0.8
            mask[:, :1 + 3 * (i % 4)] = 255
            self.items.append((image, mask))
    def __len__(self): return len(self.items)
    def __getitem__(self, i):
        image, mask = self.items[i]
        if torch.rand(()) < 0.5: image, mask = image.flip(-1), mask.flip(-1)  # augmentation from the seeded generator
        top, left = torch.randint(0, 5, (2,)).tolist()
        return image[:, top:top + 16, left:left + 16], mask[top:top + 16, left:left + 16]


def trainer(freeze_bn, run_dir):
    torch.manual_seed(0)
    # the model is Net (passed in); the config names a model TrainConfig knows, whose weight decay (1e-4, not Xception) Net gets
    config = TrainConfig(model='deeplabv3plus_resnet_small', steps=STEPS, batch_size=BATCH, lr=0.1, freeze_bn=freeze_bn, device='cpu',
                         eval_every=0, checkpoint_every=0, run_dir=str(run_dir))
    return Trainer(config, Net(), Shapes(), progress=False)


def run(freeze_bn, run_dir):
    "Train STEPS steps; returns the final weights (BN statistics included) and the logged losses."
    t = trainer(freeze_bn, run_dir)
    if t.world_size > 1: assert any(isinstance(m, _CPUSyncBatchNorm) for m in t.module.modules())
    losses = [t.step()['loss'] for _ in range(STEPS)]
    return {k: v.detach().clone() for k, v in t.module.state_dict().items()}, losses


def first_gradients(freeze_bn, run_dir):
    """The weight gradients of step 0's batch (after DDP's average, under torchrun): with the Trainer's loss, and, as a control,
    with each process's own mean over its non-void pixels; also this process's count of non-void pixels."""
    t = trainer(freeze_bn, run_dir)
    images, masks = t._next_batch()
    grads = {}
    for name, loss in (('trainer', t.loss), ('own_mean', segmentation_loss)):
        t.optimizer.zero_grad(set_to_none=True)
        loss(t.model(images), masks).backward()
        grads[name] = {n: p.grad.clone() for n, p in t.module.named_parameters() if p.grad is not None}
    return dict(grads, count=int((masks != 255).sum()))


def worker(rank, world_size, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for freeze_bn in (False, True):
            weights, losses = run(freeze_bn, Path(out) / f'run-{freeze_bn}')
            gradients = first_gradients(freeze_bn, Path(out) / f'grad-{freeze_bn}')
            torch.save(dict(weights=weights, losses=losses, gradients=gradients), Path(out) / f'rank{rank}-{freeze_bn}.pt')
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
            single[freeze_bn] = dict(weights=weights, losses=losses, gradients=first_gradients(freeze_bn, Path(out) / f'single-grad-{freeze_bn}'))
        yield distributed, single


# Tolerance of every comparison with one process: float32, rtol 1e-5 and atol 1e-6 (weights and losses after three
# steps), atol 2e-7 for the gradients of one step. Reason: two processes sum each reduction (the loss over pixels,
# SyncBN's mean and variance, the gradients) in two halves plus an all-reduce, one process in one pass: the same terms
# in another order, which moves float32 results by a few units in the last place (~1e-7 relative). The largest
# gradient entries are ~0.5 (float32 spacing there: 6e-8), and some entries are ~1e-9 (a weight followed by BN gets a
# nearly cancelling gradient), so the gradients need an absolute bound of a few of those units, not a relative one.
RTOL, ATOL, GRAD_ATOL = 1e-5, 1e-6, 2e-7


@pytest.mark.parametrize('freeze_bn', [False, True])
def test_replicas_stay_identical(results, freeze_bn):
    distributed, _ = results
    for k, v in distributed[0, freeze_bn]['weights'].items():
        assert torch.equal(v, distributed[1, freeze_bn]['weights'][k]), f'{k} differs between the two processes'


@pytest.mark.parametrize('freeze_bn', [False, True])
def test_gradient_with_void_pixels_is_the_single_process_gradient(results, freeze_bn):
    "The Trainer's loss under DDP (R * sum / global count) gives the gradient of one process holding the whole batch."
    distributed, single = results
    counts = [distributed[r, freeze_bn]['gradients']['count'] for r in (0, 1)]
    assert counts[0] != counts[1] and sum(counts) == single[freeze_bn]['gradients']['count']  # unequal void: the case that matters
    expected = single[freeze_bn]['gradients']['trainer']
    for rank in (0, 1):
        actual = distributed[rank, freeze_bn]['gradients']['trainer']
        assert actual.keys() == expected.keys()
        for k, v in expected.items(): torch.testing.assert_close(actual[k], v, rtol=RTOL, atol=GRAD_ATOL, msg=k)
    # The control: each process's own mean (the normalisation this replaced), averaged by DDP, is another gradient,
    # far outside the tolerance above, so the check can fail.
    own = distributed[0, freeze_bn]['gradients']['own_mean']
    change = max(float((own[k] - v).abs().max() / v.abs().max()) for k, v in expected.items())
    assert change > 100 * RTOL, change


@pytest.mark.parametrize('freeze_bn', [False, True])
def test_two_processes_equal_one_process_with_the_global_batch(results, freeze_bn):
    "SyncBN statistics over the global batch + the globally normalised loss = one process training on the whole batch."
    distributed, single = results
    weights = distributed[0, freeze_bn]['weights']
    assert weights.keys() == single[freeze_bn]['weights'].keys()
    for k, v in single[freeze_bn]['weights'].items():
        if v.is_floating_point(): torch.testing.assert_close(weights[k], v, rtol=RTOL, atol=ATOL, msg=k)
        else: assert torch.equal(weights[k], v), k  # num_batches_tracked
    torch.testing.assert_close(distributed[0, freeze_bn]['losses'], single[freeze_bn]['losses'], rtol=RTOL, atol=ATOL)
    changed = [k for k, v in weights.items() if 'running' in k and not torch.equal(v, Net().state_dict()[k])]
    assert bool(changed) == (not freeze_bn)  # fine-tuned BN moved its statistics; frozen BN did not

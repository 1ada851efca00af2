"""`ConfusionMatrix.all_reduce` in two real processes (gloo backend, CPU): each counts half of a split, both end
with the matrix of the whole split, equal to one process counting everything."""
import os, socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deeplab_nb.metrics import ConfusionMatrix


def _split(num_classes=5, num_images=6, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(num_images):
        target = rng.integers(0, num_classes, size=(7, 9)); target[rng.random(target.shape) < 0.1] = 255
        pred = np.where(rng.random(target.shape) < 0.5, np.where(target == 255, 0, target), rng.integers(0, num_classes, size=target.shape))
        pairs.append((pred, target))
    return pairs


def _worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        cm = ConfusionMatrix(5)
        for pred, target in _split()[rank::world_size]: cm.update(pred, target)  # this process's shard
        cm.all_reduce()
        torch.save(cm.matrix, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_all_reduce_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    whole = ConfusionMatrix(5)
    for pred, target in _split(): whole.update(pred, target)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path/f'rank{rank}.pt', weights_only=True), whole.matrix)
    assert whole.matrix.sum() > 0

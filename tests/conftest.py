"""Fixtures shared by more than one test file."""
import pytest
import torch


@pytest.fixture
def replay_losses():
    "A function: the first `steps` losses of the study run `config`, trained afresh in `run_dir` on `threads` threads."
    from deeplab_nb.study_runner import _study_trainer
    def replay(config, run_dir, threads, steps=5) -> list:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)  # the recorded run's kernels' summation order
        try:
            trainer = _study_trainer(config, run_dir, progress=False)
            return [trainer.step()['loss'] for _ in range(steps)]
        finally: torch.set_num_threads(previous)
    return replay

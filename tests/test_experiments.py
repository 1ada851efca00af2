"""The experiments chapter (16_experiments): `run_experiment` writes a well-formed result, and the committed
data/results/experiments.json was made by the configurations that are in the code now (so the chapter's numbers
come from this code, not from an older version of it)."""
import json
import math

import pytest

from deeplab_nb import experiments
from deeplab_nb.experiments import EXPERIMENTS, MS_SCALES, experiment_config, load_experiments, run_experiment
from deeplab_nb.synthetic import SYNTHETIC_CLASSES


def check_record(record, config):
    "A result as `run_experiment` promises it: config, finite metrics in [0, 1], one IOU per class, trimap, costs."
    assert record['config'] == config
    assert record['classes'] == SYNTHETIC_CLASSES
    assert 0 <= record['miou'] <= 1 and len(record['iou']) == len(SYNTHETIC_CLASSES)
    assert all(v is None or 0 <= v <= 1 for v in record['iou'])
    assert record['trimap']['widths'] == config['trimap_widths']
    assert len(record['trimap']['miou']) == len(config['trimap_widths'])
    settings = [(e['output_stride'], tuple(e['scales']), e['flip']) for e in record['evaluations']]
    expected = [(16, (1.0,), False)] + [(os, scales, flip) for os in config['inference_strides']
                                        for scales, flip in (((1.0,), False), (tuple(config['ms_scales']), False),
                                                             (tuple(config['ms_scales']), True))]
    assert settings == expected
    first = record['evaluations'][0]
    assert first['miou'] == record['miou'] and first['iou'] == record['iou']
    assert all(isinstance(e['madds'], int) and e['madds'] > 0 for e in record['evaluations'])
    flips = {(e['output_stride'], tuple(e['scales'])): e['madds'] for e in record['evaluations'] if e['flip']}
    for e in record['evaluations']:
        if not e['flip'] and (e['output_stride'], tuple(e['scales'])) in flips:
            assert flips[e['output_stride'], tuple(e['scales'])] == 2 * e['madds']  # the flip doubles the count
    assert len(record['loss']['step']) == len(record['loss']['smoothed']) > 0
    assert all(math.isfinite(v) for v in record['loss']['smoothed'])


def test_two_step_run_writes_a_well_formed_result(tmp_path):
    path = tmp_path / 'experiments.json'
    record = run_experiment('deeplabv3', path, steps=2, val_images=2, inference_strides=(8,), ms_scales=(0.75, 1.0))
    config = experiment_config('deeplabv3', steps=2, val_images=2, inference_strides=(8,), ms_scales=(0.75, 1.0))
    stored = json.loads(path.read_text())  # plain JSON (no NaN)
    assert list(stored['experiments']) == ['deeplabv3']
    assert stored['experiments']['deeplabv3'] == record
    check_record(record, config)
    assert record['num_val_images'] == 2 and record['config']['train']['steps'] == 2
    run_experiment('projection_0', path, steps=1, val_images=1)  # merged beside the first, not over it
    assert list(load_experiments(path)['experiments']) == ['deeplabv3', 'projection_0']


def test_committed_results_come_from_the_code_here():
    if not experiments.RESULTS_PATH.exists():
        pytest.skip('data/results/experiments.json is not there (a fresh checkout without the data folder)')
    stored = load_experiments()['experiments']
    assert set(stored) == set(EXPERIMENTS)  # every configured experiment, nothing else
    for name, record in stored.items():
        config = experiment_config(name)  # no overrides: the full runs
        check_record(record, config)
        assert record['num_val_images'] == 100
    assert tuple(stored['deeplabv3plus']['config']['ms_scales']) == MS_SCALES


def test_bad_names_and_settings():
    with pytest.raises(ValueError, match="unknown experiment 'nope'"): experiment_config('nope')
    with pytest.raises(ValueError, match='neither experiment settings'): experiment_config('deeplabv3', stepz=3)

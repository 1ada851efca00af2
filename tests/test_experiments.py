"""The ablation study (run by 15a_study_runner, judged by 16_experiments): the committed ledger is what the committed
records give, its tests are scipy's and its Holm correction the sequential procedure's, every record was made by a
configuration that is in the code now (its parameter count and Multiply-Adds re-derived from a model built from it), a
baseline record's first losses come back when its run is started again, and the runner's command line."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scipy import stats

from deeplab_nb.experiments import _ALPHA, _CLAIMS_PATH, _MARGIN, compute_claims
from deeplab_nb.study_runner import (_cpu_kind, _RECORDS, STUDY, _inference_madds, load_records, _run_id, _study_config, _study_dirs)
from deeplab_nb.model import build_model
from deeplab_nb.separable import count_params

ROOT = Path(__file__).resolve().parents[1]


def test_ledger_is_computed_from_the_records():
    assert json.loads(_CLAIMS_PATH.read_text()) == compute_claims()


def test_ledger_statistics_are_scipys_and_holms():
    ledger = json.loads(_CLAIMS_PATH.read_text())
    for dataset in ledger['studies']:
        tested = [c for c in ledger['claims'] if c['dataset'] == dataset and c['p'] is not None]
        for c in tested:  # scipy's one-sample t tests; the same t distribution, so equal to float rounding (1e-12)
            if c['direction'] == '=':
                p = max(stats.ttest_1samp(c['values'], -_MARGIN, alternative='greater').pvalue,
                        stats.ttest_1samp(c['values'], _MARGIN, alternative='less').pvalue)
            else: p = stats.ttest_1samp(c['values'], 0, alternative='greater' if c['direction'] == '+' else 'less').pvalue
            assert c['p'] == pytest.approx(p, rel=1e-12, abs=1e-15)
            if c['ratio_ci95'] is not None: assert c['ratio_ci95'] == pytest.approx(sorted(x / c['paper'] for x in c['ci95']), rel=1e-12)
        # Holm as Holm (1979) states it: step through the sorted p values, rejecting while p_(k) <= alpha / (m - k + 1)
        for alpha in (0.01, _ALPHA, 0.1, 0.2):
            rejected = set()
            for k, c in enumerate(sorted(tested, key=lambda c: c['p'])):
                if c['p'] > alpha / (len(tested) - k): break
                rejected.add(c['id'])
            assert rejected == {c['id'] for c in tested if c['p_holm'] <= alpha}, (dataset, alpha)


# The study's records, and those of the failed convergence checks at N = 8,000 (kept, with their step counts), on the
# bundled data and on CamVid (chapter 17: its first four runs, before N was doubled)
_CAMVID = _study_dirs('camvid')[0]
RECORDED = [(rid, record, None, 'synthetic') for rid, record in sorted(load_records().items())] + \
           [(rid, record, record['config']['train']['steps'], 'synthetic') for rid, record in sorted(load_records(_RECORDS / 'n8000').items())] + \
           [(rid, record, None, 'camvid') for rid, record in sorted(load_records(_CAMVID).items())] + \
           [(rid, record, record['config']['train']['steps'], 'camvid') for rid, record in sorted(load_records(_CAMVID / 'n8000').items())]


@pytest.mark.parametrize('rid,record,steps,dataset', RECORDED or [pytest.param(None, None, None, None, marks=pytest.mark.skip('no records yet'))])
def test_record_comes_from_the_code_here(rid, record, steps, dataset):
    name, seed = record['config']['name'], record['seed']
    overrides = ({} if steps is None else dict(steps=steps)) | ({} if dataset == 'synthetic' else dict(root=record['config']['train']['root']))
    expected = _study_config(name, seed, dataset, **overrides)  # CamVid's folder is the machine's: taken from the record
    assert rid == _run_id(name, seed) and record['config'] == expected
    config = record['config']
    model = build_model(config['model'], len(record['classes']), output_stride=config['train']['output_stride'], **config['model_kwargs'])
    assert count_params(model) == record['params']
    stride = config['train']['output_stride']
    assert _inference_madds(model.eval(), stride, size=config['madds_size']) == record['evaluations'][f'os{stride}']['madds']
    assert record['steps'] == config['train']['steps'] and record['val_curve'][-1][0] == record['steps']


def test_a_baseline_run_starts_with_its_recorded_losses(tmp_path, replay_losses):
    records = load_records()
    # Bit equality holds on the kind of CPU that recorded the run: its model name and its ISA flags (AVX2, AVX-512,
    # AVX512_BF16, AMX), which pick the kernels and so the order of their sums. On another kind training diverges within
    # a few steps (measured: records from an AMD EPYC replayed on an Intel Xeon agree at step 0 and differ by 1.6% at
    # step 4; an AVX2-only EPYC, whose model name is the same as the recording EPYC's, differs by 0.014 at step 4).
    # Records made before the flags were recorded name only the model, so they never count as this kind of CPU.
    baselines = [rid for rid in sorted(records) if rid.startswith('baseline-')]
    if not baselines: pytest.skip('no baseline record yet')
    here = [rid for rid in baselines if _cpu_kind(records[rid]) == _cpu_kind()]
    rid = (here or baselines)[0]
    record = records[rid]
    losses = replay_losses(record['config'], tmp_path / rid, record['threads'])  # the recorded run's thread count
    # Same code, data order and seed: equal to float32 rounding (1e-5 relative) on the kind of CPU that recorded the run;
    # on another kind only the first step, before the updates diverge
    compared = 5 if here else 1
    assert losses[:compared] == pytest.approx(record['losses']['first'][:compared], rel=1e-5)


def test_study_cli():
    cli = subprocess.run(['deeplab_nb_study', '--status', '--seeds', '0'], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert [line.split()[0] for line in cli.stdout.splitlines()] == [_run_id(name, 0) for name in STUDY]
    bad = subprocess.run(['deeplab_nb_study', '--names', 'baseline,nope'], capture_output=True, text=True)
    assert bad.returncode != 0 and "deeplab_nb_study: error: unknown configuration 'nope'" in bad.stderr
    assert 'Traceback' not in bad.stderr
    # the module runs as a script too (`python -m deeplab_nb.experiments`), the CamVid study included
    module = subprocess.run([sys.executable, '-m', 'deeplab_nb.experiments', '--status', '--seeds', '0', '--dataset', 'camvid'],
                            capture_output=True, text=True, cwd=ROOT)
    assert module.returncode == 0, module.stderr
    assert [line.split()[0] for line in module.stdout.splitlines()] == [_run_id(name, 0) for name in STUDY]


# The harness of the study: chapter 15a defines it, chapter 16 only imports it (issue 31)
HARNESS = ('STUDY', '_STUDY_DEFAULTS', '_DATASET_STUDIES', '_study_config', '_study_dirs', '_inference_madds', '_inference_sweep',
           '_study_trainer', 'study_run', '_cpu_kind', '_write_json', '_locked', '_run_locked', 'study_status', 'run_study',
           'load_records')


def _cells(stem):
    return json.loads((ROOT / 'nbs' / f'{stem}.ipynb').read_text())['cells']


def _defines(source, name):
    return re.search(rf'^(?:def|class) {name}\b|^{name}\s*=', source, re.M)


def test_chapter_16_shows_results_first_and_the_harness_lives_in_15a():
    """Chapter 16 shows a result read from the records within its first ten cells; none of its markdown paragraphs
    (blocks between blank lines) runs past 1,000 characters; the harness is exported by 15a, and 16 defines none of it."""
    cells = _cells('16_experiments')
    first = [i for i, c in enumerate(cells[:10]) if c['cell_type'] == 'code' and c.get('outputs')
             and re.search(r'load_records\(|_CLAIMS_PATH', ''.join(c['source']))]
    assert first, 'none of the first ten cells of 16 shows a result read from the records'
    long = [(i, len(p), p[:60]) for i, c in enumerate(cells) if c['cell_type'] == 'markdown'
            for p in re.split(r'\n\s*\n', ''.join(c['source'])) if len(p) > 1000]
    assert not long, f'markdown paragraphs of 16 over 1,000 characters: {long}'
    code16 = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    code15a = [''.join(c['source']) for c in _cells('15a_study_runner') if c['cell_type'] == 'code']
    for name in HARNESS:
        assert not any(_defines(s, name) for s in code16), f'16 defines {name}: the harness lives in 15a'
        assert any(_defines(s, name) and s.startswith('#|export') for s in code15a), f'15a does not export {name}'

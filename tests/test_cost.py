"""The committed Multiply-Adds results (data/results/madds.json) are what our models cost now, and every cell is within
the tolerance that nbs/08_cost.ipynb claims against the paper's Tables 3 and 5 and the Cityscapes model-zoo number.

Recomputed here from shapes on the meta device (the count fvcore makes, proven equal in the chapter and in the slow
cell): every single-scale pass of every paper cell, one whole multi-scale row, every decoder variant. A change to any
model moves its 513x513 count, so any reproduced cell that moves fails here."""
from pathlib import Path

import pytest
import torch

from deeplab_nb.cost import (PAPER_CELLS, PAPER_TABLE3, PAPER_TABLE5, PAPER_CITYSCAPES, DECODER_VARIANTS, OFFICIAL_RESNET,
                             ATROUS_COUNTS, MaddsCounter, cell_config, comparison_rows, claimed_tolerance, count_key,
                             decoder_cost, eval_sizes, load_madds_results, paper_architecture, NAMED_MODEL_RANGE)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'data'/'results'/'madds.json'


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Shape passes on the meta device are Python overhead: faster without a contended thread pool; restored afterwards."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def results():
    return load_madds_results(RESULTS)


def _passes(cells):
    "Every distinct (name, kwargs, output stride, size) of `cells` on the named model and on the paper's architecture."
    passes = {}
    for cell in cells:
        for variant in ({}, paper_architecture(cell)):
            name, kwargs = cell_config(cell, **variant)
            for size in eval_sizes(cell): passes[count_key(name, kwargs, cell.eval_output_stride, size)] = (name, kwargs, cell.eval_output_stride, size)
    return passes


def test_single_scale_passes_are_current(results):
    "Every single-scale pass of Tables 3 and 5 and the Cityscapes pass, recomputed, equals the committed entry exactly."
    fresh = MaddsCounter()
    passes = _passes([c for c in PAPER_CELLS if not c.multi_scale])
    assert len(passes) == 6 + 6 + 6 + 1  # ResNet named + official, Xception, Cityscapes
    for key, args in passes.items():
        entry = fresh.count(*args)
        for atrous in ATROUS_COUNTS: assert entry[atrous] == results['counts'][key][atrous], key
        committed_fvcore = results['counts'][key]['fvcore']
        assert committed_fvcore is None or committed_fvcore == entry['dilated'], key
    for key, params in fresh.params.items(): assert results['params'][key] == params, key


def test_one_multi_scale_row_is_current(results):
    "The whole multi-scale sum of Table 5's SC row at eval output stride 16, recomputed pass by pass, and traced by fvcore."
    cell = [c for c in PAPER_TABLE5 if c.separable and c.multi_scale and c.eval_output_stride == 16][0]
    fresh = MaddsCounter()
    committed = MaddsCounter(results['counts'], compute=False)
    for atrous in ATROUS_COUNTS: assert fresh.cell(cell, atrous) == committed.cell(cell, atrous)
    assert committed.cell(cell, 'fvcore') == committed.cell(cell, 'dilated')


def test_decoder_variants_are_current(results):
    "Every Table 1/2/5 decoder variant's Multiply-Adds and parameters, recomputed; fvcore's count committed beside it."
    for name, (kwargs, _) in DECODER_VARIANTS.items():
        committed = results['decoder_variants'][name]
        assert decoder_cost(kwargs) == {'madds': committed['madds'], 'params': committed['params']}, name
        assert committed['fvcore'] == committed['madds'], name
    assert round(results['decoder_variants']['Table 2: Conv2, [3x3,256]x2']['madds'] / 1e9, 2) == round(89.76 - 68.00, 2)


def test_every_cell_within_the_claimed_tolerance(results):
    "Every paper cell: the paper's architecture, counted as TF runs atrous convs, within claimed_tolerance; named models in range."
    rows = comparison_rows(MaddsCounter(results['counts'], results['params'], compute=False))
    assert len(rows) == len(PAPER_TABLE3) + len(PAPER_TABLE5) + 1 == 39
    for row in rows:
        cell = row['cell']
        assert abs(row['paper_architecture_tf_diff']) <= claimed_tolerance(cell), (cell, row['paper_architecture_tf_diff'])
        assert NAMED_MODEL_RANGE[0] <= row['ours_diff'] <= NAMED_MODEL_RANGE[1], (cell, row['ours_diff'])
    cityscapes = [r for r in rows if r['cell'] is PAPER_CITYSCAPES][0]
    assert cityscapes['ours_counted_by'] == 'fvcore' and abs(cityscapes['ours_diff']) < 0.001


def test_fvcore_traced_the_planned_subset(results):
    "The committed file holds fvcore's counts for every single-scale cell of the named models (the chapter's claim)."
    committed = MaddsCounter(results['counts'], compute=False)
    for cell in PAPER_TABLE3 + PAPER_TABLE5:
        if not cell.multi_scale: assert committed.cell(cell, 'fvcore') == committed.cell(cell, 'dilated'), cell
    assert committed.cell(PAPER_TABLE3[4], 'fvcore', **OFFICIAL_RESNET) == committed.cell(PAPER_TABLE3[4], 'dilated', **OFFICIAL_RESNET)

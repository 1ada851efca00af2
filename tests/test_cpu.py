"""for_cpu (chapter 14c_cpu) across modules: BN folding exact on every architecture, the fp32 evaluation unchanged,
bf16 refused without native support, ONNX export equal to eager. Tolerances are the chapter's: float64 folding may
differ from the unfolded model only by float64 rounding (relative 1e-9 through ~100 layers, with margin); float32 by
float32 reordering (relative 1e-4 of the largest logit)."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from deeplab_nb import cpu
from deeplab_nb.cpu import fold_batchnorms, for_cpu, native_bf16, compare_predictions, _bf16_acceptable
from deeplab_nb.inference import evaluate, predict
from deeplab_nb.model import build_model
from deeplab_nb.resnet import _randomize_batchnorm
from deeplab_nb.synthetic import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / 'shared' / 'realdata'  # the repo root's sibling; users' clones have none
PROBE = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(1))


def random_model(name, **kwargs):
    torch.manual_seed(0)
    return _randomize_batchnorm(build_model(name, num_classes=7, **kwargs)).eval()


def relative_error(a, b): return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize('name', ['deeplabv3plus_resnet_small', 'deeplabv3_resnet_small', 'deeplabv3plus_xception_tiny',
                                  'deeplabv3plus_xception65_sc', 'deeplabv3plus_resnet50'])
def test_folding_is_exact(name):
    "Every BN folded (none left), logits equal in float64 to rounding: ResNet stems/bottlenecks/shortcuts, Xception separable, ASPP, decoder."
    model = random_model(name).double()
    folded = fold_batchnorms(copy.deepcopy(model), PROBE.double())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    image = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(2)).double()
    with torch.no_grad(): assert relative_error(folded(image), model(image)) < 1e-9


def test_fp32_evaluation_unchanged():
    "evaluate() of for_cpu(model) gives today's mIOU to 4 decimals on the bundled val split (random BN statistics)."
    model, val = random_model('deeplabv3plus_xception_tiny'), Subset(synthetic_dataset('val'), range(20))
    today, prepared = evaluate(model, val, num_classes=7, progress=False), evaluate(for_cpu(model), val, num_classes=7, progress=False)
    assert round(today['miou'], 4) == round(prepared['miou'], 4)
    assert (today['confusion_matrix'] - prepared['confusion_matrix']).abs().sum() <= 2 * 10  # at most a few rounding ties


def test_bf16_refused_without_native_support(monkeypatch):
    monkeypatch.setattr(cpu, 'native_bf16', lambda: False)
    with pytest.raises(ValueError, match='drop --precision bf16'): for_cpu(random_model('deeplabv3plus_xception_tiny'), 'bf16')


def test_not_on_cpu_is_returned_unchanged_in_fp32_and_refused_in_bf16():
    with torch.device('meta'): model = build_model('deeplabv3plus_xception_tiny')
    assert for_cpu(model) is model
    with pytest.raises(ValueError, match='for CPU inference'): for_cpu(model, 'bf16')


@pytest.mark.skipif(not native_bf16(), reason='this CPU has no native bf16')
def test_bf16_close_to_fp32():
    "bf16 logits come back in fp32 and agree with fp32 on most pixels (random weights: a loose 95%; trained: see 14c)."
    model, val = random_model('deeplabv3plus_xception_tiny'), Subset(synthetic_dataset('val'), range(5))
    comparison = compare_predictions(model, for_cpu(model, 'bf16'), val, 7)
    assert comparison['agreement'] > 0.95
    assert _bf16_acceptable(compare_predictions(model, model, val, 7))


def test_onnx_export_matches_eager(tmp_path):
    pytest.importorskip('onnx'); pytest.importorskip('onnxscript'); onnxruntime = pytest.importorskip('onnxruntime')
    model = random_model('deeplabv3plus_xception_tiny')
    session = onnxruntime.InferenceSession(str(cpu.export_onnx(model, tmp_path / 'm.onnx', (65, 65))),
                                           providers=['CPUExecutionProvider'])
    image = torch.rand(1, 3, 65, 65)
    with torch.no_grad(): eager = model(image)
    assert relative_error(torch.from_numpy(session.run(None, {'image': image.numpy()})[0]), eager) < 1e-4


@pytest.mark.skipif(not REALDATA.exists(), reason='../shared/realdata (real VOC 2012 samples) is absent')
def test_fp32_prepared_predicts_the_same_on_real_images():
    from deeplab_nb.data import VOCSegmentation
    real = VOCSegmentation(REALDATA, 'trainval')
    model = random_model('deeplabv3plus_xception_tiny')
    comparison = compare_predictions(model, for_cpu(model), real, 21)
    assert comparison['agreement'] > 0.9999 and round(comparison['miou_change'], 4) == 0

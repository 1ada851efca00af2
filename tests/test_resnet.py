"""The exported `deeplab_nb.resnet` works on its own, outside the notebook's namespace (imports, registry, contract)."""
import torch
from deeplab_nb import resnet


def test_module_runs_standalone():
    "Build and run the thin ResNet from the installed module only: catches names the notebook defined but never exported."
    model = resnet.resnet_small(output_stride=8).eval()
    with torch.no_grad(): features = model(torch.rand(1, 3, 33, 33))
    assert list(features) == ['low_level', 'out']
    assert features['low_level'].shape[-1] == 9 and features['out'].shape[-1] == 5
    assert model.set_output_stride(32).feature_info[1]['stride'] == 32


def test_backbones_registry():
    "BACKBONES holds the two paper constructors, each taking the shared backbone arguments."
    assert set(resnet.BACKBONES) == {'resnet50', 'resnet101'}
    with torch.device('meta'):
        model = resnet.BACKBONES['resnet50'](output_stride=8, multi_grid=(1, 2, 4), stem='beta', stride_placement='official', pretrained=False)
    assert model.output_stride == 8 and model.input_mean == (0.5, 0.5, 0.5)
    assert [info['channels'] for info in model.feature_info] == [256, 2048]

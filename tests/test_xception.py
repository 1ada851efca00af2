"""The Xception backbones as other chapters use them: the shared backbone interface, and weights loaded from a file."""
import pytest
import torch

from deeplab_nb import xception
from deeplab_nb.resnet import _randomize_batchnorm
from deeplab_nb.xception import _XCEPTION_TABLES, Xception, xception41


def on_meta(constructor, **kwargs):
    with torch.device('meta'): return constructor(**kwargs).eval()


@pytest.mark.parametrize('name', sorted(_XCEPTION_TABLES))
@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_feature_info_describes_forward(name, output_stride):
    "Every Xception returns exactly the features its `feature_info` names, with the strides and channels it states."
    model = on_meta(getattr(xception, name), output_stride=output_stride)  # each table has a constructor of its name
    assert isinstance(model, Xception) and model.output_stride == output_stride
    features = model(torch.empty(2, 3, 513, 513, device='meta'))
    assert [info['name'] for info in model.feature_info] == list(features) == ['low_level', 'conv3', 'out']
    for info in model.feature_info:
        side = (513 - 1) // info['stride'] + 1
        assert tuple(features[info['name']].shape) == (2, info['channels'], side, side), info
        assert info['stride'] == min(info['reduction'], output_stride)
        model.get_submodule(info['module'])  # the named module exists
    assert [info['reduction'] for info in model.feature_info] == [4, 8, 32]
    assert len(model.input_mean) == len(model.input_std) == 3
    assert list(model(torch.empty(1, 3, 65, 65, device='meta'), 'conv3')) == ['conv3']


def test_pretrained_from_a_downloaded_file(tmp_path):
    "`xception41(pretrained=path)` loads a timm checkpoint file through timm's API, without the network."
    timm = pytest.importorskip('timm')
    reference = _randomize_batchnorm(timm.create_model('xception41', pretrained=False), seed=3).eval()
    weights_file = tmp_path / 'model.pth'
    torch.save(reference.state_dict(), weights_file)
    model = xception41(output_stride=32, pretrained=weights_file).eval()
    assert model.mean.device.type == 'cpu' and model.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert all(not p.is_meta for p in model.parameters())
    x = torch.rand(1, 3, 33, 49)
    with torch.no_grad():
        # 1e-4 absolute on features of order 1-10: the same convolutions, the input scaled in another place (float32 rounding)
        torch.testing.assert_close(model(x)['out'], reference.forward_features((x - 0.5) / 0.5), atol=1e-4, rtol=0)
    # the loaded model owns its tensors: training it cannot change the checkpoint's source
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(model.parameters(), reference.parameters()))
    assert not hasattr(xception, 'BACKBONES')  # the registry is deeplab_nb.model.BACKBONES, defined once

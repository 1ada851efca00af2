"""The Xception backbones as other chapters use them: the shared backbone interface, and weights loaded from a file."""
import pytest
import torch

from deeplab_nb.resnet import randomize_batchnorm
from deeplab_nb.xception import BACKBONES, Xception, xception41


def on_meta(constructor, **kwargs):
    with torch.device('meta'): return constructor(**kwargs).eval()


@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_feature_info_describes_forward(name, output_stride):
    "Every backbone returns exactly the taps its `feature_info` names, with the strides and channels it states."
    model = on_meta(BACKBONES[name], output_stride=output_stride)
    assert isinstance(model, Xception) and model.output_stride == output_stride
    features = model(torch.empty(2, 3, 513, 513, device='meta'))
    assert [info['name'] for info in model.feature_info] == list(features) == ['low_level', 'out']
    for info in model.feature_info:
        side = (513 - 1) // info['stride'] + 1
        assert tuple(features[info['name']].shape) == (2, info['channels'], side, side), info
        model.get_submodule(info['module'])  # the named module exists
    assert model.feature_info[0]['stride'] == 4
    assert len(model.input_mean) == len(model.input_std) == 3


def test_pretrained_from_a_downloaded_file(tmp_path):
    "`xception41(pretrained=path)` loads a timm checkpoint file through timm's API, without the network."
    timm = pytest.importorskip('timm')
    reference = randomize_batchnorm(timm.create_model('xception41', pretrained=False), seed=3).eval()
    weights_file = tmp_path / 'model.pth'
    torch.save(reference.state_dict(), weights_file)
    model = xception41(output_stride=32, pretrained=weights_file).eval()
    assert model.mean.device.type == 'cpu' and model.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert all(not p.is_meta for p in model.parameters())
    x = torch.rand(1, 3, 33, 49)
    with torch.no_grad():
        torch.testing.assert_close(model(x)['out'], reference.forward_features((x - 0.5) / 0.5), atol=1e-4, rtol=0)
    # the loaded model owns its tensors: training it cannot change the checkpoint's source
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(model.parameters(), reference.parameters()))

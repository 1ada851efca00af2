"""The model as the paper specifies it and as training, inference, the command line and the cost chapter use it
(05_aspp, 06_decoder, 07_model): the paper's settings read from the built modules, the resize rule proven on a closed
form, the registry, and every named model's forward and backward pass."""
import pytest
import torch
from torch import nn

from deeplab_nb import aspp, decoder, model


def convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_aspp_is_the_papers():
    """ASPP as Sect. 3.1 (from DeepLabv3) builds it at OS 16: image pooling's 1x1, a 1x1 and three 3x3 branches at rates
    (6, 12, 18), 256 filters each, the 1x1 projection, dropout 0.1 (official); the rates scale with 16 / OS."""
    head = aspp.ASPP(2048).eval()
    assert [(c.kernel_size[0], c.dilation[0], c.out_channels) for c in convs(head)] == \
        [(1, 1, 256), (1, 1, 256), (3, 6, 256), (3, 12, 256), (3, 18, 256), (1, 1, 256)]
    assert convs(head)[-1].in_channels == 5 * 256 and head.dropout.p == 0.1
    assert [aspp.aspp_rates(os) for os in (8, 16, 32)] == [(12, 24, 36), (6, 12, 18), (3, 6, 9)]
    assert head.set_output_stride(8) is head and [c.dilation[0] for c in convs(head)[2:5]] == [12, 24, 36]


def test_decoder_is_the_papers():
    "The decoder of Tables 1 and 2's best rows: low-level features projected by [1x1, 48], then [3x3, 256] twice on the concatenation."
    assert [(c.kernel_size[0], c.in_channels, c.out_channels) for c in convs(decoder.Decoder())] == \
        [(1, 256, 48), (3, 256 + 48, 256), (3, 256, 256)]


def test_upsampling_reproduces_affine_maps_exactly():
    """Every resize is bilinear with align_corners=True (the official code's): corners map to corners, so an affine
    function of the pixel coordinates is reproduced exactly (float64; 1e-12 allows only rounding)."""
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 9, dtype=torch.float64), torch.linspace(0, 1, 5, dtype=torch.float64), indexing='ij')
    big_rows, big_cols = torch.meshgrid(torch.linspace(0, 1, 33, dtype=torch.float64), torch.linspace(0, 1, 17, dtype=torch.float64), indexing='ij')
    affine = lambda r, c: 3 * r - 2 * c + 0.5
    torch.testing.assert_close(decoder._upsample_to(affine(rows, cols)[None, None], (33, 17))[0, 0], affine(big_rows, big_cols),
                               atol=1e-12, rtol=0)


def test_model_registry():
    "build_model's defaults are the paper's VOC setting (21 classes, OS 16); every name builds its constructor."
    with torch.device('meta'): built = model.build_model('deeplabv3plus_xception65')
    assert built.num_classes == 21 and built.output_stride == 16
    paper = {'deeplabv3_resnet101', 'deeplabv3plus_resnet101', 'deeplabv3_xception65', 'deeplabv3plus_xception65',
             'deeplabv3plus_xception65_sc', 'deeplabv3plus_xception71', 'deeplabv3plus_xception_tiny'}
    assert paper <= set(model.MODELS)
    for name, constructor in model.MODELS.items():
        assert constructor.__name__ == name and getattr(model, name) is constructor
    with pytest.raises(ValueError, match='unknown model'): model.build_model('deeplabv3plus_resnet152')


@pytest.mark.parametrize('name', sorted(model.MODELS))
def test_every_model_builds_and_keeps_the_input_size(name):
    "Each registered model builds (on the meta device: shapes only) and returns logits at the input size, at OS 16 and 8."
    with torch.device('meta'):
        net = model.build_model(name, num_classes=3).eval()
    for output_stride in (16, 8):
        logits = net.set_output_stride(output_stride)(torch.empty(2, 3, 97, 130, device='meta'))
        assert logits.shape == (2, 3, 97, 130) and net.output_stride == output_stride
    assert len(net.input_mean) == 3


def test_training_default_runs_for_real():
    "The bundled CPU job's model (14_training's default) takes `pretrained=False` and trains: a backward pass works."
    net = model.build_model('deeplabv3plus_xception_tiny', num_classes=4, output_stride=16, pretrained=False).train()
    logits = net(torch.rand(2, 3, 65, 65))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 4, (2, 65, 65))).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_one_backbone_registry():
    "BACKBONES is defined once, in deeplab_nb.model, and holds every backbone constructor of chapters 03 and 04."
    from deeplab_nb import resnet, xception
    assert model.BACKBONES == {'resnet50': resnet.resnet50, 'resnet101': resnet.resnet101, 'resnet_small': resnet.resnet_small,
                               'resnet_tiny': resnet.resnet_tiny,
                               'xception41': xception.xception41, 'xception65': xception.xception65,
                               'xception71': xception.xception71, 'xception_tiny': xception.xception_tiny}
    assert not hasattr(resnet, 'BACKBONES') and not hasattr(xception, 'BACKBONES')


@pytest.mark.parametrize('name', sorted(model.BACKBONES))
def test_every_backbone_follows_the_features_interface(name):
    "Each backbone returns the features `feature_info` declares, by name, with the stated channels and strides."
    with torch.device('meta'): backbone = model.BACKBONES[name]().eval()
    assert [info['name'] for info in backbone.feature_info] == ['low_level', 'conv3', 'out']
    for output_stride in (8, 16, 32):
        features = backbone.set_output_stride(output_stride)(torch.empty(1, 3, 65, 97, device='meta'))
        for info in backbone.feature_info:
            assert info['stride'] == min(info['reduction'], output_stride)
            assert tuple(features[info['name']].shape) == (1, info['channels'], -(-65 // info['stride']), -(-97 // info['stride']))
    assert list(backbone(torch.empty(1, 3, 33, 33, device='meta'), ('out', 'conv3'))) == ['conv3', 'out']
    with pytest.raises(ValueError, match="no feature 'conv4'"): backbone(torch.empty(1, 3, 33, 33, device='meta'), 'conv4')


def test_conv2_conv3_decoder_asks_the_backbone_by_name():
    "Table 2's U-Net-like decoder (the study's conv2_conv3) builds on every backbone and installs no forward hook."
    from unittest import mock
    for name in ('deeplabv3plus_xception_tiny', 'deeplabv3plus_resnet_small'):
        net = model.build_model(name, num_classes=3, low_level_features=('conv3', 'low_level'), refine=((3, 64),)).eval()
        assert net.low_level_features == ('conv3', 'low_level')
        with torch.no_grad(), mock.patch.object(torch.nn.Module, 'register_forward_hook', side_effect=AssertionError('a hook')):
            assert net(torch.rand(1, 3, 65, 65)).shape == (1, 3, 65, 65)
            assert list(net.backbone_features(torch.rand(1, 3, 65, 65))) == ['low_level', 'conv3', 'out']
    with pytest.raises(ValueError, match="no feature 'layer2.1.bn3'"):
        model.build_model('deeplabv3plus_resnet_small', low_level_features=('layer2.1.bn3', 'low_level'))


@pytest.mark.parametrize('name', ['deeplabv3_resnet101', 'deeplabv3plus_resnet101'])
def test_table3_configurations_use_the_papers_multi_grid(name):
    "The Table 3 ResNet-101 configurations: block4's 3x3 convs at rates (2, 4, 8) at OS 16 and (4, 8, 16) at OS 8."
    def rates(net): return [(unit.conv2.stride[0], unit.conv2.dilation[0]) for unit in net.backbone.layer4]
    expected = {16: [(1, 2), (1, 4), (1, 8)], 8: [(1, 4), (1, 8), (1, 16)]}
    with torch.device('meta'):
        for output_stride in (16, 8): assert rates(model.build_model(name, output_stride=output_stride)) == expected[output_stride]
        net = model.build_model(name)
    assert rates(net.set_output_stride(8)) == expected[8] and rates(net.set_output_stride(16)) == expected[16]

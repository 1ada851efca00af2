"""The model contract that training, inference, the command line and the cost chapter build on (05_aspp, 06_decoder, 07_model).

The notebooks prove what the modules compute; this file pins the names, call signatures and registry entries other
modules import, so that a change to them fails here, next to the contract, rather than somewhere downstream."""
import inspect

import pytest
import torch

from deeplab_nb import aspp, decoder, model


def parameters(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_aspp_contract():
    assert [aspp.aspp_rates(os) for os in (8, 16, 32)] == [(12, 24, 36), (6, 12, 18), (3, 6, 9)]
    assert parameters(aspp.ASPP)[1:] == [('out_channels', 256), ('atrous_rates', None), ('output_stride', 16),
                                         ('separable', False), ('image_pooling', True), ('dropout', 0.1)]
    head = aspp.ASPP(8, out_channels=4)
    assert head.set_output_stride(8) is head and head.atrous_rates == (12, 24, 36)


def test_decoder_contract():
    empty = inspect.Parameter.empty
    assert parameters(decoder.Decoder) == [('encoder_channels', 256), ('low_level_channels', (256,)),
                                           ('projection_channels', 48), ('refine', ((3, 256), (3, 256))),
                                           ('separable', False)]
    assert parameters(decoder._upsample_to) == [('x', empty), ('size', empty)]


def test_model_contract():
    assert parameters(model.build_model)[:3] == [('name', inspect.Parameter.empty), ('num_classes', 21), ('output_stride', 16)]
    assert tuple(model._DEEPLAB_ARGS) == ('num_classes', 'decoder', 'atrous_rates', 'separable', 'image_pooling', 'dropout',
                                         'aspp_channels', 'projection_channels', 'refine', 'low_level_features')
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

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
    assert parameters(decoder.upsample_to) == [('x', empty), ('size', empty)]


def test_model_contract():
    assert parameters(model.build_model)[:3] == [('name', inspect.Parameter.empty), ('num_classes', 21), ('output_stride', 16)]
    assert tuple(model.DEEPLAB_ARGS) == ('num_classes', 'decoder', 'atrous_rates', 'separable', 'image_pooling', 'dropout',
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

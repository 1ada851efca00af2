"""The operator contract that the backbone, ASPP, decoder and cost chapters build on (01_atrous, 02_separable).

The notebooks prove what the functions compute; this file pins the names and call signatures other modules import,
so that a change to them fails here, next to the contract, rather than somewhere downstream."""
import inspect

import torch
from torch import nn

from deeplab_nb import atrous, separable


def parameters(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_atrous_contract():
    empty = inspect.Parameter.empty
    assert atrous._OUTPUT_STRIDES == (8, 16, 32)
    assert parameters(atrous.atrous_conv2d) == [('x', empty), ('weight', empty), ('bias', None), ('stride', 1),
                                                ('padding', 0), ('rate', 1)]
    assert parameters(atrous.effective_kernel_size) == [('kernel_size', empty), ('rate', 1)]
    assert parameters(atrous._fixed_padding) == [('kernel_size', empty), ('rate', 1)]
    assert parameters(atrous.scale_dimension) == [('dim', empty), ('scale', empty)]
    assert parameters(atrous.atrous_schedule) == [('unit_strides', empty), ('output_stride', empty)]
    assert parameters(atrous._set_atrous) == [('conv', empty), ('stride', empty), ('rate', empty)]
    for name in ('receptive_field', 'check_output_stride'): assert callable(getattr(atrous, name))


def test_separable_contract():
    assert parameters(separable.SeparableConv2d)[2:] == [
        ('kernel_size', 3), ('stride', 1), ('rate', 1), ('depthwise_activation', False), ('pointwise_activation', False),
        ('bn_eps', 1e-3), ('bn_momentum', 3e-4)]
    assert parameters(separable._ConvBNReLU)[2:] == [
        ('kernel_size', 1), ('stride', 1), ('rate', 1), ('activation', True), ('bn_eps', 1e-5), ('bn_momentum', 3e-4)]
    sep = separable.SeparableConv2d(4, 8)
    assert [name for name, _ in sep.named_children()] == ['conv_dw', 'bn_dw', 'act_dw', 'conv_pw', 'bn_pw', 'act_pw']
    assert [name for name, _ in separable._ConvBNReLU(4, 8).named_children()] == ['conv', 'bn', 'act']
    assert inspect.signature(separable.count_madds).parameters['operators'].default == ('conv',)


def test_count_madds_is_quiet(recwarn, caplog):
    "Counting a model warns about nothing (no tracer, deprecation or unsupported-operator noise) and leaves it as it was."
    model = nn.Sequential(separable._ConvBNReLU(3, 8, 3), nn.Upsample(scale_factor=2, mode='bilinear'), nn.Hardswish()).train()
    assert separable.count_madds(model, torch.randn(1, 3, 9, 9)) == separable.conv2d_madds(3, 8, 3, 9, 9)
    assert model.training
    assert len(recwarn) == 0, [str(w.message) for w in recwarn]
    assert not [r for r in caplog.records if r.levelname == 'WARNING'], caplog.text  # fvcore warns through logging

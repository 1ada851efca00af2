"""The exported `deeplab_nb.resnet` works on its own, outside the notebook's namespace (imports, interface, multi-grid)."""
import pytest
import torch
from deeplab_nb import resnet


def test_module_runs_standalone():
    "Build and run the thin ResNet from the installed module only: catches names the notebook defined but never exported."
    model = resnet.resnet_small(output_stride=8).eval()
    with torch.no_grad(): features = model(torch.rand(1, 3, 33, 33))
    assert list(features) == ['low_level', 'conv3', 'out']
    assert [features[name].shape[-1] for name in features] == [9, 5, 5]
    with torch.no_grad(): assert list(model(torch.rand(1, 3, 33, 33), ('out', 'low_level'))) == ['low_level', 'out']
    assert model.set_output_stride(32).feature_info[-1]['stride'] == 32


def test_constructors_take_the_backbone_arguments():
    "The paper's constructors take the shared backbone arguments; `feature_info` states the three features' channels."
    with torch.device('meta'):
        model = resnet.resnet50(output_stride=8, multi_grid=(1, 2, 4), stem='beta', stride_placement='official', pretrained=False)
    assert model.output_stride == 8 and model.input_mean == (0.5, 0.5, 0.5)
    assert [(info['name'], info['channels'], info['reduction']) for info in model.feature_info] == \
        [('low_level', 256, 4), ('conv3', 512, 8), ('out', 2048, 32)]
    assert not hasattr(resnet, 'BACKBONES')  # the registry is deeplab_nb.model.BACKBONES, defined once


def block4(model):
    "(stride, dilation, padding) of block4's 3x3 convolutions, read from the built model."
    return [(unit.conv2.stride[0], unit.conv2.dilation[0], unit.conv2.padding[0]) for unit in model.layer4]


@pytest.mark.parametrize('layout', [dict(), dict(stem='beta', stride_placement='official')])
def test_multi_grid_is_the_papers_in_both_layouts(layout):
    "Multi-grid (1, 2, 4): block4 at 2 * (1, 2, 4) at OS 16 and 4 * (1, 2, 4) at OS 8, built so or set afterwards."
    expected = {16: [(1, 2, 2), (1, 4, 4), (1, 8, 8)], 8: [(1, 4, 4), (1, 8, 8), (1, 16, 16)]}
    with torch.device('meta'):
        for output_stride in (16, 8): assert block4(resnet.resnet101(output_stride=output_stride, **layout)) == expected[output_stride]
        model = resnet.resnet101(**layout)
    for output_stride in (8, 32, 16, 8):
        model.set_output_stride(output_stride)
        if output_stride in expected: assert block4(model) == expected[output_stride]
    assert [rate for _, rate, _ in block4(model.set_output_stride(32))] == [1, 2, 4]  # the unit rates themselves at OS 32


@pytest.mark.parametrize('output_stride, dilate', [(32, [False, False, False]), (16, [False, False, True]), (8, [False, True, True])])
def test_without_multi_grid_the_torchvision_layout_is_torchvisions(output_stride, dilate):
    "multi_grid=(1, 1, 1), torchvision layout: every unit's (stride, rate) is torchvision's `replace_stride_with_dilation`'s."
    import torchvision
    with torch.device('meta'):
        peer = torchvision.models.resnet101(replace_stride_with_dilation=dilate)
        ours = resnet.resnet101(output_stride=output_stride, multi_grid=(1, 1, 1))
    theirs = [[(unit.conv2.stride[0], unit.conv2.dilation[0]) for unit in layer] for layer in (peer.layer1, peer.layer2, peer.layer3, peer.layer4)]
    assert ours.schedule == theirs
    assert ours.schedule[3][0] == (2, 1) if output_stride == 32 else (1, 16 // output_stride)  # block4's first unit: rate 1 at OS 16


@pytest.mark.parametrize('stride_placement', ['torchvision', 'official'])
def test_without_multi_grid_dense_features_are_the_coarse_ones_subsampled(stride_placement):
    "Stride equivalence in both layouts: at OS 16 and 8, subsampled by 32/OS, the feature equals OS 32's (chapter 03's check)."
    # tolerance 1e-5 relative to the largest value: float32 rounding of the same products summed in another order; a wrong
    # rate (the 0.16 relative difference this guards against) or a shifted pixel moves it by the feature's own size
    torch.manual_seed(0)
    model = resnet._randomize_batchnorm(resnet.resnet_small(stride_placement=stride_placement, multi_grid=(1, 1, 1))).eval()
    images = torch.rand(2, 3, 81, 81, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        coarse = model.set_output_stride(32)(images)['out']
        for output_stride in (16, 8):
            dense = model.set_output_stride(output_stride)(images)['out']
            factor = 32 // output_stride
            assert (dense[..., ::factor, ::factor] - coarse).abs().max() <= 1e-5 * coarse.abs().max(), output_stride

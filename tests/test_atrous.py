"""The operators the backbones, ASPP, decoder and cost chapters build on (01_atrous, 02_separable), proven outside the
notebooks: each against PyTorch's own convolution or a closed form.

Tolerance, stated once for the whole file: the computations run in float64, where two orders of summing the same
products of O(1) numbers differ by about 1e-15 per term; 1e-10 (absolute) is far above that and far below any real
error (a wrong tap or a misplaced pixel changes the result by O(1))."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeplab_nb import atrous, separable
from deeplab_nb.atrous import atrous_conv2d, atrous_schedule, effective_kernel_size, receptive_field, scale_dimension

TOL = dict(atol=1e-10, rtol=0)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize('stride,rate,padding', [(1, 1, 0), (1, 2, 2), (2, 3, 1), (2, 2, (2, 1)), (1, 4, 4)])
def test_atrous_conv2d_is_pytorchs_dilated_convolution(stride, rate, padding):
    "Eq. 1 as a gather-and-sum equals F.conv2d with dilation = rate, for any stride and padding."
    x, w, b = rand(2, 3, 17, 14), rand(5, 3, 3, 3, seed=1), rand(5, seed=2)
    torch.testing.assert_close(atrous_conv2d(x, w, b, stride=stride, padding=padding, rate=rate),
                               F.conv2d(x, w, b, stride=stride, padding=padding, dilation=rate), **TOL)


@pytest.mark.parametrize('kernel_size,rate', [(3, 1), (3, 2), (3, 6), (5, 3), (1, 4)])
def test_atrous_kernel_is_a_dense_kernel_with_zeros_between_the_taps(kernel_size, rate):
    "A k x k kernel at rate r is the dense kernel of side k + (k-1)(r-1) with r-1 zeros between neighbouring taps."
    side = effective_kernel_size(kernel_size, rate)
    assert side == kernel_size + (kernel_size - 1) * (rate - 1)  # the closed form
    w = rand(4, 2, kernel_size, kernel_size, seed=3)
    dense = torch.zeros(4, 2, side, side, dtype=torch.float64)
    dense[:, :, ::rate, ::rate] = w
    x = rand(1, 2, side + 6, side + 9, seed=4)
    torch.testing.assert_close(atrous_conv2d(x, w, rate=rate), F.conv2d(x, dense), **TOL)


def test_receptive_field_is_what_the_gradient_reaches():
    "receptive_field counts the input pixels one output pixel depends on: the nonzero gradient of that pixel."
    layers = [(3, 2, 1), (3, 1, 1), (3, 2, 2), (3, 1, 4), (1, 1, 1)]
    x = torch.zeros(1, 1, 1, 257, dtype=torch.float64, requires_grad=True)
    y = x
    for kernel_size, stride, rate in layers:
        y = F.conv2d(y, torch.ones(1, 1, 1, kernel_size, dtype=torch.float64), stride=(1, stride), dilation=(1, rate))
    y[0, 0, 0, y.shape[-1] // 2].backward()
    reached = x.grad[0, 0, 0].nonzero().flatten()
    assert receptive_field(layers) == int(reached[-1] - reached[0] + 1)


@pytest.mark.parametrize('kernel_size,rate,stride', [(3, 1, 2), (3, 2, 1), (3, 4, 2), (5, 2, 2), (7, 1, 2)])
def test_fixed_padding_gives_the_official_output_size(kernel_size, rate, stride):
    "Padded by _fixed_padding, a 'VALID' convolution of a k*OS+1 image has scale_dimension's size, as in the official code."
    begin, end = atrous._fixed_padding(kernel_size, rate)
    assert begin + end == effective_kernel_size(kernel_size, rate) - 1
    for n in (129, 513):
        x = F.pad(torch.zeros(1, 1, n, n), (begin, end, begin, end))
        y = F.conv2d(x, torch.zeros(1, 1, kernel_size, kernel_size), stride=stride, dilation=rate)
        assert y.shape[-1] == scale_dimension(n, 1 / stride) == (n - 1) // stride + 1


def test_scale_dimension_is_the_official_rule():
    "int((dim - 1) * scale + 1): k*OS+1 sizes map to k*OS/s+1 (513 -> 33 at OS 16, 65 at OS 8; 0.5 x 513 = 257)."
    assert [scale_dimension(513, 1 / s) for s in (8, 16, 32)] == [65, 33, 17]
    assert [scale_dimension(513, s) for s in (0.5, 0.75, 1.25)] == [257, 385, 641]


@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_removing_a_stride_and_doubling_the_rate_keeps_the_features(output_stride):
    """Sect. 3.1: with the strides after `output_stride` turned into atrous rates (atrous_schedule), the network computes
    the same features as the strided one, on a denser grid: subsampling its output gives the strided network's output."""
    torch.manual_seed(0)
    strides = [2, 2, 2, 2, 2]  # an output stride 32 network of 3x3 convolutions
    convs = [nn.Conv2d(2, 2, 3, bias=False).double() for _ in strides]
    def run(schedule, x):
        for conv, (stride, rate) in zip(convs, schedule):
            conv = atrous._set_atrous(conv, stride, rate)
            x = conv(x)
        return x
    x = rand(1, 2, 65, 65, seed=5)  # k * 32 + 1: every stride keeps the grid aligned
    dense = run(atrous_schedule(strides, output_stride), x)
    strided = run([(s, 1) for s in strides], x)
    step = 32 // output_stride
    assert dense.shape[-1] == scale_dimension(65, 1 / output_stride)
    torch.testing.assert_close(dense[..., ::step, ::step], strided, **TOL)


def test_separable_convolution_is_a_rank_one_dense_convolution():
    """Depthwise then pointwise equals one dense convolution whose kernel factorises: W[o, i] = P[o, i] * D[i] (the
    separable chapter's identity), at any stride and rate (BN made the identity: eps 0, unit statistics)."""
    sep = separable.SeparableConv2d(3, 4, kernel_size=3, stride=2, rate=2, bn_eps=0.0).double().eval()
    depthwise, pointwise = sep.conv_dw.weight, sep.conv_pw.weight  # (3, 1, 3, 3), (4, 3, 1, 1)
    dense = pointwise[:, :, 0, 0, None, None] * depthwise[None, :, 0]  # (4, 3, 3, 3)
    x = rand(2, 3, 21, 19, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(sep(x), F.conv2d(x, dense, stride=2, padding=2, dilation=2), **TOL)


@pytest.mark.parametrize('kernel_size,rate,side', [(3, 1, 33), (3, 6, 33), (3, 12, 65)])
def test_separable_madds_closed_form_is_fvcores_count(kernel_size, rate, side):
    "The closed form of a separable convolution's Multiply-Adds equals fvcore's count of the module (a peer library)."
    sep = separable.SeparableConv2d(16, 32, kernel_size=kernel_size, rate=rate).eval()
    assert separable.count_madds(sep, torch.zeros(1, 16, side, side)) == \
        separable.separable_conv2d_madds(16, 32, kernel_size, side, side)


def test_count_madds_is_quiet(recwarn, caplog):
    "Counting a model warns about nothing (no tracer, deprecation or unsupported-operator noise) and leaves it as it was."
    model = nn.Sequential(separable._ConvBNReLU(3, 8, 3), nn.Upsample(scale_factor=2, mode='bilinear'), nn.Hardswish()).train()
    assert separable.count_madds(model, torch.randn(1, 3, 9, 9)) == separable.conv2d_madds(3, 8, 3, 9, 9)
    assert model.training
    assert len(recwarn) == 0, [str(w.message) for w in recwarn]
    assert not [r for r in caplog.records if r.levelname == 'WARNING'], caplog.text  # fvcore warns through logging

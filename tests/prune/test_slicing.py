import pytest
import torch
from torch import nn

from edgeprune.prune.slicing import bn_rows, conv_rows, output_slice


def _trained_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    return bn.eval()


def test_picked_rows_compute_those_output_channels_in_that_order():
    torch.manual_seed(0)
    conv, bn, x = nn.Conv2d(5, 7, 3, padding=1, bias=True), _trained_bn(7), torch.rand(2, 5, 6, 6)
    rows = [6, 0, 3]
    with torch.no_grad():
        assert torch.allclose(bn_rows(bn, rows)(conv_rows(conv, rows)(x)), bn(conv(x))[:, rows], atol=1e-6)


def test_a_depthwise_convolution_keeps_each_filter_on_its_own_channel():
    torch.manual_seed(0)
    conv, x = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), torch.rand(1, 6, 5, 5)
    order = [5, 2, 4]
    part = conv_rows(conv, order)
    assert (part.in_channels, part.out_channels, part.groups) == (3, 3, 3)
    with torch.no_grad():
        assert torch.allclose(part(x[:, order]), conv(x)[:, order], atol=1e-6)


def test_a_grouped_convolution_is_refused():
    with pytest.raises(ValueError, match="grouped convolution"):
        conv_rows(nn.Conv2d(4, 4, 1, groups=2), [0, 1])


def test_output_slice_keeps_the_block_and_its_activation():
    block = nn.Module()
    block.conv, block.bn, block.act = nn.Conv2d(3, 8, 1, bias=False), _trained_bn(8), nn.SiLU()
    part = output_slice(block, 2, 5)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(part.act(part.bn(part.conv(x))), block.act(block.bn(block.conv(x)))[:, 2:5], atol=1e-6)
    assert block.conv.out_channels == 8 and part.bn.num_features == 3

"""The model zoo: output shapes, parameter counts against hand counts, argument checks."""
import pytest
import torch
from torch import nn

import fa_tutor as ft


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def make(name: str, channels: int, size: int, classes: int) -> nn.Module:
    if name == "MLP":
        return ft.models.MLP(channels * size * size, [32], classes)
    if name == "LeNet":
        return ft.models.LeNet(classes, in_channels=channels)
    if name == "LeNet5":
        return ft.models.LeNet5(classes, in_channels=channels)
    return ft.models.resnet18(classes, in_channels=channels)


@pytest.mark.parametrize("name", ["MLP", "LeNet", "LeNet5", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape(name, channels, size):
    torch.manual_seed(0)
    model = make(name, channels, size, classes=7)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_parameter_counts_match_hand_counts():
    lenet = conv(3, 32, 3) + conv(32, 64, 3) + conv(64, 128, 3) + fc(128, 256) + fc(256, 10)
    assert n_params(ft.models.LeNet(10)) == lenet == 128_842
    # LeNet-5's classic 61,706 parameters
    lenet5 = conv(1, 6, 5) + conv(6, 16, 5) + conv(16, 120, 5) + fc(120, 84) + fc(84, 10)
    assert n_params(ft.models.LeNet5()) == lenet5 == 61_706
    # ResNet-18 (CIFAR stem): stem + 4 stages of 2 BasicBlocks + fc; BN has 2 params/channel
    bn = lambda c: 2 * c  # noqa: E731
    total, c_in = conv(3, 64, 3, False) + bn(64), 64
    for width in (64, 128, 256, 512):
        for block in range(2):
            total += conv(c_in, width, 3, False) + bn(width) + conv(width, width, 3, False)
            total += bn(width)
            if c_in != width:
                total += conv(c_in, width, 1, False) + bn(width)
            c_in = width
    total += fc(512, 10)
    assert n_params(ft.models.resnet18(10)) == total == 11_173_962


def test_num_classes_is_honoured():
    # biotorch's le_net_cifar ignored num_classes; ours must not
    assert ft.models.LeNet(100).fc2.out_features == 100
    assert ft.models.LeNet5(47).fc2.out_features == 47
    assert ft.models.resnet18(200).fc.out_features == 200


def test_lenet5_at_32_is_classic_flatten():
    # at 32×32 conv3 leaves a 1×1 map: the global average pool is the plain flatten
    torch.manual_seed(0)
    model = ft.models.LeNet5()
    x = torch.randn(3, 1, 32, 32)
    h = model.pool(model.act(model.conv2(model.pool(model.act(model.conv1(x))))))
    h = model.act(model.conv3(h))
    assert h.shape == (3, 120, 1, 1)
    expected = model.fc2(model.act(model.fc1(h.flatten(1))))
    torch.testing.assert_close(model(x), expected)


def test_xavier_init():
    torch.manual_seed(0)
    model = ft.models.LeNet(10)
    W = model.fc1.weight
    bound = (6 / (128 + 256)) ** 0.5
    assert W.abs().max() <= bound and W.abs().max() > 0.9 * bound
    assert (model.fc1.bias == 0).all()
    default = ft.models.LeNet(10, init="default")
    assert (default.fc1.bias != 0).any()  # PyTorch's default draws biases


def test_resnet_batchnorm_and_no_conv_bias():
    model = ft.models.resnet18(10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3  # stem, 8 blocks × 2, 3 projection shortcuts
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("factory, kwargs, match", [
    (ft.models.LeNet, {"num_classes": 0}, "num_classes"),
    (ft.models.LeNet, {"num_classes": 10, "in_channels": -1}, "in_channels"),
    (ft.models.LeNet, {"num_classes": 10, "init": "kaiming"}, "kaiming.*xavier, default"),
    (ft.models.LeNet5, {"num_classes": 2.5}, "num_classes"),
    (ft.models.LeNet5, {"in_channels": 0}, "in_channels"),
    (ft.models.resnet18, {"num_classes": True}, "num_classes"),
    (ft.models.resnet18, {"num_classes": 10, "init": "orthogonal"}, "orthogonal"),
    (ft.models.ResNet, {"blocks": [2, 2, 2], "num_classes": 10}, "blocks"),
])
def test_bad_arguments_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)

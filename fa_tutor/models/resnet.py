r"""ResNet-18 for small images (32×32, 64×64).

He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition",
https://arxiv.org/abs/1512.03385, with the small-image stem commonly used on
CIFAR (a 3×3 stride-1 convolution and no max-pool instead of 7×7 stride 2 +
max-pool)::

    x (C, H, W)
    conv 3×3, 64, stride 1 → BN → ReLU                       (64, H, W)
    stage 1: 2 × BasicBlock(64),  stride 1                   (64, H, W)
    stage 2: 2 × BasicBlock(128), first block stride 2       (128, H/2, W/2)
    stage 3: 2 × BasicBlock(256), first block stride 2       (256, H/4, W/4)
    stage 4: 2 × BasicBlock(512), first block stride 2       (512, H/8, W/8)
    global average pool → fc 512 → num_classes               logits

    BasicBlock(c, s):  out = ReLU(BN(conv3×3(ReLU(BN(conv3×3_s(x))))) + shortcut(x))
    shortcut = identity, or conv 1×1 stride + BN when the shape changes.

Convolutions have no bias (BatchNorm follows each); BatchNorm keeps its exact
gradient under every feedback rule, only the convolutions and ``fc`` are converted.
"""
from __future__ import annotations

from torch import Tensor, nn

from .lenet import check_args, init_weights


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers and a residual shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()  # identity
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))  # (N, c, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """A BasicBlock ResNet with a small-image stem; ``blocks``: blocks per stage (4)."""

    def __init__(self, blocks: list[int], num_classes: int, in_channels: int = 3,
                 *, init: str = "xavier"):
        super().__init__()
        check_args(num_classes, in_channels, init)
        if len(blocks) != 4 or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in blocks):
            raise ValueError(
                f"blocks must be 4 positive ints (one per stage), got {blocks!r}")
        self.blocks = list(blocks)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = nn.ReLU()
        stages, channels = [], 64
        for i, n in enumerate(self.blocks):
            width, stride = 64 * 2**i, 1 if i == 0 else 2
            stage = [BasicBlock(channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))  # (N, 64, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512, H/8, W/8)
        return self.fc(x.mean((-2, -1)))  # (N, num_classes)


def resnet18(num_classes: int, in_channels: int = 3, *, init: str = "xavier") -> ResNet:
    """ResNet-18: BasicBlocks [2, 2, 2, 2] (11.2 M parameters at 10 classes).

    Args:
        num_classes: number of outputs.
        in_channels: image channels.
        init: ``"xavier"`` (default: Xavier-uniform conv/fc weights, zero fc bias, as
            biotorch re-initialises converted layers in the seed benchmarks) or
            ``"default"`` (PyTorch's layer init).

    Example:
        >>> import torch, fa_tutor as ft
        >>> ft.models.resnet18(10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return ResNet([2, 2, 2, 2], num_classes, in_channels, init=init)

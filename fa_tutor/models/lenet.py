r"""Two LeNets: the small CIFAR network of the seed benchmarks, and classic LeNet-5.

``LeNet`` (biotorch's ``LeNetCIFAR`` layout, with ``num_classes`` honoured)::

    x (C, H, W)
    conv 3×3, 32  → ReLU → max-pool 2
    conv 3×3, 64  → ReLU → max-pool 2
    conv 3×3, 128 → ReLU → global average pool        (128,)
    fc 128 → 256  → ReLU
    fc 256 → num_classes                              logits

``LeNet5`` (LeCun et al. 1998; biotorch's ``LeNetMNIST``, behind its MNIST /
Fashion-MNIST numbers)::

    x (C, 32, 32)
    conv 5×5, 6   → ReLU → max-pool 2                 (6, 14, 14)
    conv 5×5, 16  → ReLU → max-pool 2                 (16, 5, 5)
    conv 5×5, 120 → ReLU → global average pool        (120,)   (1×1 map at 32×32)
    fc 120 → 84   → ReLU
    fc 84 → num_classes                               logits

No padding anywhere. Sources: biotorch ``biotorch/models/le_net.py``
(github.com/jsalbert/biotorch); LeCun, Bottou, Bengio & Haffner (1998).
"""
from __future__ import annotations

from torch import Tensor, nn

INITS = ("xavier", "default")


def check_args(num_classes: int, in_channels: int, init: str) -> None:
    """``ValueError`` for a non-positive size or an unknown ``init``."""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if init not in INITS:
        raise ValueError(f"Unknown init {init!r}; choose one of: {', '.join(INITS)}")


def init_weights(model: nn.Module, init: str) -> None:
    """``"xavier"``: Xavier-uniform weights and zero biases in every Linear/Conv2d
    (biotorch's ``init: xavier``, the seed benchmarks); ``"default"``: PyTorch's own."""
    if init == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class LeNet(nn.Module):
    """Three 3×3 convolutions (32/64/128) and a 256-unit hidden layer (32×32 images).

    Args:
        num_classes: number of outputs.
        in_channels: image channels (3 for CIFAR, 1 for MNIST).
        init: ``"xavier"`` (default, as in the seed benchmarks) or ``"default"``
            (PyTorch's layer init).

    Inputs must be at least 18×18 (the third convolution needs a 3×3 map).

    Example:
        >>> import torch, fa_tutor as ft
        >>> ft.models.LeNet(10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, in_channels: int = 3, *, init: str = "xavier"):
        super().__init__()
        check_args(num_classes, in_channels, init)
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3)
        self.fc1 = nn.Linear(128, 256)
        self.fc2 = nn.Linear(256, num_classes)
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        init_weights(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act(self.conv1(x)))  # (N, 32, H/2-1, .)
        x = self.pool(self.act(self.conv2(x)))  # (N, 64, ., .)
        x = self.act(self.conv3(x)).mean((-2, -1))  # (N, 128)   global average pool
        x = self.act(self.fc1(x))  # (N, 256)
        return self.fc2(x)  # (N, num_classes)


class LeNet5(nn.Module):
    """LeNet-5: convolutions 6/16/120 (5×5) and an 84-unit hidden layer (32×32 images).

    Args:
        num_classes: number of outputs (default 10).
        in_channels: image channels (default 1: MNIST / Fashion-MNIST padded to 32×32).
        init: ``"xavier"`` (default, as in the seed benchmarks) or ``"default"``
            (PyTorch's layer init).

    At 32×32 the last convolution leaves a 1×1 map, so the global average pool is
    the classic flatten; larger inputs (≥ 32×32) are averaged over the map.

    Example:
        >>> import torch, fa_tutor as ft
        >>> ft.models.LeNet5()(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *,
                 init: str = "xavier"):
        super().__init__()
        check_args(num_classes, in_channels, init)
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.conv3 = nn.Conv2d(16, 120, kernel_size=5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, num_classes)
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        init_weights(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act(self.conv1(x)))  # (N, 6, 14, 14)
        x = self.pool(self.act(self.conv2(x)))  # (N, 16, 5, 5)
        x = self.act(self.conv3(x)).mean((-2, -1))  # (N, 120)
        x = self.act(self.fc1(x))  # (N, 84)
        return self.fc2(x)  # (N, num_classes)

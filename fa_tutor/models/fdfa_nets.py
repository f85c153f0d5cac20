"""The FDFA paper's reference networks: a BatchNorm MLP and a small CNN.

Written from the architecture of the released code (github.com/Florian-BACHO/FDFA,
``networks/fc_*.py``, ``networks/conv_*.py``; Bacho & Chu, arXiv 2212.07282).
Released training defaults, for both nets: Adam lr 1e-4 on the forward weights
and Adam lr 1e-4 on the feedback (``rule.parameters()``), batch 64, StepLR with
γ = 0.95 per epoch on the forward optimizer only, 100 epochs, weight decay 0,
inputs normalised with mean 0.5 and std 0.5.
"""
from __future__ import annotations

from torch import Tensor, nn


class FDFANet(nn.Module):
    r"""``[Linear → BatchNorm1d → ReLU] × n_layers → Linear``, the FDFA paper's FC network.

    .. math::
        h_l = \mathrm{relu}(\mathrm{BN}(W_l h_{l-1} + b_l)), \qquad y = W_L h_{L-1} + b_L

    Released widths: ``hidden=800`` for MNIST-sized inputs (784), ``hidden=1000``
    for CIFAR-10 (3072); ``n_layers=2`` by default (1–3 in the paper's tables).

    Args:
        in_features: input size; inputs with more dimensions are flattened from dim 1.
        num_classes: number of outputs.
        hidden: width of every hidden layer.
        n_layers: number of hidden layers.

    Example:
        >>> import fa_tutor as ft
        >>> ft.models.FDFANet(784, 10)
        FDFANet(784 → 800 → 800 → 10)
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 800,
                 n_layers: int = 2):
        super().__init__()
        for name, v in (("in_features", in_features), ("num_classes", num_classes),
                        ("hidden", hidden), ("n_layers", n_layers)):
            if not isinstance(v, int) or v < (0 if name == "n_layers" else 1):
                raise ValueError(f"FDFANet: {name}={v!r}; give a positive int")
        self.input_shape = (in_features,)
        self.widths = [in_features, *[hidden] * n_layers, num_classes]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU())
            for a, b in zip(self.widths[:-2], self.widths[1:-1])
        )
        self.head = nn.Linear(self.widths[-2], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def __repr__(self) -> str:
        return f"FDFANet({' → '.join(map(str, self.widths))})"


class FDFAConvNet(nn.Module):
    r"""The FDFA paper's small CNN (its MNIST/CIFAR-10 ``--conv`` network).

    Conv(15, 5×5) → BN → ReLU → Conv(40, 5×5) → BN → ReLU → MaxPool 2 → FC 128 → BN →
    ReLU → FC ``num_classes``. No padding, stride 1; the pool comes after the second
    ReLU, so the hidden activities :math:`h_l` (where the DFA error arrives in the
    released code) are the post-ReLU maps of shape 15×(s−4)², 40×(s−8)² and 128, with
    ``s = image_size``. MNIST: 28 → 24 → 20 → 10, FC 4000 → 128; CIFAR-10: 32 → 28 →
    24 → 12, FC 5760 → 128. (The README's "15C5-P2-40C5-P2" lists a pool after conv 1
    that the code does not have; this follows the code.)

    Args:
        in_channels: 1 for MNIST, 3 for CIFAR-10.
        num_classes: number of outputs.
        image_size: side of the square input (at least 10).

    Example:
        >>> import fa_tutor as ft
        >>> ft.models.FDFAConvNet(1, 10, 28).fc1
        Linear(in_features=4000, out_features=128, bias=True)
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        if not isinstance(image_size, int) or image_size < 10:
            raise ValueError(f"FDFAConvNet: image_size={image_size!r}; give an int ≥ 10")
        self.input_shape = (in_channels, image_size, image_size)
        side = (image_size - 8) // 2
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 15, 5), nn.BatchNorm2d(15)
        self.conv2, self.bn2 = nn.Conv2d(15, 40, 5), nn.BatchNorm2d(40)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.bn3 = nn.Linear(40 * side * side, 128), nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))  # (N, 15, s-4, s-4)
        x = self.act(self.bn2(self.conv2(x)))  # (N, 40, s-8, s-8)
        x = self.pool(x).flatten(1)  # (N, 40·((s-8)//2)²)
        x = self.act(self.bn3(self.fc1(x)))  # (N, 128)
        return self.fc2(x)

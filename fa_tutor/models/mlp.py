"""A multilayer perceptron: Linear → activation, repeated, then a Linear readout."""
from __future__ import annotations

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    r"""Fully connected network :math:`h_l = f(W_l h_{l-1} + b_l)`, logits :math:`= W_L h_{L-1} + b_L`.

    Args:
        in_features: input size; inputs with more dimensions whose trailing
            dimension is not ``in_features`` (e.g. images) are flattened from dim 1.
        hidden: widths of the hidden layers, e.g. ``[256, 256]``; ``[]`` is a linear model.
        out_features: number of outputs (classes).
        activation: ``"relu"``, ``"leaky_relu"`` (slope 0.01, PyTorch's default) or ``"tanh"``.
        bias: give every linear layer a bias.

    The linear layers are ``model.layers`` (an ``nn.ModuleList``) in forward
    order, so ``model.modules()`` meets them in forward order.

    Example:
        >>> import fa_tutor as ft
        >>> ft.models.MLP(784, [100], 10, activation="relu")
        MLP(784 → 100 → 10, activation=relu, bias=True)
    """

    def __init__(self, in_features: int, hidden: list[int], out_features: int, *,
                 activation: str = "leaky_relu", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        widths = [int(in_features), *map(int, hidden), int(out_features)]
        if any(w <= 0 for w in widths):
            raise ValueError(f"layer widths must be positive, got {widths}")
        self.widths, self.activation_name, self.bias = widths, activation, bias
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:]))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2 and x.shape[-1] != self.widths[0]:
            x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

    def extra_repr(self) -> str:  # shown inside the default repr for submodules
        return ""

    def __repr__(self) -> str:
        arrows = " → ".join(map(str, self.widths))
        return f"MLP({arrows}, activation={self.activation_name}, bias={self.bias})"

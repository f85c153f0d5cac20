"""Model files, one per architecture; each reads top to bottom."""
from .fdfa_nets import FDFAConvNet, FDFANet
from .lenet import LeNet, LeNet5
from .localmixer import LocalLosses, LocalMixer
from .mlp import MLP
from .resnet import ResNet, resnet18

__all__ = ["FDFAConvNet", "FDFANet", "LeNet", "LeNet5", "LocalLosses", "LocalMixer", "MLP", "ResNet", "resnet18"]

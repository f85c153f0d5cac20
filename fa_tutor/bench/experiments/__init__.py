"""One module per experiment; importing them registers each in EXPERIMENTS."""
from . import step_cost  # noqa: F401
from . import class_subsets, conservation_noisy_mnist, fdfa, lenet_fashion_mnist  # noqa: F401
from . import localmixer, noisy_mnist_memorisation  # noqa: F401
from . import estimator_variance  # noqa: F401

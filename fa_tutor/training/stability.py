"""When a training run counts as blown up: the one criterion the benchmarks and the book use."""
from __future__ import annotations

import math
from typing import Iterable

#: a run blew up if an epoch's mean training loss exceeds this × its first epoch's
BLOWUP_FACTOR = 10.0


def blew_up(epoch_losses: Iterable[float | None], factor: float = BLOWUP_FACTOR) -> bool:
    """True if an epoch's mean loss is NaN or infinite or above ``factor`` × the first epoch's.

    ``None`` entries (epochs without a loss) are skipped; an empty history counts as
    blown up (nothing shows that the run trained).

    >>> blew_up([2.3, 1.1, 0.7])
    False
    >>> blew_up([2.3, 40.0, 0.7]), blew_up([2.3, float("nan")]), blew_up([])
    (True, True, True)
    """
    losses = [float(v) for v in epoch_losses if v is not None]
    if not losses or not all(math.isfinite(v) for v in losses):
        return True
    return max(losses) > factor * losses[0]


def blow_up_epoch(epoch_losses: list[float], factor: float = BLOWUP_FACTOR) -> int | None:
    """The first epoch (1-based) whose mean loss is not finite or above ``factor`` × the
    first epoch's (the :func:`blew_up` criterion); None if there is none.

    >>> blow_up_epoch([2.3, 1.1, 40.0, 0.7]), blow_up_epoch([2.3, 1.1])
    (3, None)
    """
    return next((i + 1 for i, v in enumerate(epoch_losses)
                 if not (math.isfinite(v) and v <= factor * epoch_losses[0])), None)

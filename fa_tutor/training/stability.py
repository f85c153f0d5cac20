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
    losses = list(epoch_losses)
    return all(v is None for v in losses) or blow_up_epoch(losses, factor) is not None


def blow_up_epoch(epoch_losses: Iterable[float | None], factor: float = BLOWUP_FACTOR) -> int | None:
    """The first epoch (1-based) whose mean loss is not finite or above ``factor`` × the
    first epoch's; None if there is none (``None`` entries are skipped, as in :func:`blew_up`).

    >>> blow_up_epoch([2.3, 1.1, 40.0, 0.7]), blow_up_epoch([2.3, 1.1])
    (3, None)
    """
    losses = list(epoch_losses)
    first = next((float(v) for v in losses if v is not None), math.nan)
    return next((i + 1 for i, v in enumerate(losses)
                 if v is not None and not (math.isfinite(v) and v <= factor * first)), None)

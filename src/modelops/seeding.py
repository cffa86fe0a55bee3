"""The task's seed into the global RNGs (`random`, and numpy's when numpy is loaded).

Below both of its users: the executors seed before every task (`executors/invoke.py`, the forked
child), and a bundle's warm-up seeds before its warm-up call (`bundles/warmup.py`). Import-light:
children import it before any task runs.
"""

from __future__ import annotations

import random
import sys


def seed_global_rngs(seed: int) -> None:
    """The task's seed decides global RNG state too, so results never depend on process history."""
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed)  # seeds are < 2**32 (tasks.SEED_LIMIT)

"""The `mops bench` bundle model. `mops bench` copies this file into a temporary bundle
directory (with `heavy_modules.json` beside it) and never imports it itself.

At import it imports the configured heavy modules (default numpy, scipy.stats, pandas),
as a real model would, so executors that re-import per task pay for it.

- `trivial(params, seed)`: returns at once; measures pure executor overhead.
- `sir(params, seed)`: a stochastic metapopulation SIR (chain-binomial, several sub-steps
  per day, patches coupled by travel), ~100 ms with the default size: a realistic task.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

_HEAVY_FILE = Path(__file__).with_name("heavy_modules.json")
HEAVY_MODULES = json.loads(_HEAVY_FILE.read_text()) if _HEAVY_FILE.exists() else []
_loaded = [importlib.import_module(name) for name in HEAVY_MODULES]


def trivial(params: dict, seed: int) -> dict:
    return {"seed": seed, "pid": os.getpid()}


def sir(params: dict, seed: int) -> dict:
    import numpy as np

    patches = int(params.get("patches", 100))
    population = int(params.get("population", 20_000))
    days = int(params.get("days", 250))
    substeps = int(params.get("substeps", 10))
    beta = float(params.get("beta", 0.3))
    gamma = float(params.get("gamma", 0.1))
    travel = float(params.get("travel", 0.01))
    dt = 1.0 / substeps

    rng = np.random.default_rng(seed)
    s = np.full(patches, population, dtype=np.int64)
    i = np.zeros(patches, dtype=np.int64)
    r = np.zeros(patches, dtype=np.int64)
    seeded = rng.integers(0, patches, size=3)
    np.add.at(i, seeded, 10)
    s -= i
    n = s + i + r
    peak, peak_day = int(i.sum()), 0
    daily = []
    for day in range(days):
        for _ in range(substeps):
            # force of infection: local prevalence plus a share from the mean of all patches
            prevalence = (1 - travel) * i / n + travel * i.sum() / n.sum()
            p_infect = 1.0 - np.exp(-beta * prevalence * dt)
            new_inf = rng.binomial(s, p_infect)
            new_rec = rng.binomial(i, 1.0 - np.exp(-gamma * dt))
            s -= new_inf
            i += new_inf - new_rec
            r += new_rec
        total_i = int(i.sum())
        daily.append(total_i)
        if total_i > peak:
            peak, peak_day = total_i, day + 1
        if total_i == 0:
            break
    return {
        "peak_infected": peak,
        "peak_day": peak_day,
        "final_size": int(r.sum() + i.sum()),
        "days_run": len(daily),
        "infected_every_10_days": daily[::10],
    }

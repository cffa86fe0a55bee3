"""An agent-based SIR on a fixed contact network, written as real models are: the hot loop
is a numba kernel (`cache=True`) and the population's contact network is a lookup structure
built lazily on first use. Its first call in a fresh process is expensive (numba loads or
compiles the kernels; the network is built), every later call is not: the case the bundle's
warm-up (bundle.json "warmup") is for.

simulate(params, seed) -> daily prevalence (every `report_every` days), peak, final size.
params: beta (per-contact daily transmission probability), gamma (daily recovery
probability), agents (default 10000), days (default 300), initial_infected (default 10).
"""

from __future__ import annotations

import os
import tempfile

# numba caches compiled kernels next to this file by default; a worker pod can only write
# /tmp, so the cache goes there unless the operator chose a directory
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "modelops-numba-cache"))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

CONTACTS_PER_AGENT = 12
NETWORK_SEED = 20260101  # the population is fixed: the same network for every task
_networks: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def contact_network(agents: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, neighbours) in CSR form: households of 4 plus random contacts, built once per
    process per population size (the lazily built table; identical wherever it is built)."""
    cached = _networks.get(agents)
    if cached is not None:
        return cached
    rng = np.random.default_rng(NETWORK_SEED + agents)
    edges: list[set[int]] = [set() for _ in range(agents)]
    for a in range(agents):
        household = a - a % 4
        for b in range(household, min(household + 4, agents)):
            if b != a:
                edges[a].add(b)
        for b in rng.integers(0, agents, size=CONTACTS_PER_AGENT // 2):
            b = int(b)
            if b != a:
                edges[a].add(b)
                edges[b].add(a)
    offsets = np.zeros(agents + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in edges])
    neighbours = np.fromiter((b for e in edges for b in sorted(e)), dtype=np.int64, count=int(offsets[-1]))
    _networks[agents] = (offsets, neighbours)
    return offsets, neighbours


@njit(cache=True)
def infection_pressure(state, offsets, neighbours, counts):
    """How many infectious contacts each agent has today."""
    for a in range(state.shape[0]):
        k = 0
        for j in range(offsets[a], offsets[a + 1]):
            if state[neighbours[j]] == 1:
                k += 1
        counts[a] = k


@njit(cache=True)
def step(state, counts, beta, gamma, u_infect, u_recover):
    """One day: S -> I with 1 - (1 - beta)^k, I -> R with gamma. Returns (S, I, R)."""
    s = i = r = 0
    for a in range(state.shape[0]):
        if state[a] == 0:
            if counts[a] > 0 and u_infect[a] < 1.0 - (1.0 - beta) ** counts[a]:
                state[a] = 2  # infectious from tomorrow
        elif state[a] == 1:
            if u_recover[a] < gamma:
                state[a] = 3
    for a in range(state.shape[0]):
        if state[a] == 2:
            state[a] = 1
        if state[a] == 0:
            s += 1
        elif state[a] == 1:
            i += 1
        else:
            r += 1
    return s, i, r


@njit(cache=True)
def summarise(prevalence):
    peak, day = 0, 0
    for t in range(prevalence.shape[0]):
        if prevalence[t] > peak:
            peak, day = prevalence[t], t
    return peak, day


def simulate(params: dict, seed: int) -> dict:
    beta = float(params["beta"])
    gamma = float(params["gamma"])
    agents = int(params.get("agents", 10000))
    days = int(params.get("days", 300))
    initial = int(params.get("initial_infected", 10))
    report_every = int(params.get("report_every", 10))
    if not 0 < initial <= agents:
        raise ValueError(f"initial_infected={initial} must be in 1..agents={agents}")
    if not (0 <= beta <= 1 and 0 <= gamma <= 1):
        raise ValueError(f"need 0 <= beta, gamma <= 1, got beta={beta}, gamma={gamma}")
    offsets, neighbours = contact_network(agents)
    rng = np.random.default_rng(seed)
    state = np.zeros(agents, dtype=np.int8)
    state[rng.choice(agents, size=initial, replace=False)] = 1
    counts = np.zeros(agents, dtype=np.int64)
    prevalence = np.zeros(days + 1, dtype=np.int64)
    prevalence[0] = initial
    s = i = r = 0
    for day in range(1, days + 1):
        infection_pressure(state, offsets, neighbours, counts)
        s, i, r = step(state, counts, beta, gamma, rng.random(agents), rng.random(agents))
        prevalence[day] = i
    peak, peak_day = summarise(prevalence)
    return {
        "prevalence": prevalence[::report_every].tolist(),
        "peak_infected": int(peak),
        "peak_day": int(peak_day),
        "final_size": int(i + r),
        "attack_rate": (i + r) / agents,
    }


def warm_up() -> None:
    """The declared warm-up: load (or compile) every kernel and build the default network,
    by running one small simulation. It leaves only compiled code and the network behind."""
    simulate({"beta": 0.05, "gamma": 0.1, "days": 2}, seed=0)

"""A model whose first call builds a lookup table lazily (as real models build caches).

`warm()` is its declared warm-up. params {"probe": 1} returns where the table was built
instead of a result, so tests can tell whether a forked child inherited it.
"""

import os

import numpy as np

_TABLE = None
_BUILT_IN_PID = None
_WARMUP_PIDS: list[int] = []  # the processes that ran warm(): the zygote's, then (cold fork) the spare's


def _table() -> np.ndarray:
    global _TABLE, _BUILT_IN_PID
    if _TABLE is None:
        x = np.linspace(0.0, 4.0, 4001)
        _TABLE = np.exp(-x) * np.cos(3 * x)
        _BUILT_IN_PID = os.getpid()
    return _TABLE


def warm() -> None:
    _WARMUP_PIDS.append(os.getpid())
    if os.environ.get("WARMUP_CACHE_MARKERS"):  # tests: a file per process that ran the warm-up
        open(os.path.join(os.environ["WARMUP_CACHE_MARKERS"], str(os.getpid())), "w").close()
    _table()


def simulate(params, seed):
    if params.get("probe"):
        built_before = _BUILT_IN_PID
        _table()
        return {"pid": os.getpid(), "ppid": os.getppid(), "table_built_in": _BUILT_IN_PID,
                "built_before_task": built_before, "warmup_pids": list(_WARMUP_PIDS)}
    rng = np.random.default_rng(seed)
    table = _table()
    idx = rng.integers(0, len(table), size=int(params.get("n", 100)))
    return {"total": float(table[idx].sum() * float(params.get("scale", 1.0))),
            "np_global": float(np.random.random())}

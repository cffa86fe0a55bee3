"""The probe `mops doctor` runs: reports where it ran and whether it saw an earlier task.

A module-level counter stands in for leaked static state: in a fresh process
(cold) every task sees 1; in a reused process (warm, direct) later tasks see more.
"""

import os

_calls = 0


def simulate(params, seed):
    global _calls
    _calls += 1
    return {"pid": os.getpid(), "calls_in_process": _calls, "seed": seed}

"""Reports the native thread-pool variables the task's process sees."""

import os

VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")


def simulate(params, seed):
    return {"pid": os.getpid(), "threads_env": {v: os.environ.get(v) for v in VARS}}

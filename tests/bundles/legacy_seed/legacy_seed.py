"""Seeds the way many frameworks do: numpy's legacy seeding, which rejects seeds >= 2**32."""

import numpy as np


def simulate(params, seed):
    np.random.seed(seed)
    state = np.random.RandomState(seed)
    return {"seed": seed, "draw": float(state.random()), "global_draw": float(np.random.random())}

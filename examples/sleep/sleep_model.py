"""A task of known duration: sleeps `params["seconds"]`. Used to test drains and rollouts, where a
task must still be running when its worker is asked to stop."""

import time


def simulate(params: dict, seed: int) -> dict:
    seconds = float(params["seconds"])
    started = time.time()
    time.sleep(seconds)
    return {"seconds": seconds, "seed": seed, "started": started, "ended": time.time()}

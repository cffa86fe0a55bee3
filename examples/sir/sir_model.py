"""A stochastic SIR epidemic (chain-binomial, daily steps), seeded per task.

simulate(params, seed) -> dict of JSON values: the daily S, I, R counts (every
`report_every` days), the peak of infections, its day and the final size.
"""

import numpy as np


def simulate(params: dict, seed: int) -> dict:
    population = int(params.get("population", 10_000))
    infected = int(params.get("initial_infected", 10))
    beta = float(params["beta"])  # transmissions per infective per day
    gamma = float(params["gamma"])  # recoveries per infective per day
    days = int(params.get("days", 160))
    report_every = int(params.get("report_every", 10))
    if not (0 < infected <= population):
        raise ValueError(f"initial_infected={infected} must be in 1..population={population}")
    if beta < 0 or not 0 <= gamma <= 1:
        raise ValueError(f"need beta >= 0 and 0 <= gamma <= 1, got beta={beta}, gamma={gamma}")

    rng = np.random.default_rng(seed)
    s, i, r = population - infected, infected, 0
    series = {"day": [], "S": [], "I": [], "R": []}
    peak_i, peak_day = i, 0
    for day in range(days + 1):
        if day % report_every == 0:
            for key, value in (("day", day), ("S", s), ("I", i), ("R", r)):
                series[key].append(value)
        if i == 0:
            continue
        p_infect = 1.0 - np.exp(-beta * i / population)
        new_infections = rng.binomial(s, p_infect)
        new_recoveries = rng.binomial(i, gamma)
        s -= new_infections
        i += new_infections - new_recoveries
        r += new_recoveries
        if i > peak_i:
            peak_i, peak_day = i, day + 1
    return {
        "series": series,
        "peak_infected": int(peak_i),
        "peak_day": int(peak_day),
        "final_size": int(r + i),
        "attack_rate": (r + i) / population,
    }

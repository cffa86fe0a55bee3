"""An agent-based SIR epidemic written with Mesa, a third-party agent-based modelling framework (the
bundle's own pinned `mesa` in requirements.txt, installed by the worker as the bundle's environment).

Agents walk on a torus grid (Mesa's discrete space, 8-neighbour cells); an infected agent infects each
susceptible agent in its cell with probability `beta` per step and recovers with probability `gamma`.
All randomness comes from the Mesa model's own generators (`model.random`, `model.rng`), seeded from
the task's seed inside `simulate`: nothing random is made at import (the bundle contract for cold fork).
"""

from __future__ import annotations

import mesa
from mesa.discrete_space import CellAgent, OrthogonalMooreGrid

SUSCEPTIBLE, INFECTED, RECOVERED = 0, 1, 2


class Person(CellAgent):
    def __init__(self, model: "Epidemic", cell, state: int) -> None:
        super().__init__(model)
        self.cell = cell
        self.state = state

    def step(self) -> None:
        self.move_to(self.cell.neighborhood.select_random_cell())
        if self.state == INFECTED:
            model = self.model
            for other in self.cell.agents:
                if other.state == SUSCEPTIBLE and model.random.random() < model.beta:
                    other.state = INFECTED
            if model.random.random() < model.gamma:
                self.state = RECOVERED


class Epidemic(mesa.Model):
    def __init__(self, n_agents: int, width: int, beta: float, gamma: float, initial_infected: int, seed: int):
        super().__init__(seed=seed)
        self.beta, self.gamma = beta, gamma
        self.grid = OrthogonalMooreGrid((width, width), torus=True, random=self.random)
        cells = list(self.grid.all_cells)
        for i in range(n_agents):
            Person(self, self.random.choice(cells), INFECTED if i < initial_infected else SUSCEPTIBLE)

    def counts(self) -> list[int]:
        counts = [0, 0, 0]
        for agent in self.agents:
            counts[agent.state] += 1
        return counts

    def step(self) -> None:
        self.agents.shuffle_do("step")


def simulate(params: dict, seed: int) -> dict:
    model = Epidemic(
        n_agents=int(params.get("n_agents", 400)),
        width=int(params.get("width", 30)),
        beta=float(params.get("beta", 0.3)),
        gamma=float(params.get("gamma", 0.1)),
        initial_infected=int(params.get("initial_infected", 5)),
        seed=seed,
    )
    infected = []
    for _ in range(int(params.get("steps", 40))):
        model.step()
        infected.append(model.counts()[INFECTED])
    susceptible, infected_now, recovered = model.counts()
    return {"infected": infected, "peak_infected": max(infected), "final_recovered": recovered,
            "final_susceptible": susceptible, "mesa_version": mesa.__version__}

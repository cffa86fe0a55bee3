"""Study files: a bundle, parameter sets and replicates, expanded into tasks.

Replicate r of every parameter set gets the same seed (derived from the base
seed and r), so parameter sets are compared on common random numbers.

Derivation: the first 4 bytes (big-endian) of sha256(f"{base_seed}:{r}"), so every seed
lies in [0, 2**32), the range numpy's legacy seeding and common frameworks accept.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelops.json_files import read_json
from modelops.routing import Requirement
from modelops.tasks import Scalar, Seed, Task


class StudyError(ValueError):
    """A study file that cannot be used; the message names the file and the field."""


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    bundle: str = Field(min_length=1)
    entrypoint: str | None = None
    parameters: list[dict[str, Scalar]] = Field(min_length=1)
    replicates: int = Field(default=1, ge=1)
    base_seed: Seed = 0
    # Where the tasks may run: {"executor": "cold", "group": "cold"} (either or both); none = anywhere.
    requires: Requirement = Requirement()
    # The bundle's digest, pinned when the study was submitted (`mops jobs submit` pins a file bundle from
    # the submitter's copy): workers whose copy has another digest refuse the study instead of running it.
    bundle_digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")

    @field_validator("parameters")
    @classmethod
    def _finite(cls, parameters: list[dict[str, Scalar]]) -> list[dict[str, Scalar]]:
        for i, params in enumerate(parameters):
            for key, value in params.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"parameters[{i}].{key} = {value!r} is not a finite number")
        return parameters

    @classmethod
    def load(cls, path: str | Path) -> Study:
        path = Path(path)
        data = read_json(path, "study file", StudyError)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise StudyError(f"study file {path}: {problems}") from None

    def replicate_seed(self, replicate: int) -> int:
        digest = hashlib.sha256(f"{self.base_seed}:{replicate}".encode()).digest()
        return int.from_bytes(digest[:4], "big")

    def tasks(self, bundle_digest: str, entrypoint: str) -> list[Task]:
        return list(self.iter_tasks(bundle_digest, entrypoint))

    def seeds(self) -> list[int]:
        """The replicates' seeds, each once (two replicates whose derived seeds collide are one task)."""
        return list(dict.fromkeys(self.replicate_seed(r) for r in range(self.replicates)))

    def distinct_parameters(self) -> Iterator[dict[str, Scalar]]:
        """The parameter sets, each once: a set repeated in the file is one set of tasks (their task ids
        would be equal). Holds one key per parameter set, as the study itself does."""
        seen: set[str] = set()
        for params in self.parameters:
            key = json.dumps(params, sort_keys=True, separators=(",", ":"))  # as Task.task_id encodes them
            if key not in seen:
                seen.add(key)
                yield params

    def task_count(self) -> int:
        """Tasks the study expands into: distinct parameter sets x distinct replicate seeds."""
        return sum(1 for _ in self.distinct_parameters()) * len(self.seeds())

    def iter_tasks(self, bundle_digest: str, entrypoint: str) -> Iterator[Task]:
        """The tasks one at a time, so a 10^6-task study is never all in memory, each task id once
        (repeated parameter sets and colliding replicate seeds are dropped here, so a consumer needs
        no set of the ids it has seen). The study's own validation (scalar, finite params; seeds in
        range by derivation) holds for every task, so each parameter set is checked once, as the
        first replicate's Task, and the replicates reuse it; the seeds are derived once per study,
        not once per task."""
        seeds = self.seeds()
        entrypoint = self.entrypoint or entrypoint
        for params in self.distinct_parameters():
            first = Task(bundle=self.bundle, bundle_digest=bundle_digest, entrypoint=entrypoint,
                         params=params, seed=seeds[0])
            yield first
            for seed in seeds[1:]:
                yield Task.model_construct(bundle=first.bundle, bundle_digest=first.bundle_digest,
                                           entrypoint=first.entrypoint, params=first.params, seed=seed)

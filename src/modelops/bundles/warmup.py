"""A bundle's warm-up: first-call work the cold-fork zygote does once, before it forks.

Declared in `bundle.json` as `"warmup"`, one of:
- `{"function": "module:function"}`: called with no arguments;
- `{"params": {...}, "seed": N}`: the bundle's entrypoint called once as `simulate(params, N)`
  (after seeding `random` and numpy's global RNG with N, as a task would be).

Why: a forked child inherits the zygote's memory, so kernels compiled (numba, JIT) and
caches built lazily on a model's first call are paid once per zygote instead of once per
task. The price: whatever the warm-up leaves in memory, every child starts with. That is
identical for every task and reproducible, but it must never be task state (results,
counters, generators): a warm-up only builds what a task would have built the same way.
Only the cold-fork zygote runs it (a warm child pays the first call once anyway; spawn
would pay it per task). A warm-up that raises refuses the bundle under cold fork. A short one is also
repeated by each forked spare while it waits for its task (`child/forked.touch_while_waiting`: the
copy-on-write faults of the model's path paid before dispatch); `"spares": false` turns that off.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

FIELD = "warmup"
FORMS = ('{"function": "module:function"} or {"params": {...}, "seed": <int in [0, 2**32)>}, '
         'either with an optional "spares": true|false')
SEED_LIMIT = 2**32


class WarmupError(ValueError):
    """A warm-up declaration that is not one of the allowed forms."""


def parse_warmup(value: Any, where: str) -> dict | None:
    """The normalised declaration ({"function": ...} or {"params": ..., "seed": ...}), None when absent.

    Raises WarmupError naming the field, the value and what is allowed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WarmupError(f"{where}: field {FIELD!r} is {value!r}: must be an object, {FORMS}")
    unknown = sorted(set(value) - {"function", "params", "seed", "spares"})
    if unknown:
        raise WarmupError(
            f"{where}: field {FIELD!r} has unknown key(s) {unknown}: allowed keys are "
            f"'function', or 'params' and 'seed', and 'spares' ({FORMS})"
        )
    spares = value.get("spares", True)
    if not isinstance(spares, bool):
        raise WarmupError(f"{where}: field '{FIELD}.spares' is {spares!r}: must be true or false")
    extra = {} if spares else {"spares": False}
    if "function" in value:
        if "params" in value or "seed" in value:
            raise WarmupError(
                f"{where}: field {FIELD!r} is {value!r}: give either 'function' or 'params' and 'seed', "
                f"not both ({FORMS})"
            )
        function = value["function"]
        module, sep, name = function.partition(":") if isinstance(function, str) else ("", "", "")
        if not (sep and module.strip() and name.strip()) or any(c.isspace() for c in function):
            raise WarmupError(
                f"{where}: field '{FIELD}.function' is {function!r}: must be a string 'module:function'"
            )
        return {"function": function, **extra}
    if "params" not in value or "seed" not in value:
        missing = "params" if "params" not in value else "seed"
        raise WarmupError(f"{where}: field {FIELD!r} is {value!r}: '{missing}' is missing ({FORMS})")
    params, seed = value["params"], value["seed"]
    if not isinstance(params, dict):
        raise WarmupError(f"{where}: field '{FIELD}.params' is {params!r}: must be an object (the entrypoint's params)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise WarmupError(f"{where}: field '{FIELD}.seed' is {seed!r}: must be an integer in [0, 2**32)")
    return {"params": params, "seed": seed, **extra}


def describe(warmup: dict | None) -> str:
    if not warmup:
        return "none"
    spares = "" if warmup.get("spares", True) else " (not repeated in spares)"
    if "function" in warmup:
        return f"function {warmup['function']}{spares}"
    return f"entrypoint with params {warmup['params']!r}, seed {warmup['seed']}{spares}"


def run_warmup(warmup: dict, entrypoint: str, import_path: str | None) -> None:
    """Do the declared warm-up in this process. Exceptions propagate: the caller refuses the bundle."""
    if import_path and import_path not in sys.path:
        sys.path.insert(0, import_path)
    if "function" in warmup:
        module_name, _, function_name = warmup["function"].partition(":")
        function = getattr(importlib.import_module(module_name), function_name, None)
        if not callable(function):
            raise AttributeError(f"module {module_name!r} has no callable {function_name!r}")
        function()
        return
    from modelops.seeding import seed_global_rngs

    module_name, _, function_name = entrypoint.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    seed_global_rngs(warmup["seed"])
    function(dict(warmup["params"]), warmup["seed"])

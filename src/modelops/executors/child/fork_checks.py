"""What a zygote checks before it may fork: its threads, and random generators its imports made.

Runs inside the zygote (`child/zygote.py`). Forking a multi-threaded process can leave locks held
forever in the child; a generator created at import would be cloned, state and all, into every child.
"""

from __future__ import annotations

import os
import sys


def rng_types() -> tuple[tuple[type, ...], list[int]]:
    """Generator types whose state a fork clones, and the global instances every task reseeds.

    Only modules already imported are looked at (numpy is never imported just to check)."""
    types: list[type] = []
    reseeded: list[int] = []
    random_module = sys.modules.get("random")
    if random_module is not None:
        types.append(random_module.Random)
        reseeded.append(id(getattr(random_module, "_inst", None)))
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        types.extend(
            t for t in (getattr(numpy_random, n, None) for n in ("Generator", "RandomState", "BitGenerator"))
            if isinstance(t, type)
        )
        mtrand = sys.modules.get("numpy.random.mtrand")
        reseeded.append(id(getattr(mtrand, "_rand", None)))
    return tuple(types), reseeded


def find_import_rngs(modules: list) -> list[str]:
    """Random generators reachable from `modules` (attributes, and items/attributes of containers
    one level deep) that every forked child would inherit with the same state.

    `random`'s and numpy's global generators are not listed: every task reseeds them."""
    types, reseeded = rng_types()
    if not types:
        return []
    system_random = getattr(sys.modules.get("random"), "SystemRandom", None)
    found: list[str] = []

    def check(value, where: str) -> bool:
        if isinstance(value, types) and id(value) not in reseeded:
            if system_random is None or not isinstance(value, system_random):  # no state to clone
                kind = type(value)
                found.append(f"{where} ({kind.__module__}.{kind.__qualname__})")
            return True
        return False

    for module in modules:
        for name, value in list(vars(module).items()):
            where = f"{module.__name__}.{name}"
            if check(value, where) or isinstance(value, (type, type(sys), type(check), type(len))):
                continue  # classes, modules and functions are not containers of generators
            if isinstance(value, dict):
                items = [(f"{where}[{k!r}]", v) for k, v in list(value.items())[:10000]]
            elif isinstance(value, (list, tuple, set, frozenset)):
                items = [(f"{where}[{i}]", v) for i, v in enumerate(list(value)[:10000])]
            elif type(value).__module__ != "builtins" and isinstance(getattr(value, "__dict__", None), dict):
                items = [(f"{where}.{k}", v) for k, v in list(vars(value).items())]
            else:
                continue
            for item_where, item in items:
                check(item, item_where)
    return found


def bundle_modules(spec: dict) -> list:
    """The bundle's own modules: those under its directory, and the entrypoint's package."""
    import_path = spec.get("import_path")
    root = os.path.realpath(import_path) + os.sep if import_path else None
    tops = {name.split(".")[0] for name in spec.get("bundle_modules", [])}
    found = []
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        origin = getattr(module, "__file__", None)
        if name.split(".")[0] in tops or (root and origin and os.path.realpath(origin).startswith(root)):
            found.append(module)
    return found


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def thread_names() -> list[str]:
    """Each thread's Python name when it is a Python thread, else its native name (comm)."""
    python_names = {}
    threading = sys.modules.get("threading")  # never imported here just to look
    if threading is not None:
        python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    names = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        name = python_names.get(int(tid))
        if name is None:
            try:
                with open(f"/proc/self/task/{tid}/comm") as fh:
                    name = fh.read().strip()
            except OSError:
                continue
        names.append(name)
    return names

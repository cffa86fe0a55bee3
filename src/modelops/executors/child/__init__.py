"""Code that runs inside the processes the worker starts, never in the Dask worker itself.

- `runner.py`: main of an exec'd child (warm pool member, cold spawn runner);
- `zygote.py`: main of a cold-fork zygote (imports a bundle once, forks spares, reaps them);
- `fork_checks.py`: what the zygote checks before forking (threads, generators made at import);
- `forked.py`: main of a child forked by the zygote (one task, then `_exit`).

Kept import-light: every module here is imported by a fresh interpreter before any task runs.
"""

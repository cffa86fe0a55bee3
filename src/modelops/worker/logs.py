"""The `modelops` logger, configured to reach the worker's stderr.

Dask configures only `distributed.*` loggers, so without this the lines that
operators grep for (`Executor: cold`, `Child process PID ...`) would vanish.
"""

from __future__ import annotations

import logging
import sys

_HANDLER_NAME = "modelops-stderr"


def configure_logging(level: str = "INFO") -> logging.Logger:
    """Attach one stderr handler to the `modelops` logger (idempotent) and set its level."""
    logger = logging.getLogger("modelops")
    logger.setLevel(level)
    if not any(getattr(h, "name", None) == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.name = _HANDLER_NAME
        handler.setFormatter(
            logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
        )
        logger.addHandler(handler)
    logger.propagate = False
    return logger

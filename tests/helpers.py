"""Helpers test modules share (test modules never import from each other or from conftest)."""

from __future__ import annotations

import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_BUNDLES = Path(__file__).resolve().parent / "bundles"


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> None:
    """Poll `predicate` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)


def clean_env() -> dict:
    """os.environ without MODELOPS_* so a test's processes see only what the test gives them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}

"""Compact sets of task ids: 16 bytes a task in one sorted numpy array.

A study's plan asks, for each of its tasks, whether the store already holds a result for it. A
Python set of 100,000 id strings costs ~10 MB and grows with every study; the ids are hashes
(`sim-` + 32 hex digits, `Task.task_id`), so their 16 bytes are the key, sorted once and looked up
by binary search, in chunks of tasks at a time. Any other id (a store written by another tool) is
keyed by a 16-byte blake2b of it, so it is still found exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

KEY = np.dtype("S16")
TASK_ID_PREFIX = "sim-"
_HEX = set("0123456789abcdef")


def task_key(task_id: str) -> bytes:
    body = task_id[len(TASK_ID_PREFIX):]
    if task_id.startswith(TASK_ID_PREFIX) and len(body) == 32 and set(body) <= _HEX:
        return bytes.fromhex(body)
    return hashlib.blake2b(task_id.encode(), digest_size=16).digest()


def keys_of(task_ids: Iterable[str]) -> np.ndarray:
    return np.array([task_key(t) for t in task_ids], dtype=KEY)


class TaskKeys:
    """An immutable set of task ids (sorted unique 16-byte keys). Comparisons stay in numpy: every
    key is exactly 16 bytes, so S16's padding never makes two different keys equal."""

    def __init__(self, keys: np.ndarray | None = None):
        self.keys = np.unique(keys) if keys is not None and len(keys) else np.empty(0, dtype=KEY)

    @classmethod
    def of(cls, task_ids: Iterable[str]) -> TaskKeys:
        return cls(keys_of(task_ids))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, task_id: str) -> bool:
        return bool(self.member(np.array([task_key(task_id)], dtype=KEY))[0])

    def member(self, keys: np.ndarray) -> np.ndarray:
        """For each key of `keys` (S16), whether it is in the set."""
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.searchsorted(self.keys, keys)
        found = np.zeros(len(keys), dtype=bool)
        inside = at < len(self.keys)
        found[inside] = self.keys[at[inside]] == keys[inside]
        return found

    def union(self, other: TaskKeys) -> TaskKeys:
        return TaskKeys(np.concatenate([self.keys, other.keys]))

    def without(self, other: TaskKeys) -> TaskKeys:
        return TaskKeys(self.keys[~other.member(self.keys)])

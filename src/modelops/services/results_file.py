"""Results as JSON lines, appended atomically: one os.write per line, so a killed
client never leaves a half-written line, and `--resume` can trust every line it reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelops.executors.invoke import to_json_line
from modelops.tasks import TaskResult


class ResultsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def completed_task_ids(self) -> set[str]:
        """Task ids that already have a result line (a torn last line, if any, is ignored)."""
        if not self.path.exists():
            return set()
        done = set()
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    done.add(json.loads(line)["task_id"])
                except (json.JSONDecodeError, KeyError):
                    continue
        return done

    def open(self, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o644)
        if not truncate:
            self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb") as fh:
            data = fh.read()
        keep = data.rfind(b"\n") + 1
        if keep != size:
            os.truncate(self.path, keep)

    def append(self, result: TaskResult) -> None:
        assert self._fd is not None
        os.write(self._fd, (to_json_line(result.model_dump(mode="json")) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

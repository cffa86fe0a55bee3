"""Results as JSON lines, written in batches of whole lines.

A batch is one `os.write` of complete lines on an O_APPEND descriptor, so a killed client leaves
the file ending at a line boundary: results still in the buffer are simply missing and `--resume`
runs those tasks again. Should the kernel ever cut a write short (a fatal signal while a large
write is copied in), the reader ignores the torn last line and `open(truncate=False)` drops it
before appending, so `--resume` can trust every line it reads.

The caller flushes at the end of each batch of results that arrived together (so no finished
result waits in memory while the client waits for the next); `flush_bytes` caps a batch. The
per-result cost is one `json.dumps` and a list append.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelops.services.json_lines import json_line
from modelops.tasks import TaskResult

FLUSH_BYTES = 256 * 1024


class ResultsFile:
    def __init__(self, path: str | Path, flush_bytes: int = FLUSH_BYTES):
        self.path = Path(path)
        self.flush_bytes = flush_bytes
        self._fd: int | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0

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
            # a torn line is at most one result long: look back from the end in steps
            step = 64 * 1024
            end = size
            while end > 0:
                start = max(0, end - step)
                fh.seek(start)
                newline = fh.read(end - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                end = start
            else:
                keep = 0
        if keep != size:
            os.truncate(self.path, keep)

    def append(self, result: TaskResult) -> None:
        """Write one validated result now (the unbatched form; `add` + `flush` batch)."""
        self.add(result.model_dump(mode="json"))
        self.flush()

    def add(self, payload: dict) -> None:
        """Buffer one result (a JSON-mode dict, as workers send it); written at the next flush(), or
        now if the buffer holds flush_bytes."""
        assert self._fd is not None, "open() the results file first"
        line = (json_line(payload) + "\n").encode()
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines: one os.write of whole lines (looping only on a short write)."""
        if not self._buffer:
            return
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        self._buffered = 0
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = None

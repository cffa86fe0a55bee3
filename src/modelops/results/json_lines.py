"""The client's JSON-line encoding for results files (one result = one line, compact).

Results arrive from workers already in JSON mode (`TaskResult.model_dump(mode="json")`), so the
common case is one `json.dumps`. Only a value plain JSON cannot hold takes the slow path: a
non-finite float is written as its string ("nan", "inf") and bytes as {"__bytes__": hex}, so
every line stays strict JSON that any reader accepts. `read_json_lines` reads such a file back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SEPARATORS = (",", ":")


def _bytes_as_hex(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": bytes(value).hex()}
    raise TypeError(f"cannot write a {type(value).__name__} to a results file: {value!r:.80}")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_line(obj: Any) -> str:
    """`obj` as one line of strict JSON, without the newline."""
    try:
        return json.dumps(obj, separators=_SEPARATORS, allow_nan=False, default=_bytes_as_hex)
    except ValueError:  # a non-finite float somewhere: the rare, slow path
        return json.dumps(_finite(obj), separators=_SEPARATORS, allow_nan=False, default=_bytes_as_hex)


def read_json_lines(path: str | Path) -> Iterator[dict]:
    """The objects of a JSON-lines file, in file order. Only whole lines count: a torn last line (no
    newline: a writer killed mid-write) is ignored, and so is a line that is not a JSON object."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                return
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj

"""Results as Arrow tables: one row per result, provenance as columns.

A worker sends each result as a JSON-mode `TaskResult` dict (what a `mops run --output` line holds).
In the store it becomes a row: the result's own fields, `params`, `outputs` and `error` as JSON text
(their shapes differ per study), `error_kind` and `error_retryable` for filtering, every provenance
field as a column of its own (derived from `Provenance`, so a new provenance field becomes a new
column without an edit here; `reused_from` names the job that computed a reused result), and what the
store adds: the `job` that wrote the row and `written_at`. `to_record` gives the JSON-mode result
back (provenance `job` added), so every reader sees the result a worker sent.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Iterator
from types import NoneType, UnionType

import pyarrow as pa
import pyarrow.parquet as pq

from modelops.results.json_lines import json_line
from modelops.tasks import Provenance

RESULT_COLUMNS = [("task_id", pa.string()), ("status", pa.string()), ("seed", pa.int64()),
                  ("params", pa.string()), ("outputs", pa.string()), ("error", pa.string()),
                  ("error_kind", pa.string()), ("error_retryable", pa.bool_())]
STORE_COLUMNS = [("job", pa.string()), ("written_at", pa.float64())]
JSON_COLUMNS = {"params", "outputs", "error"}
ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(annotation) -> tuple[pa.DataType, bool]:
    """(Arrow type, stored as JSON text) for a provenance field's annotation."""
    args = typing.get_args(annotation) if isinstance(annotation, UnionType) or typing.get_origin(annotation) else ()
    inner = [a for a in args if a is not NoneType] or [annotation]
    base = typing.get_origin(inner[0]) or inner[0]
    if base in ARROW_TYPES:
        return ARROW_TYPES[base], False
    return pa.string(), True  # dicts, lists: JSON text


PROVENANCE_COLUMNS: list[tuple[str, pa.DataType]] = []
PROVENANCE_JSON: set[str] = set()
for _name, _field in Provenance.model_fields.items():
    _type, _as_json = _arrow_type(_field.annotation)
    PROVENANCE_COLUMNS.append((_name, _type))
    if _as_json:
        PROVENANCE_JSON.add(_name)

SCHEMA = pa.schema(RESULT_COLUMNS + PROVENANCE_COLUMNS + STORE_COLUMNS)
COLUMNS = SCHEMA.names
PROVENANCE_FIELDS = [name for name, _ in PROVENANCE_COLUMNS]


def _json(value) -> str | None:
    return None if value is None else json_line(value)


def to_table(records: Iterable[dict], job: str, written_at: float) -> pa.Table:
    """Rows for JSON-mode results written by `job`."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for record in records:
        error = record.get("error")
        provenance = record["provenance"]
        columns["task_id"].append(record["task_id"])
        columns["status"].append(record["status"])
        columns["seed"].append(record["seed"])
        columns["params"].append(_json(record.get("params")))
        columns["outputs"].append(_json(record.get("outputs")))
        columns["error"].append(_json(error))
        columns["error_kind"].append(error.get("kind") if error else None)
        columns["error_retryable"].append(error.get("retryable") if error else None)
        for name in PROVENANCE_FIELDS:
            value = provenance.get(name)
            columns[name].append(_json(value) if name in PROVENANCE_JSON else value)
        columns["job"].append(job)
        columns["written_at"].append(written_at)
    return pa.table(columns, schema=SCHEMA)


def to_record(row: dict) -> dict:
    """The JSON-mode result a row holds (provenance with the `job` that wrote the row added)."""
    provenance = {name: (json.loads(row[name]) if name in PROVENANCE_JSON and row[name] is not None else row[name])
                  for name in PROVENANCE_FIELDS}
    provenance["job"] = row["job"]
    return {
        "task_id": row["task_id"],
        "status": row["status"],
        "params": json.loads(row["params"]) if row["params"] is not None else {},
        "seed": row["seed"],
        "outputs": json.loads(row["outputs"]) if row["outputs"] is not None else None,
        "error": json.loads(row["error"]) if row["error"] is not None else None,
        "provenance": provenance,
    }


def iter_records(table: pa.Table) -> Iterator[dict]:
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            yield to_record(row)


def to_parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def from_parquet(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A batch read back (only `columns`, when given); a batch written before a column existed gets
    it as nulls."""
    wanted = columns or COLUMNS
    parquet = pq.ParquetFile(pa.BufferReader(data))
    present = set(parquet.schema_arrow.names)
    table = parquet.read(columns=[c for c in wanted if c in present])
    for name in wanted:
        if name not in present:
            kind = SCHEMA.field(name).type
            table = table.append_column(pa.field(name, kind), pa.nulls(len(table), kind))
    return table.select(wanted)

"""Cell files of the transfer and sweep stages: rows with their cell's columns, written with a JSON report.

A transfer or sweep job writes one parquet file per cell (pooling, binarization) into its unit
folder (:data:`saeprobe.layout.TRANSFER`, :data:`saeprobe.layout.SWEEP`); the table jobs
concatenate them (:func:`concat`). polars and pyarrow only, so the table jobs start quickly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from saeprobe.grid import HIDDEN
from saeprobe.io import atomic_path, folder_files, read_parquet, reading

REPORT_KEY = b"saeprobe.report"

CELL_SCHEMA: dict[str, Any] = {
    "model": pl.String, "dataset": pl.String, "source": pl.String, "family": pl.String, "layer": pl.Int64,
    "pooling": pl.String, "binarize": pl.String,
}
CELL_KEYS = ["model", "dataset", "source", "layer", "pooling", "binarize"]


def family_of(source: str) -> str:
    """``tfidf``, ``hidden`` (the hidden-state baseline) or ``sae``."""
    return "tfidf" if source == "tfidf" else "hidden" if source == HIDDEN else "sae"


def frame(rows: list[dict[str, Any]], cell: dict[str, Any], schema: dict[str, Any]) -> pl.DataFrame:
    """Rows with the cell's columns (model, dataset, source, family, layer, pooling, binarize) in front."""
    cell = {**cell, "family": family_of(cell["source"])}
    full = [{k: ({**cell, **row}).get(k) for k in schema} for row in rows]
    return pl.DataFrame(full, schema=schema, orient="row")


def write_parquet(df: pl.DataFrame, path: str | Path, report: dict[str, Any] | None = None) -> None:
    """Write ``df`` atomically; ``report`` (JSON) goes into the file's metadata (see :func:`read_report`)."""
    table = df.to_arrow()
    if report is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), REPORT_KEY: json.dumps(report).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_report(path: str | Path) -> dict[str, Any]:
    """The report stored by :func:`write_parquet` (empty when there is none)."""
    with reading(path):
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[REPORT_KEY]) if REPORT_KEY in meta else {}


def concat(paths: Iterable[str | Path], schema: dict[str, Any]) -> pl.DataFrame:
    """Rows of every cell file in ``paths`` (unit folders are read file by file), cast to ``schema``."""
    parts = [read_parquet(p).select(list(schema)).cast(schema) for p in folder_files(paths, "parquet")]  # type: ignore[arg-type]
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)

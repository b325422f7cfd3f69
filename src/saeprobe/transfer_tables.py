"""Output rows, files and tables of the transfer and sweep stages (polars; no scikit-learn).

Kept apart from :mod:`saeprobe.transfer` so that the table jobs start quickly.

- Transfer cell files (``results/transfer/.../{pooling}__{binarize}.parquet``): one row per
  (train_lang, test_lang), schema :data:`TRANSFER_SCHEMA`; the file metadata holds a JSON report
  (languages, skipped train/test languages with reasons, rows without a language).
- Sweep cell files (``results/sweeps/...parquet``, ``results/sweeps/tfidf/{dataset}.parquet``):
  one row per (n_per_class, repeat), schema :data:`SWEEP_SCHEMA`; ``n_per_class`` null = the
  whole train split; ``subsample`` fingerprints the documents fitted on.
- Tables: ``results/tables/transfer.{parquet,csv,md}`` (md: one train × test language macro-F1
  matrix per cell) and ``results/tables/sweep.{parquet,csv,md}`` (md: mean ± std over repeats of
  test macro F1 per size and cell).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from saeprobe.config import HIDDEN
from saeprobe.io import atomic_path, read_parquet, reading
from saeprobe.tables import markdown

REPORT_KEY = b"saeprobe.report"

CELL_SCHEMA: dict[str, Any] = {
    "model": pl.String, "dataset": pl.String, "source": pl.String, "family": pl.String, "layer": pl.Int64,
    "pooling": pl.String, "binarize": pl.String,
}
TRANSFER_SCHEMA: dict[str, Any] = {
    **CELL_SCHEMA, "train_lang": pl.String, "test_lang": pl.String, "macro_f1": pl.Float64, "accuracy": pl.Float64,
    "n_train": pl.Int64, "n_test": pl.Int64, "C": pl.Float64, "cv_macro_f1": pl.Float64,
    "test_missing_classes": pl.Int64,  # classes absent from the test language's split (each scores 0)
}
SWEEP_SCHEMA: dict[str, Any] = {
    **CELL_SCHEMA, "n_per_class": pl.Int64, "repeat": pl.Int64, "n_train": pl.Int64, "n_test": pl.Int64,
    "test_macro_f1": pl.Float64, "test_accuracy": pl.Float64, "C": pl.Float64, "subsample": pl.String,
}


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


def _concat(paths: Iterable[str | Path], schema: dict[str, Any]) -> pl.DataFrame:
    parts = [read_parquet(p).select(list(schema)).cast(schema) for p in paths]  # type: ignore[arg-type]
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


CELL_KEYS = ["model", "dataset", "source", "layer", "pooling", "binarize"]


def transfer_table(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every transfer row of every cell (schema :data:`TRANSFER_SCHEMA`), sorted."""
    return _concat(paths, TRANSFER_SCHEMA).sort(["dataset", "model", "family", *CELL_KEYS[2:], "train_lang", "test_lang"])


def transfer_markdown(df: pl.DataFrame) -> str:
    """One train-language × test-language macro-F1 matrix (3 decimals) per cell."""
    out = ["# Cross-lingual transfer: test macro F1",
           "",
           "Rows: the language whose train split fitted the probe (C by CV on it); columns: the language whose "
           "test split scored it. The diagonal is in-language.",
           ""]
    for key, cell in df.group_by(CELL_KEYS, maintain_order=True):
        model, dataset, source, layer, pooling, binarize_ = key
        langs = sorted(set(cell["train_lang"]) | set(cell["test_lang"]))
        tests = [b for b in langs if b in set(cell["test_lang"])]
        matrix = (cell.pivot(on="test_lang", index="train_lang", values="macro_f1")
                  .select("train_lang", *tests).sort("train_lang").rename({"train_lang": "train \\ test"}))
        out += [f"## {dataset} · {model} · {source} · layer {layer} · {pooling} · {binarize_}", "",
                markdown(matrix, float_precision=3)]
    return "\n".join(out)


def sweep_table(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every sweep row (features and TF-IDF), sorted; ``n_per_class`` null = the whole train split."""
    return _concat(paths, SWEEP_SCHEMA).sort(["dataset", "model", "family", *CELL_KEYS[2:], "n_per_class", "repeat"],
                                             nulls_last=True)


def sweep_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Mean, std (over repeats) and count of test macro F1 per cell and size; mean train rows."""
    keys = ["dataset", "model", "family", "source", "layer", "pooling", "binarize", "n_per_class"]
    return (df.group_by(keys, maintain_order=True)
            .agg(pl.col("test_macro_f1").mean().alias("mean"), pl.col("test_macro_f1").std().alias("std"),
                 pl.len().alias("repeats"), pl.col("n_train").mean().alias("n_train"))
            .sort(keys, nulls_last=True))


def sweep_markdown(df: pl.DataFrame) -> str:
    """Per dataset: one row per feature cell, one column per size, cells 'mean ± std' of test macro F1."""
    out = ["# Training-set size sweep: test macro F1 (mean ± std over repeats)",
           "",
           "Columns: train examples per class (capped at a class's count; 'all' = the whole train split). "
           "Every source of a dataset is fitted on the same subsamples; C by CV on the subsample; "
           "scored on the full test split.",
           ""]
    summary = sweep_summary(df)
    for (dataset,), part in summary.group_by(["dataset"], maintain_order=True):
        sizes = part["n_per_class"].unique().sort(nulls_last=True).to_list()
        names = {n: "all" if n is None else str(n) for n in sizes}
        cell = pl.Series("cell", [f"{m:.3f} ± {sd:.3f}" if sd is not None else f"{m:.3f}"
                                  for m, sd in zip(part["mean"], part["std"], strict=True)], dtype=pl.String)
        wide = (part.with_columns(cell, pl.col("n_per_class").cast(pl.String).fill_null("all").alias("size"))
                .pivot(on="size", index=["family", "model", "source", "layer", "pooling", "binarize"], values="cell")
                .select("family", "model", "source", "layer", "pooling", "binarize", *names.values())
                .with_columns(pl.col("model", "layer", "pooling", "binarize").cast(pl.String).fill_null("-")))
        out += [f"## {dataset}", "", markdown(wide)]
    return "\n".join(out)

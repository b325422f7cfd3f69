"""The training-set size sweep table (``sweep.{parquet,csv,md}``) from the sweep cell files.

Cell files (features, and TF-IDF per dataset): one row per (n_per_class, repeat), schema
:data:`SWEEP_SCHEMA`; ``n_per_class`` null = the whole train split; ``subsample`` fingerprints
the documents fitted on. The Markdown shows mean ± std over repeats of test macro F1 per size and cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from saeprobe.cell_tables import CELL_KEYS, CELL_SCHEMA, concat
from saeprobe.tables import markdown

SWEEP_SCHEMA: dict[str, Any] = {
    **CELL_SCHEMA, "n_per_class": pl.Int64, "repeat": pl.Int64, "n_train": pl.Int64, "n_test": pl.Int64,
    "test_macro_f1": pl.Float64, "test_accuracy": pl.Float64, "C": pl.Float64, "subsample": pl.String,
}


def sweep_table(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every sweep row (features and TF-IDF), sorted; ``n_per_class`` null = the whole train split."""
    return concat(paths, SWEEP_SCHEMA).sort(["dataset", "model", "family", *CELL_KEYS[2:], "n_per_class", "repeat"],
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

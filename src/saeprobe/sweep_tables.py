"""The data-regime sweep table (``sweep.{parquet,csv,md}``) from the sweep cell files.

Cell files (features, and TF-IDF per dataset): one row per (regime, value, repeat), schema
:data:`SWEEP_SCHEMA`. ``regime`` is 'size' (``value`` = ``n_per_class``, both null = the whole
train split), 'imbalance' (``value`` = fraction of positive train examples, ``n_positive`` of
``n_train``) or 'label_noise' (``value`` = fraction of train labels flipped, ``n_flipped``);
``n_per_class`` is null outside the size regime. ``subsample`` fingerprints the documents fitted
on (and their labels, for label noise). A null ``regime`` (files written before the other
regimes existed) reads as 'size'. The Markdown shows mean ± std over repeats of test macro F1
per value and cell, one block per regime.
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
    "regime": pl.String, "value": pl.Float64, "n_positive": pl.Int64, "n_flipped": pl.Int64,
    "majority_macro_f1": pl.Float64,  # the majority-class predictor's test macro F1 (the same for every row of a dataset)
}
REGIME_ORDER = {"size": 0, "imbalance": 1, "label_noise": 2}
_SORT_CELL = ["dataset", "model", "family", *CELL_KEYS[2:]]


def _regime_rank() -> pl.Expr:
    return pl.col("regime").fill_null("size").replace_strict(REGIME_ORDER, default=len(REGIME_ORDER),
                                                             return_dtype=pl.Int8)


def _normalised(df: pl.DataFrame) -> pl.DataFrame:
    """``regime`` null -> 'size' and its ``value`` from ``n_per_class``."""
    legacy = pl.col("regime").is_null()
    return df.with_columns(pl.when(legacy).then(pl.col("n_per_class").cast(pl.Float64)).otherwise(pl.col("value"))
                           .alias("value"), pl.col("regime").fill_null("size"))


def sweep_table(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every sweep row (features and TF-IDF), sorted by cell, regime (size, imbalance, label
    noise), value and repeat; ``n_per_class`` null = the whole train split (size regime)."""
    return concat(paths, SWEEP_SCHEMA).sort([*_SORT_CELL, _regime_rank(), "value", "n_per_class", "repeat"],
                                             nulls_last=True)


def sweep_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Mean, std (over repeats) and count of test macro F1 per cell, regime and value; mean train rows."""
    keys = ["dataset", "model", "family", "source", "layer", "pooling", "binarize", "regime", "value", "n_per_class"]
    return (_normalised(df).group_by(keys, maintain_order=True)
            .agg(pl.col("test_macro_f1").mean().alias("mean"), pl.col("test_macro_f1").std().alias("std"),
                 pl.len().alias("repeats"), pl.col("n_train").mean().alias("n_train"))
            .sort([*_SORT_CELL, _regime_rank(), "value", "n_per_class"], nulls_last=True))


SIZE_NOTE = ("Columns: train examples per class (capped at a class's count; 'all' = the whole train split). "
             "Every source of a dataset is fitted on the same subsamples; C by CV on the subsample; "
             "scored on the full test split.")
REGIME_HEADINGS = {
    "size": ("Training-set size", SIZE_NOTE),
    "imbalance": ("Class imbalance", "Columns: fraction of positive (label 1) examples in a train subsample of N rows, "
                                     "the same N for every fraction. Binary datasets only."),
    "label_noise": ("Label noise", "Columns: fraction of train labels flipped (whole train split, seeded, the same "
                                   "flips for every source); scored on the untouched test split's true labels."),
}


def _wide(part: pl.DataFrame, regime: str) -> pl.DataFrame:
    """One row per feature cell, one column per value, cells 'mean ± std'."""
    if regime == "size":
        names = ["all" if n is None else str(n) for n in part["n_per_class"].unique().sort(nulls_last=True).to_list()]
        column = pl.col("n_per_class").cast(pl.String).fill_null("all")
    else:
        names = [f"{v:g}" for v in part["value"].unique().sort(nulls_last=True).to_list()]
        column = pl.col("value").map_elements(lambda v: f"{v:g}", return_dtype=pl.String)
    cell = pl.Series("cell", [f"{m:.3f} ± {sd:.3f}" if sd is not None else f"{m:.3f}"
                              for m, sd in zip(part["mean"], part["std"], strict=True)], dtype=pl.String)
    return (part.with_columns(cell, column.alias("size"))
            .pivot(on="size", index=["family", "model", "source", "layer", "pooling", "binarize"], values="cell")
            .select("family", "model", "source", "layer", "pooling", "binarize", *names)
            .with_columns(pl.col("model", "layer", "pooling", "binarize").cast(pl.String).fill_null("-")))


def sweep_markdown(df: pl.DataFrame) -> str:
    """Per dataset and regime: one row per feature cell, one column per value, cells 'mean ± std' of test macro F1.

    A table of size rows only reads as it did before the other regimes (one table per dataset).
    """
    summary = sweep_summary(df)
    regimes = set(summary["regime"].to_list())
    if regimes <= {"size"}:
        out = ["# Training-set size sweep: test macro F1 (mean ± std over repeats)", "", SIZE_NOTE, ""]
        for (dataset,), part in summary.group_by(["dataset"], maintain_order=True):
            out += [f"## {dataset}", "", markdown(_wide(part, "size"))]
        return "\n".join(out)
    out = ["# Probe data regimes: test macro F1 (mean ± std over repeats)", "",
           "Training-set size, class imbalance and label noise. Every source of a dataset is fitted on the same "
           "draws (documents and flipped labels); C by CV on the draw; scored on the full, untouched test split.", ""]
    for (dataset,), part in summary.group_by(["dataset"], maintain_order=True):
        out += [f"## {dataset}", ""]
        for (regime,), block in part.group_by(["regime"], maintain_order=True):
            heading, note = REGIME_HEADINGS.get(regime, (regime, ""))
            if regime == "imbalance":
                heading += f" (N = {round(block['n_train'].max())} train rows)"
            out += [f"### {heading}", "", note, "", markdown(_wide(block, regime))]
    return "\n".join(out)

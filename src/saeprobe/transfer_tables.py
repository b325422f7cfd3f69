"""The cross-lingual transfer table (``transfer.{parquet,csv,md}``) from the transfer cell files.

Cell files: one row per (train_lang, test_lang), schema :data:`TRANSFER_SCHEMA`; the file
metadata holds a JSON report (languages, skipped train/test languages with reasons, rows
without a language). The Markdown shows one train × test language macro-F1 matrix per cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from saeprobe.cell_tables import CELL_KEYS, CELL_SCHEMA, concat
from saeprobe.tables import markdown

TRANSFER_SCHEMA: dict[str, Any] = {
    **CELL_SCHEMA, "train_lang": pl.String, "test_lang": pl.String, "macro_f1": pl.Float64, "accuracy": pl.Float64,
    "n_train": pl.Int64, "n_test": pl.Int64, "C": pl.Float64, "cv_macro_f1": pl.Float64,
    "test_missing_classes": pl.Int64,  # classes absent from the test language's split (each scores 0)
    "majority_macro_f1": pl.Float64, "majority_accuracy": pl.Float64, "chance_macro_f1": pl.Float64,
    "predicted_classes": pl.Int64, "flag": pl.String,
}


def transfer_table(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every transfer row of every cell (schema :data:`TRANSFER_SCHEMA`), sorted."""
    return concat(paths, TRANSFER_SCHEMA).sort(["dataset", "model", "family", *CELL_KEYS[2:], "train_lang", "test_lang"])


def transfer_markdown(df: pl.DataFrame) -> str:
    """One train-language × test-language macro-F1 matrix (3 decimals) per cell."""
    out = ["# Cross-lingual transfer: test macro F1",
           "",
           "Rows: the language whose train split fitted the probe (C by CV on it); columns: the language whose "
           "test split scored it. The diagonal is in-language. The row 'majority class' is what predicting each test "
           "split's most common class scores; a cell marked * predicts a single class there (degenerate).",
           ""]
    for key, cell in df.group_by(CELL_KEYS, maintain_order=True):
        model, dataset, source, layer, pooling, binarize_ = key
        langs = sorted(set(cell["train_lang"]) | set(cell["test_lang"]))
        tests = [b for b in langs if b in set(cell["test_lang"])]
        shown = cell.with_columns(pl.format("{}{}", pl.col("macro_f1").round(3),
                                            pl.when(pl.col("predicted_classes") == 1).then(pl.lit("*")).otherwise(pl.lit("")))
                                  .alias("cell"))
        matrix = (shown.pivot(on="test_lang", index="train_lang", values="cell")
                  .select("train_lang", *tests).sort("train_lang"))
        majority = (cell.group_by("test_lang", maintain_order=True).agg(pl.col("majority_macro_f1").first())
                    .with_columns(pl.col("majority_macro_f1").round(3).cast(pl.String)))
        majority_row = {"train_lang": "majority class", **dict(majority.iter_rows())}
        matrix = pl.concat([matrix, pl.DataFrame([majority_row], schema=matrix.schema)]).rename(
            {"train_lang": "train \\ test"})
        out += [f"## {dataset} · {model} · {source} · layer {layer} · {pooling} · {binarize_}", "",
                markdown(matrix, float_precision=3)]
    return "\n".join(out)

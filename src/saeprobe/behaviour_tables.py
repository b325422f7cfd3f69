"""The behaviour table (``behaviour.{parquet,csv,md}``): per behaviour dataset, the scorer's
accuracy and the majority-label rates beside the best probe of each feature family.

Inputs: the scored items and their summary (:mod:`saeprobe.behaviour_data`), the prepared
dataset of the labels (:mod:`saeprobe.data`, for the test split) and the probe results
(:func:`saeprobe.tables.grid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from saeprobe import data, tables
from saeprobe.behaviour_data import META_KEY, read_meta
from saeprobe.errors import CacheError
from saeprobe.io import rebuild_command

TABLE_COLUMNS = [
    "dataset", "scorer_model", "scorer_accuracy", "n_items", "majority_rate", "majority_rate_test", "n_test", "probe_model",
    "family", "source", "layer", "pooling", "binarize", "C", "cv_macro_f1", "cv_macro_f1_se", "test_macro_f1",
    "test_accuracy", "test_auroc",
]


def dataset_stats(name: str, scored: str | Path, prepared: str | Path) -> dict[str, Any]:
    """Scorer accuracy and majority-label rates of one behaviour dataset.

    Args:
        scored: :data:`saeprobe.layout.BEHAVIOUR` (its metadata summary).
        prepared: :data:`saeprobe.layout.DATA` (its fixed splits).
    Returns:
        dataset, scorer_model, scorer_accuracy (all items), n_items, majority_rate (all items),
        majority_rate_test and n_test (the test split the probes are scored on).
    Raises:
        CacheError: either file is damaged, or ``scored`` has no summary metadata.
    """
    meta = read_meta(scored)
    if not meta:
        raise CacheError(f"{scored}: no '{META_KEY.decode()}' metadata (not written by score_behaviour); rebuild it "
                         f"with: {rebuild_command(scored)}")
    df, _ = data.read(prepared)
    test = df.filter(pl.col("split") == "test")
    counts = test["label_name"].value_counts()["count"] if test.height else pl.Series([0])
    return {
        "dataset": name, "scorer_model": meta["scorer"], "scorer_accuracy": meta["accuracy"], "n_items": meta["n_items"],
        "majority_rate": meta["majority_rate"],
        "majority_rate_test": float(counts.max() / test.height) if test.height else None, "n_test": test.height,
    }


def behaviour_table(probe_paths: list[str], stats: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per (behaviour dataset, probe model, feature family): the best probe on **CV** macro F1.

    Selection is :func:`saeprobe.tables.best` (CV macro F1 by the one-standard-error rule, never
    test); its test macro F1 and
    accuracy are reported beside the scorer's accuracy and the majority-label rates, which a
    probe must beat to have learned anything. TF-IDF rows have ``probe_model`` ``-``.

    Returns:
        Frame with :data:`TABLE_COLUMNS`, sorted by dataset, probe model, family (sae, hidden), TF-IDF last.
    """
    best = tables.best(tables.grid(probe_paths)).rename({"model": "probe_model"})
    best = best.with_columns(pl.col("probe_model").fill_null("-"))
    schema = {"dataset": pl.String, "scorer_model": pl.String, "scorer_accuracy": pl.Float64, "n_items": pl.Int64,
              "majority_rate": pl.Float64, "majority_rate_test": pl.Float64, "n_test": pl.Int64}
    per_dataset = pl.DataFrame(stats, schema=schema, orient="row")
    order = pl.col("family").replace_strict({"sae": 0, "hidden": 1, "tfidf": 2}, return_dtype=pl.Int8)
    out = per_dataset.join(best, on="dataset", how="left")
    return out.sort(["dataset", pl.col("family") == "tfidf", "probe_model", order], nulls_last=True).select(TABLE_COLUMNS)

"""Aggregation of probe results into the run's tables (polars).

- ``grid``: one row per probe (model × dataset × feature source × layer × pooling ×
  binarization, plus TF-IDF per dataset) with CV and test scores.
- ``best``: per dataset and model, the best SAE configuration and the best hidden-state
  configuration, and per dataset the TF-IDF baseline — the best chosen on the **CV** macro F1
  (train split), never on test; the test macro F1 of the chosen configuration is reported.
  The same selection made on the test score (MOSAIC's procedure) is listed beside it, marked
  ``selected_on = test``, so the optimism of test-set selection is visible.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from saeprobe import layout
from saeprobe.grid import HIDDEN
from saeprobe.io import atomic_path, folder_files, read_json

GRID_COLUMNS = [
    "dataset", "model", "family", "source", "layer", "pooling", "binarize", "C", "cv_macro_f1", "cv_macro_f1_std",
    "test_macro_f1", "test_accuracy", "test_auroc", "validation_macro_f1", "n_train", "n_test", "n_features",
    "mean_active_features", "test_missing_classes",
]


def _row(result: dict[str, Any]) -> dict[str, Any]:
    test, val = result.get("test", {}), result.get("validation") or {}
    source = result["source"]
    family = "tfidf" if source == "tfidf" else "hidden" if source == HIDDEN else "sae"
    return {
        "dataset": result["dataset"], "model": result.get("model"), "family": family, "source": source,
        "layer": result.get("layer"), "pooling": result.get("pooling"), "binarize": result.get("binarize"),
        "C": result["C"], "cv_macro_f1": result["cv_macro_f1"], "cv_macro_f1_std": result["cv_macro_f1_std"],
        "test_macro_f1": test.get("macro_f1"), "test_accuracy": test.get("accuracy"), "test_auroc": test.get("auroc"),
        "validation_macro_f1": val.get("macro_f1"), "n_train": result["n_train"], "n_test": test.get("n"),
        "n_features": result["n_features"], "mean_active_features": result.get("mean_active_features"),
        # Classes of the dataset absent from its test split (each scores 0 in the macro F1).
        "test_missing_classes": len(test.get("missing_classes", [])),
    }


def grid(paths: Iterable[str | Path]) -> pl.DataFrame:
    """All probe results as one frame (schema: :data:`GRID_COLUMNS`).

    Args:
        paths: result JSON files, or probe unit folders (:data:`saeprobe.layout.PROBES`), whose
            ``*.json`` cell results are read.
    """
    rows = [_row(read_json(p)) for p in folder_files(paths, "json")]
    schema = {
        "dataset": pl.String, "model": pl.String, "family": pl.String, "source": pl.String, "layer": pl.Int64,
        "pooling": pl.String, "binarize": pl.String, "C": pl.Float64, "cv_macro_f1": pl.Float64,
        "cv_macro_f1_std": pl.Float64, "test_macro_f1": pl.Float64, "test_accuracy": pl.Float64,
        "test_auroc": pl.Float64, "validation_macro_f1": pl.Float64, "n_train": pl.Int64, "n_test": pl.Int64,
        "n_features": pl.Int64, "mean_active_features": pl.Float64, "test_missing_classes": pl.Int64,
    }
    df = pl.DataFrame(rows, schema=schema, orient="row")
    return df.sort(["dataset", "family", "model", "source", "layer", "pooling", "binarize"], nulls_last=True)


SELECTIONS = {"cv": "cv_macro_f1", "test": "test_macro_f1"}


def best(grid_df: pl.DataFrame, selected_on: str = "cv") -> pl.DataFrame:
    """Best configuration per (dataset, model, family); ties → fewer features, then the earlier row.

    Args:
        selected_on: ``cv`` (saeprobe's method: the CV macro F1 on the train split) or ``test``
            (MOSAIC's: the test macro F1 itself, which overstates what a user would get —
            reproduced only to compare with the paper's numbers).
    Returns:
        One row per (dataset, model, family) with a ``selected_on`` column; ``test_macro_f1`` is
        the chosen configuration's test score either way.
    Raises:
        ValueError: unknown ``selected_on``.
    """
    if selected_on not in SELECTIONS:
        raise ValueError(f"selected_on must be one of {sorted(SELECTIONS)}, got {selected_on!r}")
    ranked = grid_df.sort([SELECTIONS[selected_on], "n_features"], descending=[True, False], nulls_last=True,
                          maintain_order=True)
    picked = ranked.group_by(["dataset", "model", "family"], maintain_order=True).first()
    order = pl.col("family").replace_strict({"sae": 0, "hidden": 1, "tfidf": 2}, return_dtype=pl.Int8)
    return picked.sort(["dataset", order, "model"], nulls_last=True, maintain_order=True).select(
        "dataset", "family", "model", "source", "layer", "pooling", "binarize", "cv_macro_f1", "test_macro_f1",
        "test_accuracy", "test_auroc", "C", pl.lit(selected_on).alias("selected_on"),
    )


def best_both(grid_df: pl.DataFrame) -> pl.DataFrame:
    """:func:`best` selected on CV (saeprobe) and on test (MOSAIC), side by side, CV rows first."""
    return pl.concat([best(grid_df, "cv"), best(grid_df, "test")])


def markdown(df: pl.DataFrame, float_precision: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (polars' own MARKDOWN formatting)."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, float_precision=float_precision, tbl_width_chars=10000):
        return str(df) + "\n"


def write_table(df: pl.DataFrame, stem: str | Path, title: str = "", md: str | None = None) -> None:
    """Write ``df`` as ``stem``.parquet, .csv and .md, each atomically.

    The Markdown is ``md`` when given, else ``title`` over :func:`markdown` of ``df``.
    """
    stem = Path(stem)
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        df.write_parquet(tmp)
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        df.write_csv(tmp)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(md if md is not None else (f"# {title}\n\n" if title else "") + markdown(df))


def stage_times(benchmark_dir: str | Path = layout.BENCHMARKS) -> pl.DataFrame:
    """Wall time per stage from Snakemake's ``benchmark:`` files (one TSV per job).

    Returns:
        One row per stage (rule): jobs, total and longest wall seconds, peak max RSS (MB).
    """
    rows = []
    for tsv in sorted(Path(benchmark_dir).rglob("*.tsv")):
        bench = pl.read_csv(tsv, separator="\t", null_values=["-", "NA"], infer_schema_length=0)
        stage = tsv.relative_to(benchmark_dir).parts[0]
        rows.append({"stage": stage, "s": float(bench["s"][-1]), "max_rss": float(bench["max_rss"][-1] or 0)})
    if not rows:
        return pl.DataFrame(schema={"stage": pl.String, "jobs": pl.UInt32, "total_s": pl.Float64,
                                    "longest_s": pl.Float64, "peak_rss_mb": pl.Float64})
    return (
        pl.DataFrame(rows)
        .group_by("stage", maintain_order=True)
        .agg(pl.len().alias("jobs"), pl.col("s").sum().alias("total_s"), pl.col("s").max().alias("longest_s"),
             pl.col("max_rss").max().alias("peak_rss_mb"))
        .sort("total_s", descending=True)
    )


if __name__ == "__main__":  # python -m saeprobe.tables [BENCHMARK_DIR]: per-stage wall time
    import sys

    print(markdown(stage_times(*sys.argv[1:2]), float_precision=1))

"""The data-regime sweep table (``sweep.{parquet,csv,md}``) from the sweep cell files.

Cell files (features, and TF-IDF per dataset): one row per (regime, value, repeat), schema
:data:`SWEEP_SCHEMA`. ``regime`` is 'size' (``value`` = ``n_per_class``, both null = the whole
train split), 'imbalance' (``value`` = fraction of positive train examples, ``n_positive`` of
``n_train``) or 'label_noise' (``value`` = fraction of train labels flipped, ``n_flipped``);
``n_per_class`` is null outside the size regime. ``subsample`` fingerprints the documents fitted
on (and their labels, for label noise). A null ``regime`` (files written before the other
regimes existed) reads as 'size'. The Markdown shows mean ± std over repeats of test macro F1
per value and cell, one block per regime.

Draws a sweep job skipped (:func:`saeprobe.sweep.draw_problem`: cross-validation impossible, e.g.
a class in a single train group of a small grouped draw) have no row; each cell file's report
lists them (``skipped_draws``, with the cell under ``cell``), :func:`sweep_skipped` gathers them,
and the Markdown marks them: ``(k skipped)`` after a cell's mean, ``skipped`` where no repeat
was fitted, and a note per dataset naming the values to drop from the config.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from saeprobe.cell_tables import CELL_KEYS, CELL_SCHEMA, concat, family_of, read_report
from saeprobe.io import folder_files
from saeprobe.tables import markdown

SWEEP_SCHEMA: dict[str, Any] = {
    **CELL_SCHEMA, "n_per_class": pl.Int64, "repeat": pl.Int64, "n_train": pl.Int64, "n_test": pl.Int64,
    "test_macro_f1": pl.Float64, "test_accuracy": pl.Float64, "C": pl.Float64, "subsample": pl.String,
    "regime": pl.String, "value": pl.Float64, "n_positive": pl.Int64, "n_flipped": pl.Int64,
    "majority_macro_f1": pl.Float64,  # the majority-class predictor's test macro F1 (the same for every row of a dataset)
}
# One skipped draw per row (the sweep cell files' reports, :func:`sweep_skipped`).
SKIPPED_SCHEMA: dict[str, Any] = {
    **CELL_SCHEMA, "regime": pl.String, "value": pl.Float64, "n_per_class": pl.Int64, "repeat": pl.Int64,
    "n_train": pl.Int64, "reason": pl.String,
}
REGIME_ORDER = {"size": 0, "imbalance": 1, "label_noise": 2}
# The config key listing each regime's values (named when a value should be dropped).
CONFIG_KEYS = {"size": "sweep.sizes", "imbalance": "sweep.imbalance", "label_noise": "sweep.label_noise"}
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


def sweep_skipped(paths: Iterable[str | Path]) -> pl.DataFrame:
    """The draws the sweep jobs skipped, one row per (cell, draw) (:data:`SKIPPED_SCHEMA`), read from
    the cell files' reports (``cell`` and ``skipped_draws``); files written without them add none."""
    rows = []
    for path in folder_files(paths, "parquet"):
        report = read_report(path)
        cell = report.get("cell")
        for draw in report.get("skipped_draws", []) if cell else []:
            rows.append({**cell, "family": family_of(cell["source"]), **draw})
    return pl.DataFrame(rows, schema=SKIPPED_SCHEMA) if rows else pl.DataFrame(schema=SKIPPED_SCHEMA)


def sweep_summary(df: pl.DataFrame, skipped: pl.DataFrame | None = None) -> pl.DataFrame:
    """Mean, std (over repeats) and count of test macro F1 per cell, regime and value; mean train rows.

    ``skipped`` (:func:`sweep_skipped`): ``skipped`` counts each (cell, regime, value)'s skipped
    draws, and a value none of whose repeats was fitted gets a row with ``repeats`` 0 and a null mean.
    """
    keys = ["dataset", "model", "family", "source", "layer", "pooling", "binarize", "regime", "value", "n_per_class"]
    fitted = _normalised(df).select(*keys, "test_macro_f1", "n_train", pl.lit(0, pl.Int64).alias("skip"))
    parts = [fitted]
    if skipped is not None and skipped.height:
        parts.append(skipped.select(*keys, pl.lit(None, pl.Float64).alias("test_macro_f1"), "n_train",
                                    pl.lit(1, pl.Int64).alias("skip")).cast(fitted.schema))  # type: ignore[arg-type]
    done = pl.col("skip") == 0
    return (pl.concat(parts).group_by(keys, maintain_order=True)
            .agg(pl.col("test_macro_f1").mean().alias("mean"), pl.col("test_macro_f1").std().alias("std"),
                 done.sum().cast(pl.UInt32).alias("repeats"), pl.col("n_train").filter(done).mean().alias("n_train"),
                 pl.col("skip").sum().cast(pl.UInt32).alias("skipped"))
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
    cell = pl.Series("cell", [_cell(m, sd, k) for m, sd, k in zip(part["mean"], part["std"], part["skipped"],
                                                                  strict=True)], dtype=pl.String)
    return (part.with_columns(cell, column.alias("size"))
            .pivot(on="size", index=["family", "model", "source", "layer", "pooling", "binarize"], values="cell")
            .select("family", "model", "source", "layer", "pooling", "binarize", *names)
            .with_columns(pl.col("model", "layer", "pooling", "binarize").cast(pl.String).fill_null("-")))


def _cell(mean: float | None, std: float | None, skipped: int) -> str:
    """'mean ± std' of a value's repeats, '(k skipped)' after it, or 'skipped' when no repeat was fitted."""
    if mean is None:
        return "skipped"
    text = f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"
    return f"{text} ({skipped} skipped)" if skipped else text


def _skipped_note(part: pl.DataFrame) -> list[str]:
    """Markdown lines naming one dataset's skipped draws per (regime, value) and the values to drop."""
    part = part.filter(pl.col("skipped") > 0)
    if part.is_empty():
        return []
    lines = ["Skipped draws (cross-validation impossible on the draw, e.g. a class in a single train group of a "
             "grouped dataset; left out of the means):", ""]
    for (regime, value), block in part.group_by(["regime", "value"], maintain_order=True):
        shown = "all" if value is None else f"{value:g}"
        what = f"size {shown} per class" if regime == "size" else f"{regime.replace('_', ' ')} {shown}"
        line = f"- {what}: {int(block['skipped'].sum())} draws in {block.height} cells"
        if (block["repeats"] == 0).all():
            line += (f"; no repeat can be fitted in any cell: drop {'null' if value is None else shown} from "
                     f"`{CONFIG_KEYS.get(regime, regime)}`")
        lines.append(line)
    return [*lines, ""]


def sweep_markdown(df: pl.DataFrame, skipped: pl.DataFrame | None = None) -> str:
    """Per dataset and regime: one row per feature cell, one column per value, cells 'mean ± std' of test macro F1.

    A table of size rows only reads as it did before the other regimes (one table per dataset).
    ``skipped`` (:func:`sweep_skipped`): the skipped draws are marked in the cells ('(k skipped)',
    'skipped') and listed per dataset with the values to drop from the config.
    """
    summary = sweep_summary(df, skipped)
    regimes = set(summary["regime"].to_list())
    if regimes <= {"size"}:
        out = ["# Training-set size sweep: test macro F1 (mean ± std over repeats)", "", SIZE_NOTE, ""]
        for (dataset,), part in summary.group_by(["dataset"], maintain_order=True):
            out += [f"## {dataset}", "", markdown(_wide(part, "size")), "", *_skipped_note(part)]
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
        out += ["", *_skipped_note(part)]
    return "\n".join(out)

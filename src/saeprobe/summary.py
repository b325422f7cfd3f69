"""A summary a reader can trust: per dataset, which family wins, with intervals; win/tie/loss counts.

Built from the tables of :mod:`saeprobe.tables`, :mod:`saeprobe.comparisons` and
:mod:`saeprobe.ksparse_tables` (no probe is refitted, nothing is selected on test):

- per (dataset, model), every family and probe kind's CV-selected configuration — SAE and
  hidden-state linear probes, TF-IDF, each strong baseline, and the k-sparse probes at each k
  (the CV-best ranking, source, layer and pooling at that k) —
  with its test macro F1 and interval, sorted best first, with the SAE probe's paired verdict
  against it (win / tie / loss: the interval of SAE − it excludes 0, or not);
- win / tie / loss counts of the SAE probe across datasets, models and layers
  (:func:`saeprobe.comparisons.win_tie_loss`) and of SAE against hidden k-sparse probes per k.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from saeprobe.comparisons import describe, win_tie_loss
from saeprobe.tables import markdown

SUMMARY_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "entry": pl.String, "configuration": pl.String,
    "test_macro_f1": pl.Float64, "test_macro_f1_lo": pl.Float64, "test_macro_f1_hi": pl.Float64,
    "majority_macro_f1": pl.Float64, "flag": pl.String, "sae_minus_this": pl.Float64, "ci_lo": pl.Float64,
    "ci_hi": pl.Float64, "sae_verdict": pl.String,
}


def _cv_best(df: pl.DataFrame) -> dict[str, Any] | None:
    if df.is_empty():
        return None
    return df.sort("cv_macro_f1", descending=True, nulls_last=True, maintain_order=True).row(0, named=True)


def summary(grid: pl.DataFrame, comparisons: pl.DataFrame, ksparse: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per (dataset, model, entry) as in the module docstring (schema :data:`SUMMARY_SCHEMA`)."""
    rows = []
    best_cmp = comparisons.filter(pl.col("scope") == "best")
    sae_units = grid.filter((pl.col("family") == "sae") & (pl.col("probe") == "logreg")).select("dataset", "model")
    for dataset, model in sae_units.unique(maintain_order=True).iter_rows():
        entries = []
        others = grid.filter((pl.col("dataset") == dataset) & ((pl.col("model") == model) | (pl.col("family") == "tfidf")))
        for (family, probe), part in others.group_by(["family", "probe"], maintain_order=True):
            row = _cv_best(part)
            assert row is not None
            name = "tfidf" if family == "tfidf" else f"{family} · {probe}"
            verdict = best_cmp.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)
                                      & (pl.col("b_family") == family) & (pl.col("b_probe") == probe))
            entries.append((name, row, verdict.row(0, named=True) if verdict.height else None))
        if ksparse is not None and not ksparse.is_empty():
            ks = ksparse.filter((pl.col("dataset") == dataset) & (pl.col("model") == model))
            for (family, k), part in ks.group_by(["family", "k"], maintain_order=True):
                row = _cv_best(part)  # over sources, layers, poolings and rankings
                assert row is not None
                entries.append((f"{family} · k-sparse k={k}", {**row, "probe": "logreg"}, None))
        for name, row, cmp in entries:
            rows.append({"dataset": dataset, "model": model, "entry": name, "configuration": describe(row),
                         "test_macro_f1": row["test_macro_f1"], "test_macro_f1_lo": row["test_macro_f1_lo"],
                         "test_macro_f1_hi": row["test_macro_f1_hi"], "majority_macro_f1": row["majority_macro_f1"],
                         "flag": row["flag"], "sae_minus_this": cmp["difference"] if cmp else None,
                         "ci_lo": cmp["ci_lo"] if cmp else None, "ci_hi": cmp["ci_hi"] if cmp else None,
                         "sae_verdict": cmp["verdict"] if cmp else None})
    df = pl.DataFrame(rows, schema=SUMMARY_SCHEMA, orient="row")
    return df.sort(["dataset", "model", "test_macro_f1"], descending=[False, False, True], nulls_last=True,
                   maintain_order=True)


def summary_markdown(df: pl.DataFrame, comparisons: pl.DataFrame, ksparse_comparisons: pl.DataFrame | None,
                     level: float) -> str:
    """The report's summary page: per dataset and model the ranked entries, then the win/tie/loss counts."""
    pct = f"{level:.0%}"
    out = ["# Summary: which features classify best, with uncertainty", "",
           f"Every configuration is chosen on the CV macro F1 of the train split; [lo, hi] = {pct} stratified bootstrap "
           f"interval over test documents. `SAE − this` is the paired bootstrap difference of the CV-selected SAE linear "
           "probe against that row (same resampled documents); the SAE probe wins or loses only when its interval "
           "excludes 0. `flag` marks degenerate rows (few active features, one class predicted, not above the majority "
           "class).", ""]
    for (dataset, model), part in df.group_by(["dataset", "model"], maintain_order=True):
        leader = part.row(0, named=True)
        table = part.select(
            "entry", "configuration",
            pl.format("{} [{}, {}]", *(pl.col(c).round(3) for c in ("test_macro_f1", "test_macro_f1_lo", "test_macro_f1_hi")))
            .alias("test macro F1"),
            pl.col("majority_macro_f1").round(3).alias("majority"),
            pl.when(pl.col("sae_minus_this").is_not_null())
            .then(pl.format("{} [{}, {}] {}", *(pl.col(c).round(3) for c in ("sae_minus_this", "ci_lo", "ci_hi")),
                            pl.col("sae_verdict"))).alias("SAE − this"), "flag")
        out += [f"## {dataset} · {model}", "", f"Highest test macro F1: **{leader['entry']}** ({leader['configuration']}, "
                f"{leader['test_macro_f1']:.3f} [{leader['test_macro_f1_lo']:.3f}, {leader['test_macro_f1_hi']:.3f}]).", "",
                markdown(table)]
    out += ["## Win / tie / loss of the SAE probe", "",
            "scope best: per dataset and model, against each family's CV-selected probe; scope layer: per dataset, model "
            "and layer, against the hidden-state probe at the same layer.", "", markdown(win_tie_loss(comparisons))]
    if ksparse_comparisons is not None and not ksparse_comparisons.is_empty():
        counts = (ksparse_comparisons.group_by(["ranking", "k"], maintain_order=True)
                  .agg((pl.col("verdict") == v).sum().alias(v) for v in ("win", "tie", "loss")).sort(["ranking", "k"]))
        out += ["### k-sparse: SAE against hidden states at each k (over datasets and models)", "", markdown(counts)]
    return "\n".join(out)

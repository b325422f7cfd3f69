"""A summary a reader can trust: per dataset, every family's CV-chosen probe, ordered on CV, with paired verdicts.

Built from the tables of :mod:`saeprobe.tables`, :mod:`saeprobe.comparisons` and
:mod:`saeprobe.ksparse_tables` (no probe is refitted, nothing is selected or ordered on test):

- per (dataset, model), every family and probe kind's configuration chosen on CV by the
  one-standard-error rule (:func:`saeprobe.tables.cv_bands`) — SAE and hidden-state linear
  probes, TF-IDF, each strong baseline, and the k-sparse probes at each k (chosen over every
  ranking, source, layer and pooling at that k) — with its CV macro F1 and standard error, its
  test macro F1 and interval, **ordered by CV macro F1** (best first), and the SAE probe's paired
  verdict against it: win / tie / loss when the interval of SAE − it excludes 0 (or not) for every
  pair of the two bands, ``unstable`` when those pairs disagree
  (:data:`saeprobe.comparisons.UNSTABLE`). Every row but the SAE probe's own carries its paired
  test: the grid's from ``comparisons`` (scope ``best``), the k-sparse rows' computed here (SAE
  linear probe − k-sparse probe, the same band rule). The headline of each dataset
  (:func:`summary_markdown`) names the entry with the highest CV macro F1 and the entries CV
  cannot tell apart from it (within one standard error); the test score never picks it;
- win / tie / loss / unstable counts of the SAE probe across datasets, models and layers
  (:func:`saeprobe.comparisons.win_tie_loss`) and of SAE against hidden k-sparse probes per k
  (the symmetric rows, ``ranking = "best"``, of ``ksparse_comparisons``).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from saeprobe.comparisons import UNSTABLE_MEANING, VERDICTS, PairedScores, bands, describe, win_tie_loss
from saeprobe.ksparse_tables import BEST_RANKING
from saeprobe.selection import one_se_band
from saeprobe.tables import markdown

SUMMARY_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "entry": pl.String, "configuration": pl.String,
    "cv_macro_f1": pl.Float64, "cv_macro_f1_se": pl.Float64, "band_size": pl.Int64,
    "test_macro_f1": pl.Float64, "test_macro_f1_lo": pl.Float64, "test_macro_f1_hi": pl.Float64,
    "majority_macro_f1": pl.Float64, "flag": pl.String, "sae_minus_this": pl.Float64, "ci_lo": pl.Float64,
    "ci_hi": pl.Float64, "p_value": pl.Float64, "sae_verdict": pl.String, "band_verdicts": pl.String,
}
SAE_ENTRY = "sae · logreg"


def summary(grid: pl.DataFrame, comparisons: pl.DataFrame, ksparse: pl.DataFrame | None = None, *,
            resamples: int, level: float, seed: int) -> pl.DataFrame:
    """One row per (dataset, model, entry) as in the module docstring (schema :data:`SUMMARY_SCHEMA`).

    Args:
        grid: ``grid.parquet``. comparisons: ``comparisons.parquet`` (its scope ``best`` rows give
            the grid entries' verdicts). ksparse: ``ksparse.parquet`` or None.
        resamples, level, seed: the bootstrap of the SAE − k-sparse comparisons (the run's
            ``bootstrap`` section and seed, as for ``comparisons``).
    Returns:
        Rows sorted by dataset, model, then CV macro F1 (highest first; ties: table order).
    Raises:
        CacheError: a k-sparse comparison's predictions file is missing or damaged.
    """
    rows = []
    best_cmp = comparisons.filter(pl.col("scope") == "best")
    scores = PairedScores(resamples=resamples, level=level, seed=seed)
    by_kind = bands(grid, ["dataset", "model", "family", "probe"])
    by_k = (bands(ksparse, ["dataset", "model", "family", "k"])
            if ksparse is not None and not ksparse.is_empty() else {})
    for (dataset, model, family, probe), sae_band in by_kind.items():
        if (family, probe) != ("sae", "logreg"):
            continue
        entries = []
        for (d, m, f, p), band in by_kind.items():
            if d != dataset or not (m == model or f == "tfidf"):
                continue
            name = "tfidf" if f == "tfidf" else f"{f} · {p}"
            cmp = best_cmp.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)
                                  & (pl.col("b_family") == f) & (pl.col("b_probe") == p))
            entries.append((name, band, cmp.row(0, named=True) if cmp.height else None))
        for (d, m, f, k), band in by_k.items():
            if (d, m) == (dataset, model):
                entries.append((f"{f} · k-sparse k={k}", band, scores.compare_bands(sae_band, band)))
        for name, band, cmp in entries:
            row = next(r for r in band if r["chosen"])
            rows.append({"dataset": dataset, "model": model, "entry": name, "configuration": describe(row),
                         "cv_macro_f1": row["cv_macro_f1"], "cv_macro_f1_se": row["cv_macro_f1_se"],
                         "band_size": len(band), "test_macro_f1": row["test_macro_f1"],
                         "test_macro_f1_lo": row["test_macro_f1_lo"], "test_macro_f1_hi": row["test_macro_f1_hi"],
                         "majority_macro_f1": row["majority_macro_f1"], "flag": row["flag"],
                         "sae_minus_this": cmp["difference"] if cmp else None, "ci_lo": cmp["ci_lo"] if cmp else None,
                         "ci_hi": cmp["ci_hi"] if cmp else None, "p_value": cmp["p_value"] if cmp else None,
                         "sae_verdict": cmp["verdict"] if cmp else None,
                         "band_verdicts": cmp["band_verdicts"] if cmp else None})
    df = pl.DataFrame(rows, schema=SUMMARY_SCHEMA, orient="row")
    return df.sort(["dataset", "model", "cv_macro_f1"], descending=[False, False, True], nulls_last=True,
                   maintain_order=True)


def _leader(part: pl.DataFrame) -> str:
    """The headline of one dataset and model: the entry with the highest CV macro F1, and those CV cannot tell apart from it."""
    lead = part.row(0, named=True)
    within = one_se_band(part["cv_macro_f1"].fill_null(float("nan")).to_numpy(),
                         part["cv_macro_f1_se"].fill_null(float("nan")).to_numpy())
    close = [e for e, w in zip(part["entry"].to_list(), within, strict=True) if w and e != lead["entry"]]
    text = (f"Highest CV macro F1: **{lead['entry']}** ({lead['configuration']}; CV {lead['cv_macro_f1']:.3f} ± "
            f"{lead['cv_macro_f1_se']:.3f}; test {lead['test_macro_f1']:.3f} [{lead['test_macro_f1_lo']:.3f}, "
            f"{lead['test_macro_f1_hi']:.3f}]).")
    if close:
        text += f" Within one standard error of it on CV: {', '.join(close)}."
    return text


def summary_markdown(df: pl.DataFrame, comparisons: pl.DataFrame, ksparse_comparisons: pl.DataFrame | None,
                     level: float) -> str:
    """The report's summary page: per dataset and model the entries ordered on CV, then the win/tie/loss counts."""
    pct = f"{level:.0%}"
    out = ["# Summary: which features classify best, with uncertainty", "",
           "Every configuration is chosen on the CV macro F1 of the train split by the one-standard-error rule (the "
           "simplest configuration within one standard error of the best), and the entries are ordered by CV macro F1 "
           f"(mean ± standard error over folds), never by the test score; [lo, hi] = {pct} stratified bootstrap interval "
           "over test documents. `SAE − this` is the paired bootstrap difference of the CV-chosen SAE linear probe "
           "against that row (same resampled documents); the SAE probe wins or loses only when its interval excludes 0 "
           "for every pair of configurations CV cannot tell apart on either side (`band pairs`: the verdict of each "
           f"pair); `unstable` = {UNSTABLE_MEANING}. `flag` marks degenerate rows (few active features, one class "
           "predicted, not above the majority class).", ""]
    for (dataset, model), part in df.group_by(["dataset", "model"], maintain_order=True):
        table = part.select(
            "entry", "configuration",
            pl.format("{} ± {}", *(pl.col(c).round(3) for c in ("cv_macro_f1", "cv_macro_f1_se"))).alias("CV macro F1"),
            pl.format("{} [{}, {}]", *(pl.col(c).round(3) for c in ("test_macro_f1", "test_macro_f1_lo", "test_macro_f1_hi")))
            .alias("test macro F1"),
            pl.col("majority_macro_f1").round(3).alias("majority"),
            pl.when(pl.col("sae_minus_this").is_not_null())
            .then(pl.format("{} [{}, {}] {}", *(pl.col(c).round(3) for c in ("sae_minus_this", "ci_lo", "ci_hi")),
                            pl.col("sae_verdict"))).alias("SAE − this"),
            pl.col("band_verdicts").alias("band pairs"), "flag")
        out += [f"## {dataset} · {model}", "", _leader(part), "", markdown(table)]
    out += ["## Win / tie / loss of the SAE probe", "",
            "scope best: per dataset and model, against each family's CV-chosen probe; scope layer: per dataset, model "
            f"and layer, against the hidden-state probe at the same layer; unstable: {UNSTABLE_MEANING}.", "",
            markdown(win_tie_loss(comparisons))]
    if ksparse_comparisons is not None and not ksparse_comparisons.is_empty():
        symmetric = ksparse_comparisons.filter(pl.col("ranking") == BEST_RANKING)
        counts = (symmetric.group_by("k", maintain_order=True)
                  .agg((pl.col("verdict") == v).sum().alias(v) for v in VERDICTS).sort("k"))
        out += ["### k-sparse: SAE against hidden states at each k (over datasets and models)", "",
                "Each side chosen on CV over every ranking run (and source, layer, pooling), so neither is held to a "
                "ranking that suits it less; per-ranking rows: `ksparse_comparisons`.", "", markdown(counts)]
    return "\n".join(out)

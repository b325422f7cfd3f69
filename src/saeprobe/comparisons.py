"""Paired comparisons of probes on the same test documents: does "SAE beats hidden" hold?

Method: for two probes of one dataset, the difference of their test macro F1 (a − b) and its
``level`` interval from the **paired** stratified bootstrap — both probes' predictions are
scored on the same resampled documents (:func:`saeprobe.bootstrap.paired_difference`), with a
two-sided bootstrap p-value. A comparison is a ``win`` (``loss``) only when its interval lies
above (below) 0, else a ``tie``. No probe is refitted: every probe's per-document test
predictions are stored beside its result (:mod:`saeprobe.predictions`).

**Verdicts robust to the choice** (issue 21). Each side of a comparison is a configuration
chosen on CV by the one-standard-error rule (:func:`saeprobe.tables.cv_bands`), and CV cannot
tell it apart from the other configurations of its *band*. The difference, interval and p-value
reported are those of the two chosen configurations; the verdict is reported only when **every**
pair (a_i of a's band, b_j of b's band) gives the same verdict; otherwise it is ``unstable``
(:data:`UNSTABLE`): not decided — the verdict depends on which of the configurations CV cannot
tell apart is picked. ``band_a`` / ``band_b`` are the band sizes, ``band_verdicts`` the count of
each verdict over the ``band_a × band_b`` pairs (e.g. ``win 3, tie 1``). Every pair is
computed, none dropped: each probe's resampled scores are computed once
(:class:`PairedScores`) and each pair is then a difference of two (B,) arrays
(:func:`saeprobe.bootstrap.compare_scores`), identical to :func:`paired` on that pair.

What is compared (:func:`comparisons`), the "a" side always the SAE linear probe:

- ``scope = best``: per (dataset, model), the SAE probe against every other (family, probe
  kind) of that dataset — hidden states with the same model's logistic regression and each
  strong baseline, TF-IDF, SAE features under a strong baseline;
- ``scope = layer``: per (dataset, model, layer), the SAE probe at that layer against the
  hidden-state probe at that layer — the win/tie/loss count across datasets and layers.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from saeprobe import layout, predictions
from saeprobe.bootstrap import compare_scores, resampled_scores, stratified_resamples
from saeprobe.errors import DataError
from saeprobe.tables import cv_bands

#: The verdict of a comparison whose band pairs disagree.
UNSTABLE = "unstable"
UNSTABLE_MEANING = ("not decided: the verdict depends on which of the configurations CV cannot tell apart "
                    "is picked")
VERDICTS = ("win", "tie", "loss", UNSTABLE)
BAND_COLUMNS = ["band_a", "band_b", "band_verdicts"]

COMPARISON_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "scope": pl.String, "layer": pl.Int64, "metric": pl.String,
    "a": pl.String, "a_test_macro_f1": pl.Float64, "b_family": pl.String, "b_probe": pl.String, "b": pl.String,
    "b_test_macro_f1": pl.Float64, "difference": pl.Float64, "ci_lo": pl.Float64, "ci_hi": pl.Float64,
    "p_value": pl.Float64, "verdict": pl.String, "band_a": pl.Int64, "band_b": pl.Int64,
    "band_verdicts": pl.String, "n_test": pl.Int64,
}


def describe(row: dict[str, Any]) -> str:
    """A short readable name of a grid row: ``source L<layer> <pooling>[ >t] [probe]``, ``tfidf``, ``… k=<k>``."""
    if row["family"] == "tfidf":
        return "tfidf"
    parts = [row["source"], f"L{row['layer']}", row["pooling"]]
    if row.get("binarize") is not None:
        parts.append(f">{row['binarize']:g}")
    if row.get("probe") not in (None, "logreg"):
        parts.append(row["probe"])
    if row.get("k") is not None:
        parts.append(f"k={row['k']}" + (f" {row['ranking']}" if row.get("ranking") else ""))
    return " ".join(str(p) for p in parts)


class PairedScores:
    """Paired bootstrap comparisons among many probes, each probe's scores computed once.

    A probe (a table row with ``result`` and optionally ``predictions_prefix``) is loaded and
    scored on the full test split and on the ``resamples`` stratified resamples of its labels
    (:func:`saeprobe.bootstrap.stratified_resamples` with ``seed``: the same resamples for every
    probe of a dataset) the first time it is compared; every comparison is then
    :func:`saeprobe.bootstrap.compare_scores` on two cached (B,) arrays — the numbers
    :func:`saeprobe.bootstrap.paired_difference` gives on that pair. Memory: B floats per probe
    seen (its test documents and labels are kept as a digest), and the (B, n_test) resample
    indices of the last few label vectors.
    """

    _KEEP_RESAMPLES = 4

    def __init__(self, *, resamples: int, level: float, seed: int, metric: str = "macro_f1") -> None:
        self.resamples, self.level, self.seed, self.metric = resamples, level, seed, metric
        self._probes: dict[tuple[str, str], tuple[bytes, int, float, np.ndarray]] = {}
        self._idx: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def _resamples(self, y: np.ndarray) -> np.ndarray:
        key = y.astype(np.int64).tobytes()
        if key not in self._idx:
            self._idx[key] = stratified_resamples(y, self.resamples, self.seed)
            while len(self._idx) > self._KEEP_RESAMPLES:
                self._idx.popitem(last=False)
        self._idx.move_to_end(key)
        return self._idx[key]

    def scores(self, row: dict[str, Any]) -> tuple[bytes, int, float, np.ndarray]:
        """(digest of its test doc_ids and labels, n_test, full-split metric, (B,) resampled metric) of one probe.

        Raises:
            CacheError: its predictions file is missing or damaged. DataError: bad predictions.
        """
        key = (str(row["result"]), row.get("predictions_prefix") or "")
        if key not in self._probes:
            p = predictions.load(layout.predictions_of(key[0]), prefix=key[1])
            y, n_classes = p["y"], p["proba"].shape[1]
            full = resampled_scores(y, p["pred"], p["proba"], np.arange(len(y))[None, :], n_classes)[self.metric]
            resampled = resampled_scores(y, p["pred"], p["proba"], self._resamples(y), n_classes)[self.metric]
            if full is None or resampled is None:
                raise DataError(f"{key[0]}: {self.metric} is not defined on its test labels (AUROC needs two classes)")
            docs = hashlib.blake2b(np.asarray(p["doc_id"], dtype=np.int64).tobytes(), digest_size=16)
            docs.update(np.asarray(y, dtype=np.int64).tobytes())
            self._probes[key] = (docs.digest(), len(y), float(full[0]), resampled)
        return self._probes[key]

    def compare(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """a − b: difference, ci_lo, ci_hi, p_value, verdict (win/loss/tie), n_test.

        Raises:
            DataError: the two probes were not scored on the same test documents with the same labels.
            CacheError: a predictions file is missing or damaged.
        """
        docs_a, n_test, full_a, res_a = self.scores(a)
        docs_b, _, full_b, res_b = self.scores(b)
        if docs_a != docs_b:
            raise DataError(f"{a['result']} and {b['result']} were not scored on the same test documents: "
                            "a paired comparison needs the same split")
        d = compare_scores(full_a, full_b, res_a, res_b, level=self.level)
        return {"difference": d["difference"], "ci_lo": d["ci"][0], "ci_hi": d["ci"][1], "p_value": d["p_value"],
                "verdict": d["verdict"], "n_test": n_test}

    def compare_bands(self, a_band: Sequence[dict[str, Any]], b_band: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The chosen a − the chosen b, with the verdict only if every band pair agrees (module docstring).

        Args:
            a_band, b_band: the band rows of each side (:func:`saeprobe.tables.cv_bands`), each
                with exactly one row whose ``chosen`` is true.
        Returns:
            :meth:`compare` of the chosen pair, its ``verdict`` replaced by :data:`UNSTABLE` when the
            pairs disagree, plus ``band_a``, ``band_b`` and ``band_verdicts`` (e.g. ``win 3, tie 1``).
        Raises:
            ValueError: a band without exactly one chosen row. DataError, CacheError: as :meth:`compare`.
        """
        a, b = _chosen(a_band), _chosen(b_band)
        out = self.compare(a, b)
        counts = Counter(self.compare(ai, bj)["verdict"] for ai in a_band for bj in b_band)
        if len(counts) > 1:
            out["verdict"] = UNSTABLE
        out.update(band_a=len(a_band), band_b=len(b_band), band_verdicts=band_verdicts(counts))
        return out


def _chosen(band: Sequence[dict[str, Any]]) -> dict[str, Any]:
    picked = [row for row in band if row.get("chosen")]
    if len(picked) != 1:
        raise ValueError(f"a band needs exactly one chosen row, got {len(picked)} of {len(band)}")
    return picked[0]


def band_verdicts(counts: Counter) -> str:
    """``win 3, tie 1``: the count of each verdict over a comparison's band pairs (zero counts left out)."""
    return ", ".join(f"{v} {counts[v]}" for v in ("win", "tie", "loss") if counts.get(v))


def paired(a: dict[str, Any], b: dict[str, Any], *, resamples: int, level: float, seed: int,
           metric: str = "macro_f1") -> dict[str, Any]:
    """Paired bootstrap difference (a − b) of two grid rows' test ``metric``.

    Args:
        a, b: rows with ``result`` (the result JSON; its predictions file is read) and optionally
            ``predictions_prefix`` (a probe inside a multi-probe file, e.g. k-sparse ``k5.``).
    Returns:
        difference, ci_lo, ci_hi, p_value, verdict (win/loss/tie), n_test.
    Raises:
        DataError: the two probes were not scored on the same test documents with the same labels.
        CacheError: a predictions file is missing or damaged.
    """
    return PairedScores(resamples=resamples, level=level, seed=seed, metric=metric).compare(a, b)


def bands(df: pl.DataFrame, keys: Sequence[str]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Group key → the band rows of that group (:func:`saeprobe.tables.cv_bands`), groups in table order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in cv_bands(df, keys).iter_rows(named=True):
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def comparisons(grid_df: pl.DataFrame, *, resamples: int, level: float, seed: int) -> pl.DataFrame:
    """Every paired comparison of the module docstring, one row each (schema :data:`COMPARISON_SCHEMA`)."""
    rows = []
    scores = PairedScores(resamples=resamples, level=level, seed=seed)

    def add(a_band: list[dict[str, Any]], b_band: list[dict[str, Any]] | None, scope: str, layer: int | None) -> None:
        if not b_band:
            return
        a, b = _chosen(a_band), _chosen(b_band)
        rows.append({"dataset": a["dataset"], "model": a["model"], "scope": scope, "layer": layer, "metric": "macro_f1",
                     "a": describe(a), "a_test_macro_f1": a["test_macro_f1"], "b_family": b["family"],
                     "b_probe": b["probe"], "b": describe(b), "b_test_macro_f1": b["test_macro_f1"],
                     **scores.compare_bands(a_band, b_band)})

    by_kind = bands(grid_df, ["dataset", "model", "family", "probe"])
    linear = grid_df.filter(pl.col("family").is_in(["sae", "hidden"]) & (pl.col("probe") == "logreg"))
    by_layer = bands(linear, ["dataset", "model", "family", "probe", "layer"])
    for (dataset, model, family, probe), a_band in by_kind.items():
        if (family, probe) != ("sae", "logreg"):
            continue
        for (d, m, f, p), b_band in by_kind.items():
            if d == dataset and (m == model or f == "tfidf") and (f, p) != ("sae", "logreg"):
                add(a_band, b_band, "best", None)
        layers = sorted({key[4] for key in by_layer if key[:4] == (dataset, model, "sae", "logreg")})
        for layer in layers:
            add(by_layer[(dataset, model, "sae", "logreg", layer)], by_layer.get((dataset, model, "hidden", "logreg", layer)),
                "layer", layer)
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA, orient="row")


def with_comparisons(best_df: pl.DataFrame, comparisons_df: pl.DataFrame) -> pl.DataFrame:
    """``best_df`` (CV-selected) with, on each SAE linear-probe row, its paired difference against
    the hidden-state linear probe of the same model (``vs_hidden_*``) and against TF-IDF
    (``vs_tfidf_*``): difference, ci_lo, ci_hi, p_value, verdict (``unstable`` when the band pairs
    disagree) and band_verdicts."""
    out = best_df
    for name, family in (("vs_hidden", "hidden"), ("vs_tfidf", "tfidf")):
        part = comparisons_df.filter((pl.col("scope") == "best") & (pl.col("b_family") == family)
                                     & (pl.col("b_probe") == "logreg"))
        part = part.select("dataset", "model", *[pl.col(c).alias(f"{name}_{c}") for c in
                                                 ("difference", "ci_lo", "ci_hi", "p_value", "verdict", "band_verdicts")])
        part = part.with_columns(family=pl.lit("sae"), probe=pl.lit("logreg"))
        out = out.join(part, on=["dataset", "model", "family", "probe"], how="left", nulls_equal=True,
                       maintain_order="left")
    return out


def win_tie_loss(comparisons_df: pl.DataFrame) -> pl.DataFrame:
    """Counts of win / tie / loss / unstable of the SAE probe per (scope, b_family, b_probe), over
    datasets, models and layers (``unstable``: :data:`UNSTABLE`, counted apart, never as a tie)."""
    if comparisons_df.is_empty():
        return pl.DataFrame(schema={"scope": pl.String, "against": pl.String,
                                    **{v: pl.UInt32 for v in VERDICTS}, "comparisons": pl.UInt32})
    against = pl.concat_str(pl.col("b_family"), pl.lit(" · "), pl.col("b_probe"))
    return (comparisons_df.with_columns(against=against)
            .group_by(["scope", "against"], maintain_order=True)
            .agg((pl.col("verdict") == v).sum().alias(v) for v in VERDICTS)
            .with_columns(comparisons=pl.sum_horizontal(VERDICTS)))


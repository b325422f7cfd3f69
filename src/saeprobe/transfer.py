"""Cross-lingual transfer matrices.

**Transfer** (docs/DESIGN.md §5; Gallifant et al. 2025 §5, cross-lingual): for every language A of a
dataset's ``lang`` column, one probe is fitted on A's *train* rows only — C chosen by stratified
CV on those rows (:func:`saeprobe.probes.fit_cv`) — and that one fitted probe is scored on the
*test* rows of every language B. The diagonal (A = B) is the in-language score. Test rows never
enter fitting or selection; other languages' train rows are never read by A's probe.

A language that cannot be a train language (no train rows, a single class, or a class with a
single train example, which stratified CV cannot split) is skipped, logged and counted in the
report; likewise a language with no test rows as a test language. Rows whose language is
missing (null) are counted and left out.

Output frames, files and the aggregated table: :mod:`saeprobe.transfer_tables`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from saeprobe.bootstrap import chance_scores, majority_scores
from saeprobe.errors import DataError
from saeprobe.probes import _metrics, as_features, fit_cv, predict
from saeprobe.tables import flags

log = logging.getLogger("saeprobe")


def train_problem(y: np.ndarray) -> str | None:
    """Why rows with labels ``y`` cannot train a CV-selected probe, or None."""
    if len(y) == 0:
        return "no train rows"
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return f"a single class in train (label {int(classes[0])})"
    if counts.min() < 2:
        return f"label {int(classes[counts.argmin()])} has a single train example (stratified CV needs 2)"
    return None


def transfer_matrix(x: Any, y: np.ndarray, split: np.ndarray, lang: Sequence[str | None], *, n_classes: int,
                    probe: dict[str, Any], seed: int,
                    groups: np.ndarray | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train on each language's train split, test on every language's test split.

    Args:
        x: (n_docs, n_features) features, sparse or dense; row i = doc i.
        y: (n_docs,) int labels. split: (n_docs,) 'train'/'validation'/'test'.
        lang: (n_docs,) language codes (None = unknown).
        n_classes: number of labels of the dataset. probe: keyword arguments of :func:`fit_cv`
            (Cs, cv_folds, max_iter, class_weight, tol). seed: CV folds and solver.
        groups: (n_docs,) group ids (``group_column``): CV folds keep each group together.
    Returns:
        (rows: one dict per (train_lang, test_lang) with macro_f1, accuracy, n_train, n_test, C,
        cv_macro_f1, the majority-class and chance scores of that test split, predicted_classes
        and flag (``one_class_predicted``, ``at_or_below_majority``: :func:`saeprobe.tables.flags`);
        report: languages, skipped train/test languages with reasons, rows without a language)
    Raises:
        DataError: mismatched lengths, no language at all, no language that can train, or none
        with test rows.
    """
    lang_arr = np.array([None if v is None else str(v) for v in lang], dtype=object)
    y, split = np.asarray(y), np.asarray(split)
    if not (x.shape[0] == len(y) == len(split) == len(lang_arr)):
        raise DataError(f"features have {x.shape[0]} rows, labels {len(y)}, splits {len(split)}, languages {len(lang_arr)}")
    known = np.array([v is not None for v in lang_arr], dtype=bool)
    languages = sorted(set(lang_arr[known].tolist()))
    if not languages:
        raise DataError("the dataset's lang column is empty: no languages to transfer between")
    report: dict[str, Any] = {"languages": languages, "n_rows_without_lang": int((~known).sum()),
                              "skipped_train_langs": {}, "skipped_test_langs": {}}
    if report["n_rows_without_lang"]:
        log.warning("%d rows have no language and are left out of the transfer matrix", report["n_rows_without_lang"])
    test_masks = {}
    for b in languages:
        mask = (lang_arr == b) & (split == "test")
        if mask.any():
            test_masks[b] = mask
            absent = sorted(set(range(n_classes)) - set(np.unique(y[mask]).tolist()))
            if absent:
                log.warning("language %s: its test split has no rows of classes %s; they count 0 in its macro F1",
                            b, absent)
        else:
            report["skipped_test_langs"][b] = "no test rows"
            log.warning("language %s: no test rows; skipped as a test language", b)
    if not test_masks:
        raise DataError(f"no language has test rows (languages: {languages})")
    x = as_features(x)
    rows = []
    for a in languages:
        train = (lang_arr == a) & (split == "train")
        problem = train_problem(y[train])
        if problem:
            report["skipped_train_langs"][a] = problem
            log.warning("language %s: %s; skipped as a train language", a, problem)
            continue
        try:
            model, info = fit_cv(x, y, train, seed=seed, groups=groups, **probe)
        except DataError as exc:  # e.g. grouped CV: a class in a single train group of this language
            report["skipped_train_langs"][a] = str(exc)
            log.warning("language %s: %s; skipped as a train language", a, exc)
            continue
        for b, mask in test_masks.items():
            pred, proba = predict(model, x, mask, n_classes)
            m = _metrics(y[mask], pred, proba, n_classes)
            majority = majority_scores(y[mask], n_classes)
            predicted = int(len(np.unique(pred)))
            rows.append({"train_lang": a, "test_lang": b, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
                         "n_train": info["n_train"], "n_test": m["n"], "C": info["C"], "cv_macro_f1": info["cv_macro_f1"],
                         "test_missing_classes": len(m["missing_classes"]),
                         "majority_macro_f1": majority["macro_f1"], "majority_accuracy": majority["accuracy"],
                         "chance_macro_f1": chance_scores(y[mask], n_classes)["macro_f1"], "predicted_classes": predicted,
                         "flag": flags("hidden", None, predicted, m["macro_f1"], majority["macro_f1"])})
        diag = next((r["macro_f1"] for r in rows if r["train_lang"] == a and r["test_lang"] == a), float("nan"))
        log.info("train %s (%d rows, C=%g, cv macro F1 %.3f): in-language test macro F1 %.3f", a, info["n_train"],
                 info["C"], info["cv_macro_f1"], diag)
    if not rows:
        raise DataError(f"no language can train a probe: {report['skipped_train_langs']}")
    report["n_train_langs"] = len(languages) - len(report["skipped_train_langs"])
    report["n_test_langs"] = len(test_masks)
    return rows, report

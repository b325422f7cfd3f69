"""Cross-lingual transfer matrices and probe training-set size sweeps.

**Transfer** (DESIGN.md §5; Gallifant et al. 2025 §5, cross-lingual): for every language A of a
dataset's ``lang`` column, one probe is fitted on A's *train* rows only — C chosen by stratified
CV on those rows (:func:`saeprobe.probes.fit_cv`) — and that one fitted probe is scored on the
*test* rows of every language B. The diagonal (A = B) is the in-language score. Test rows never
enter fitting or selection; other languages' train rows are never read by A's probe.

A language that cannot be a train language (no train rows, a single class, or a class with a
single train example, which stratified CV cannot split) is skipped, logged and counted in the
report; likewise a language with no test rows as a test language. Rows whose language is
missing (null) are counted and left out.

**Sweep**: per size n (train examples per class, capped at what a class has; ``None`` = the
whole train split) and repeat r, a stratified subsample of the train split is drawn
(:func:`subsample`), a probe is fitted on it with C chosen by CV on the subsample
(folds = min(cv_folds, smallest class count)) and scored on the *full* test split. The
subsample depends only on the labels, the split, ``seed``, ``n`` and ``r`` — never on the
features — so every feature source (SAE, hidden states, TF-IDF) of a dataset is fitted on
exactly the same documents and their curves are comparable. Subsamples are nested: for a
given repeat, the size-n subsample is contained in the size-m subsample for every m > n.

Output frames, files and the aggregated tables: :mod:`saeprobe.transfer_tables`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from saeprobe import data
from saeprobe.config import parse_binarize
from saeprobe.errors import DataError
from saeprobe.pooling import binarize, load_pooled
from saeprobe.probes import as_features, fit_cv, fit_probe, fit_tfidf, score

log = logging.getLogger("saeprobe")

# Salt mixed into the sweep's subsample seed so it never coincides with other uses of `seed`.
_SWEEP_SALT = 0x5EE9
UNUSED = "unused"  # split name of rows a sweep's probe neither fits nor scores


def load_cell(features: str | Path, dataset: str | Path, binarize_name: str) -> tuple[Any, pl.DataFrame, list[str]]:
    """Pooled features of one cell (binarized as named) and its prepared dataset.

    Returns:
        (x: (n_docs, n_features) CSR or dense float32, row i = doc_id i; frame sorted by doc_id; label names)
    Raises:
        DataError: the feature file and the dataset disagree on the number of documents.
    """
    frame, label_names = data.read(dataset)
    x = binarize(load_pooled(features), parse_binarize(binarize_name))
    if x.shape[0] != frame.height:
        raise DataError(f"{features}: {x.shape[0]} rows but {dataset} has {frame.height} documents")
    return x, frame, label_names


# --------------------------------------------------------------------------- transfer


def _train_problem(y: np.ndarray) -> str | None:
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
                    probe: dict[str, Any], seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train on each language's train split, test on every language's test split.

    Args:
        x: (n_docs, n_features) features, sparse or dense; row i = doc i.
        y: (n_docs,) int labels. split: (n_docs,) 'train'/'validation'/'test'.
        lang: (n_docs,) language codes (None = unknown).
        n_classes: number of labels of the dataset. probe: keyword arguments of :func:`fit_cv`
            (Cs, cv_folds, max_iter, class_weight, tol). seed: CV folds and solver.
    Returns:
        (rows: one dict per (train_lang, test_lang) with macro_f1, accuracy, n_train, n_test, C,
        cv_macro_f1; report: languages, skipped train/test languages with reasons, rows without
        a language)
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
        problem = _train_problem(y[train])
        if problem:
            report["skipped_train_langs"][a] = problem
            log.warning("language %s: %s; skipped as a train language", a, problem)
            continue
        model, info = fit_cv(x, y, train, seed=seed, **probe)
        for b, mask in test_masks.items():
            m = score(model, x, y, mask, n_classes)
            rows.append({"train_lang": a, "test_lang": b, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
                         "n_train": info["n_train"], "n_test": m["n"], "C": info["C"], "cv_macro_f1": info["cv_macro_f1"],
                         "test_missing_classes": len(m["missing_classes"])})
        diag = next((r["macro_f1"] for r in rows if r["train_lang"] == a and r["test_lang"] == a), float("nan"))
        log.info("train %s (%d rows, C=%g, cv macro F1 %.3f): in-language test macro F1 %.3f", a, info["n_train"],
                 info["C"], info["cv_macro_f1"], diag)
    if not rows:
        raise DataError(f"no language can train a probe: {report['skipped_train_langs']}")
    report["n_train_langs"] = len(languages) - len(report["skipped_train_langs"])
    report["n_test_langs"] = len(test_masks)
    return rows, report


# --------------------------------------------------------------------------- sweep


def subsample(y: np.ndarray, split: np.ndarray, n_per_class: int | None, repeat: int, seed: int) -> np.ndarray:
    """A seeded stratified subsample of the train split: at most ``n_per_class`` rows of each class.

    One permutation of the train rows is drawn from (``seed``, ``repeat``); each class keeps its
    first ``n_per_class`` rows in that order (all of them when it has fewer, or when
    ``n_per_class`` is None). Hence the subsample depends only on labels, split, seed, n and
    repeat (identical for every feature source), and sizes are nested within a repeat.

    Returns:
        (n_docs,) bool mask of the chosen train rows.
    Raises:
        ValueError: n_per_class < 1 or repeat < 0.
    """
    if n_per_class is not None and n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 or None, got {n_per_class}")
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    y, split = np.asarray(y), np.asarray(split)
    train = np.flatnonzero(split == "train")
    mask = np.zeros(len(y), dtype=bool)
    if n_per_class is None:
        mask[train] = True
        return mask
    order = np.random.default_rng([seed, repeat, _SWEEP_SALT]).permutation(train)
    for c in np.unique(y[train]):
        mask[order[y[order] == c][:n_per_class]] = True
    return mask


def subsample_id(mask: np.ndarray) -> str:
    """Short fingerprint of a subsample (equal across feature sources iff the same documents)."""
    return hashlib.sha1(np.flatnonzero(mask).astype(np.int64).tobytes()).hexdigest()[:12]


def sweep(fit: Callable[[np.ndarray], dict[str, Any]], y: np.ndarray, split: np.ndarray, *,
          sizes: Iterable[int | None], repeats: int, seed: int) -> list[dict[str, Any]]:
    """Fit ``fit`` on a subsample per (size, repeat); return one row per pair.

    Args:
        fit: takes a split array (subsampled rows 'train', all test rows 'test', the rest
            'unused') and returns a :func:`saeprobe.probes.fit_probe`-style result with ``C``,
            ``n_train`` and ``test`` metrics. Equal subsamples (e.g. a size at or above every
            class count, or the whole split in every repeat) are fitted once and reused.
        y: (n_docs,) int labels. split: (n_docs,) split names.
    Returns:
        Rows with n_per_class (None = whole train split), repeat, n_train, n_test, test_macro_f1,
        test_accuracy, C, subsample (fingerprint).
    Raises:
        DataError: no test rows; a subsample with a single class or a class with one example.
        ValueError: repeats < 1 or a size < 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    y, split = np.asarray(y), np.asarray(split)
    test = split == "test"
    if not test.any():
        raise DataError("the sweep needs test rows; the dataset has none")
    cache: dict[bytes, dict[str, Any]] = {}
    rows = []
    for n in sizes:
        for r in range(repeats):
            mask = subsample(y, split, n, r, seed)
            key = mask.tobytes()
            if key not in cache:
                problem = _train_problem(y[mask])
                if problem:
                    raise DataError(f"sweep size {n if n is not None else 'all'} per class, repeat {r}: {problem}")
                result = fit(np.where(mask, "train", np.where(test, "test", UNUSED)))
                cache[key] = result
                log.info("n_per_class=%s repeat %d: %d train rows, C=%g, test macro F1 %.3f",
                         n, r, int(mask.sum()), result["C"], result["test"]["macro_f1"])
            result = cache[key]
            rows.append({"n_per_class": n, "repeat": r, "n_train": int(mask.sum()), "n_test": result["test"]["n"],
                         "test_macro_f1": result["test"]["macro_f1"], "test_accuracy": result["test"]["accuracy"],
                         "C": result["C"], "subsample": subsample_id(mask)})
    return rows


def sweep_features(x: Any, y: np.ndarray, split: np.ndarray, *, sizes: Iterable[int | None], repeats: int,
                   n_classes: int, probe: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """:func:`sweep` of the CV-selected probe (:func:`fit_probe`) on pooled features ``x``."""
    x = as_features(x)
    return sweep(lambda s: fit_probe(x, y, s, n_classes=n_classes, seed=seed, **probe)[0], y, split,
                 sizes=sizes, repeats=repeats, seed=seed)


def sweep_tfidf(texts: list[str], y: np.ndarray, split: np.ndarray, *, sizes: Iterable[int | None], repeats: int,
                n_classes: int, tfidf: dict[str, Any], probe: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """:func:`sweep` of the TF-IDF baseline (:func:`fit_tfidf`; vocabulary fitted on each subsample only)."""
    tfidf = {k: v for k, v in tfidf.items() if k != "enabled"}
    return sweep(lambda s: fit_tfidf(texts, y, s, n_classes=n_classes, seed=seed, **tfidf, **probe), y, split,
                 sizes=sizes, repeats=repeats, seed=seed)

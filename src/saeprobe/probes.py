"""Linear probes on pooled features, and the TF-IDF bag-of-words baseline.

Method (docs/DESIGN.md §5; Gallifant et al. 2025 §3.3, corrected): scikit-learn logistic
regression, class-balanced, with the inverse regularisation ``C`` chosen by stratified k-fold
cross-validation *on the train split only* (scoring: macro F1) under the one-standard-error
rule (:mod:`saeprobe.selection`): the smallest C (the most regularised) whose CV mean is within
one standard error of the best C's. The model is refitted at that C on the whole train split
and evaluated once on the test split (macro F1 — the paper's main metric —, accuracy, AUROC,
confusion matrix); the validation split, when the dataset has one, is scored the same way.
Test rows never enter fitting or selection.

Features are scaled before the solver (``MaxAbsScaler`` for sparse SAE features, which keeps
them sparse; ``StandardScaler`` for dense hidden states); the scaler is fitted on train rows.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, make_scorer, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

from saeprobe.bootstrap import present_class_proba
from saeprobe.errors import DataError
from saeprobe.io import atomic_path, reading
from saeprobe.selection import one_se_band, one_se_choice, standard_error


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Macro-averaged F1 (the paper's main metric) over the dataset's ``n_classes`` classes.

    A class absent from both ``y_true`` and ``y_pred`` scores 0 (scikit-learn's ``labels=``
    with ``zero_division=0``): averaging over the classes present would report 0.769 for the
    confusion [[25, 15], [0, 0]], where the two-class macro F1 is 0.38. ``n_classes=None``
    averages over the classes present in either array (as the CV scorer does; stratified folds
    hold every train class).
    """
    labels = None if n_classes is None else np.arange(n_classes)
    return float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0))


# A scorer built from a function without a ``labels`` argument: sklearn 1.9's
# LogisticRegressionCV rebuilds scorers that take ``labels`` and, for the built-in
# 'f1_macro', passes ``pos_label`` twice on binary problems (TypeError).
MACRO_F1 = make_scorer(macro_f1)


def _cv(y_train: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> StratifiedKFold | StratifiedGroupKFold:
    """The CV splitter of the train rows: stratified k-fold, folds reduced to the smallest class count.

    With ``groups`` ((n_train,) group of each train row, ``group_column``): ``StratifiedGroupKFold``,
    so no group is in both a fold's fitting rows and its held-out rows; folds are further reduced to
    the number of train groups and to the fewest groups any class occurs in (so each class can be
    in every held-out fold, as stratified k-fold guarantees without groups).
    """
    smallest = int(np.bincount(y_train)[np.bincount(y_train) > 0].min())
    if smallest < 2:
        raise DataError("a class has a single train example: stratified cross-validation needs at least 2 per class")
    if groups is None:
        return StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    groups = np.asarray(groups)
    if len(groups) != len(y_train):
        raise ValueError(f"groups has {len(groups)} entries for {len(y_train)} train rows")
    pairs = np.unique(np.stack([y_train.astype(str), groups.astype(str)]), axis=1)  # (class, group) pairs present
    fewest = int(np.unique(pairs[0], return_counts=True)[1].min())
    n_groups = len(np.unique(groups))
    if fewest < 2:
        raise DataError("a class occurs in a single train group: grouped cross-validation needs every class in at "
                        "least 2 train groups")
    return StratifiedGroupKFold(n_splits=min(folds, smallest, n_groups, fewest), shuffle=True, random_state=seed)


def _metrics(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Scores of predictions on one split: n, macro_f1 (over ``n_classes``, :func:`macro_f1`),
    missing_classes, accuracy, auroc, confusion.

    Args:
        y, pred: (n,) int true and predicted classes. proba: (n, n_classes) float class probabilities.
    AUROC: None when fewer than two classes are present in ``y``; binary datasets: the AUROC of
    class 1's probability; otherwise one-vs-rest macro AUROC over the classes present in ``y``
    (two present: their binary AUROC) on the probabilities renormalised over those classes by
    :func:`saeprobe.bootstrap.present_class_proba` (a row with zero probability on every present class counts as
    uniform over them).
    """
    labels = np.arange(n_classes)
    present = np.unique(y)
    if len(present) < 2:
        auroc = None
    elif n_classes == 2:
        auroc = float(roc_auc_score(y, proba[:, 1]))
    else:
        # One-vs-rest over the classes present in this split (two present: the binary AUROC of them).
        p = present_class_proba(proba, present)
        if len(present) == 2:
            auroc = float(roc_auc_score(y == present[1], p[:, 1]))
        else:
            auroc = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present))
    return {
        "n": int(len(y)),
        "macro_f1": macro_f1(y, pred, n_classes),
        "missing_classes": sorted(set(range(n_classes)) - set(present.tolist())),
        "accuracy": float(accuracy_score(y, pred)),
        "auroc": auroc,
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
    }


def choose_solver(solver: str, sparse: bool) -> str:
    """``auto`` = ``newton-cg`` for sparse features, ``lbfgs`` for dense ones.

    On pooled SAE codes (20k documents x 65k features, ~64 active per document) newton-cg
    reaches the converged CV scores (within 0.001 macro F1) in 12 CPU-s where lbfgs needs
    26 CPU-s (tol 1e-4; measured with benchmarks/probe.py); on dense hidden states the two
    take about the same time, so lbfgs stays. Both handle multinomial problems and warm-start
    along the C path; neither densifies a sparse matrix.
    """
    if solver == "auto":
        return "newton-cg" if sparse else "lbfgs"
    return solver


def as_features(x: Any) -> sp.csr_matrix | np.ndarray:
    """Features as float64: CSR for scipy sparse input, a dense array otherwise."""
    return sp.csr_matrix(x, dtype=np.float64) if sp.issparse(x) else np.asarray(x, dtype=np.float64)


def fit_cv(x: Any, y: np.ndarray, train: np.ndarray, *, Cs: list[float], cv_folds: int = 5, max_iter: int = 500,
           class_weight: str | None = "balanced", tol: float = 1e-4, seed: int = 42, n_jobs: int = 1,
           solver: str = "auto", groups: Any = None) -> tuple[Pipeline, dict[str, Any]]:
    """Fit the scaler + logistic regression on the rows ``train``, C chosen by stratified CV on those rows only.

    Selection (the one-standard-error rule, :func:`saeprobe.selection.one_se_choice`): every C of
    ``Cs`` is scored by CV macro F1 on the same folds (``LogisticRegressionCV(refit=False)``,
    warm-started along the C path from the smallest C); the band is the Cs whose CV mean is within
    one standard error (fold std, ddof=0, / sqrt(folds)) of the best C's; the chosen C is the
    smallest C of the band (the most regularised). A plain ``LogisticRegression`` with the same
    solver, class_weight, tol, max_iter and random_state is then refitted at that C on all train
    rows. ``Cs`` are sorted and deduplicated first, so neither the scores nor the choice depend on
    their order in the config.

    Args:
        x: (n_docs, n_features) features, scipy sparse or dense (see :func:`as_features`).
        y: (n_docs,) int labels. train: (n_docs,) bool mask of the rows to fit and select on.
        Cs: candidate inverse regularisation strengths (> 0).
        groups: None, or (n_docs,) group of every row (the prepared ``group`` column): the CV folds
            then keep each group whole (:func:`_cv`); None = ungrouped stratified folds.
    Returns:
        (fitted pipeline ``scale`` -> ``logreg`` (a ``LogisticRegression`` at the chosen C),
        selection record: ``C`` (chosen), ``cv_macro_f1`` / ``cv_macro_f1_std`` /
        ``cv_macro_f1_se`` (CV mean, fold std and standard error at the chosen C),
        ``cv_best_C`` / ``cv_best_macro_f1`` (the plain argmax, for information; ties: the smaller
        C), ``cv_band_Cs`` (the Cs of the band, ascending), ``cv_scores_by_C`` / ``cv_se_by_C``
        ({f"{C:g}": CV mean / standard error}, ascending C), ``selection_rule`` ("one_se"),
        cv_folds, solver, n_train, n_features, mean_active_features, convergence_warnings (CV
        fits and refit), and cv_groups with ``groups``). Rows outside ``train`` are never read.
    Raises:
        DataError: no train rows, fewer than two classes, or a class with a single train example.
        ValueError: empty ``Cs`` or a C <= 0.
    """
    if not train.any():
        raise DataError("no train rows")
    y_train = y[train]
    if len(np.unique(y_train)) < 2:
        raise DataError("the train split has a single class")
    grid = sorted({float(c) for c in Cs})
    if not grid or grid[0] <= 0:
        raise ValueError(f"Cs must be a non-empty list of positive numbers, got {list(Cs)}")
    sparse = sp.issparse(x)
    x = as_features(x)
    groups_train = None if groups is None else np.asarray(groups)[train]
    splitter = _cv(y_train, cv_folds, seed, groups_train)
    # Grouped: the folds precomputed as (fit, held-out) index pairs (LogisticRegressionCV's cv= takes an iterable).
    cv = splitter if groups_train is None else list(splitter.split(np.zeros(len(y_train)), y_train, groups_train))
    solver = choose_solver(solver, sparse)
    scaler = MaxAbsScaler() if sparse else StandardScaler()
    lr_kwargs = dict(class_weight=class_weight, max_iter=max_iter, tol=tol, random_state=seed, solver=solver)
    path = Pipeline([
        ("scale", clone(scaler)),
        ("logreg", LogisticRegressionCV(Cs=grid, l1_ratios=(0.0,), cv=cv, scoring=MACRO_F1, refit=False, n_jobs=n_jobs,
                                        use_legacy_attributes=False, **lr_kwargs)),
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        path.fit(x[train], y_train)
        lr_cv: LogisticRegressionCV = path.named_steps["logreg"]
        scores = _cv_scores(lr_cv)  # (folds, Cs), columns in the order of ``grid``
        Cs_ = [float(c) for c in lr_cv.Cs_]
        means, stds = scores.mean(0), scores.std(0)
        ses = standard_error(stds, scores.shape[0])
        chosen = one_se_choice(means, ses, complexity=Cs_)  # lower C = more regularised
        band = one_se_band(means, ses)
        best = int(np.argmax(means))  # first maximum = the smallest C among exact ties (Cs_ ascending)
        model = Pipeline([("scale", clone(scaler)), ("logreg", LogisticRegression(C=Cs_[chosen], **lr_kwargs))])
        model.fit(x[train], y_train)
    info: dict[str, Any] = {
        "C": Cs_[chosen],
        "cv_macro_f1": float(means[chosen]),
        "cv_macro_f1_std": float(stds[chosen]),
        "cv_macro_f1_se": float(ses[chosen]),
        "cv_best_C": Cs_[best],
        "cv_best_macro_f1": float(means[best]),
        "cv_band_Cs": [c for c, inside in zip(Cs_, band, strict=True) if inside],
        "cv_scores_by_C": {f"{c:g}": float(m) for c, m in zip(Cs_, means, strict=True)},
        "cv_se_by_C": {f"{c:g}": float(e) for c, e in zip(Cs_, ses, strict=True)},
        "selection_rule": "one_se",
        "cv_folds": int(splitter.n_splits),
        "solver": solver,
        "n_train": int(train.sum()),
        "n_features": int(x.shape[1]),
        "mean_active_features": float(x[train].getnnz(axis=1).mean()) if sparse else float(x.shape[1]),
        "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    }
    if groups_train is not None:
        info["cv_groups"] = len(np.unique(groups_train))
    return model, info


def predict(model: Pipeline, x: Any, mask: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes (n,) int and probabilities (n, ``n_classes``) float of a fitted pipeline on the rows ``mask``.

    Columns of classes the probe never saw in train get probability 0.
    """
    x = as_features(x)[mask]
    proba = np.zeros((int(mask.sum()), n_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return np.asarray(model.predict(x)), proba


def fit_probe(x: Any, y: np.ndarray, split: np.ndarray, *, Cs: list[float], cv_folds: int = 5, max_iter: int = 500,
              class_weight: str | None = "balanced", tol: float = 1e-4, seed: int = 42, n_classes: int | None = None,
              n_jobs: int = 1, solver: str = "auto", groups: Any = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit a probe with C chosen by CV on the train split (one-SE rule, :func:`fit_cv`); score it on validation and test.

    Args:
        x: (n_docs, n_features) features, scipy sparse or dense; row i = doc_id i.
        y: (n_docs,) int labels. split: (n_docs,) 'train' / 'validation' / 'test'.
        Cs: candidate inverse regularisation strengths.
        solver, tol, max_iter: the solver (see :func:`choose_solver`) and its stopping rule.
            tol 1e-3 stops lbfgs and newton-cg early at large C (the CV scores of C=1 and C=10
            came out identical and the selected C changed); 1e-4 matches tol 1e-6 within 0.001.
        groups: None, or (n_docs,) group of every row: C is chosen on grouped CV folds (:func:`fit_cv`).
    Returns:
        (result dict, coefficients (n_classes or 1, n_features) in the scaled feature space, intercept).
        The result's ``predictions`` holds {split: (pred, proba)} (:func:`predict`) of the scored
        splits, numpy arrays to store beside the result (:func:`saeprobe.predictions.finish`).
    Raises:
        DataError: no train or no test rows, or fewer than two classes in train.
    """
    train, test = split == "train", split == "test"
    if not train.any() or not test.any():
        raise DataError(f"need train and test rows, got {int(train.sum())} train and {int(test.sum())} test")
    n_classes = n_classes or int(y.max()) + 1
    x = as_features(x)
    model, result = fit_cv(x, y, train, Cs=Cs, cv_folds=cv_folds, max_iter=max_iter, class_weight=class_weight,
                           tol=tol, seed=seed, n_jobs=n_jobs, solver=solver, groups=groups)
    result["predictions"] = {}
    for name, mask in (("validation", split == "validation"), ("test", test)):
        if mask.any():
            pred, proba = predict(model, x, mask, n_classes)
            result[name] = _metrics(y[mask], pred, proba, n_classes)
            result["predictions"][name] = (pred, proba)
    lr: LogisticRegression = model.named_steps["logreg"]
    return result, np.asarray(lr.coef_), np.asarray(lr.intercept_)


def fit_on_splits(x: Any, y: np.ndarray, splits: dict[int, np.ndarray], *, own: dict[str, Any] | None = None,
                  **probe_kwargs: Any) -> list[dict[str, Any]]:
    """:func:`fit_probe` once per re-drawn split (``probe.split_seeds``), for mean ± std over splits.

    Args:
        splits: split seed -> (n_docs,) split names (:func:`saeprobe.data.redraw_splits`).
        own: the :func:`fit_probe` result on the dataset's own split, or None: its row comes first,
            with ``split_seed`` None (not refitted).
        probe_kwargs: as for :func:`fit_probe` (the CV seed stays the run's ``seed``; ``groups``
            keep each group whole in every split's CV folds).
    Returns:
        One row per split (the own split first): split_seed (None = the dataset's own split), C,
        cv_macro_f1, test_macro_f1, test_accuracy, test_auroc, n_train, n_test.
    """
    rows = [] if own is None else [_split_row(None, own)]
    x = as_features(x)
    for split_seed, split in splits.items():
        result, _, _ = fit_probe(x, y, split, **probe_kwargs)
        rows.append(_split_row(split_seed, result))
    return rows


def _split_row(split_seed: int | None, result: dict[str, Any]) -> dict[str, Any]:
    test = result["test"]
    return {"split_seed": split_seed, "C": result["C"], "cv_macro_f1": result["cv_macro_f1"],
            "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"], "test_auroc": test["auroc"],
            "n_train": result["n_train"], "n_test": test["n"]}


def save_coef(path: str | Path, coef: np.ndarray, intercept: np.ndarray, label_names: list[str]) -> None:
    """Write a probe's ``coef`` (n_classes or 1, n_features), ``intercept`` and label names as .npz atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, coef=coef, intercept=intercept, label_names=np.array(label_names))


def load_coef(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(coef, intercept, label names) of a :func:`save_coef` file.

    Raises:
        CacheError: the file is missing, truncated or fails its zip CRC (see :func:`saeprobe.io.reading`).
    """
    with reading(path), np.load(path) as npz:
        return npz["coef"], npz["intercept"], [str(x) for x in npz["label_names"]]


def _cv_scores(lr: LogisticRegressionCV) -> np.ndarray:
    """(n_folds, n_Cs) CV macro-F1 scores, whatever the sklearn version's attribute layout."""
    scores = lr.scores_
    if isinstance(scores, dict):  # legacy layout: {class: (folds, Cs)} with identical entries
        scores = next(iter(scores.values()))
    return np.asarray(scores).reshape(-1, len(lr.Cs_))


def fit_tfidf(texts: list[str], y: np.ndarray, split: np.ndarray, *, ngram_max: int = 2, max_features: int | None = 20000,
              stop_words: str | None = "english", min_df: int = 1, **probe_kwargs: Any) -> dict[str, Any]:
    """TF-IDF (word 1..ngram_max-grams) + the same CV-selected logistic regression, same splits.

    The vocabulary and IDF weights are fitted on train texts only. MOSAIC's settings:
    1–2-grams, 20000 features, English stop words.
    """
    train = split == "train"
    vec = TfidfVectorizer(ngram_range=(1, ngram_max), max_features=max_features, stop_words=stop_words,
                          min_df=min_df, sublinear_tf=False)
    vec.fit([t for t, keep in zip(texts, train, strict=True) if keep])
    x = vec.transform(texts)
    result, _, _ = fit_probe(x, y, split, **probe_kwargs)
    result["vocabulary_size"] = len(vec.vocabulary_)
    return result

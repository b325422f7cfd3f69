"""Strong non-linear and reduced-linear baselines for the probes, each tuned by CV on the train split only.

Sources: the baselines of sae-probes (Kantamneni et al. 2025, "Are Sparse Autoencoders Useful?
A Case Study in Sparse Probing": PCA + logistic regression, k-nearest neighbours, XGBoost and an
MLP, next to the plain logistic-regression probe of :mod:`saeprobe.probes`), with scikit-learn's
HistGradientBoostingClassifier standing in for XGBoost (no extra dependency), and MOSAIC's
depth-5 decision tree (Gallifant et al. 2025), the interpretable non-linear baseline.

Selection (same protocol as :mod:`saeprobe.probes`): every baseline is a scikit-learn pipeline
with a small hyper-parameter grid, searched by ``GridSearchCV`` with the macro-F1 scorer
:data:`saeprobe.probes.MACRO_F1` over stratified k-fold splits of the *train rows only*
(``StratifiedKFold(n_splits=min(cv_folds, smallest train class), shuffle=True,
random_state=seed)``). The candidate is chosen by the one-standard-error rule
(:func:`saeprobe.selection.one_se_choice`, as C of the probes): among the candidates whose CV
mean is within one standard error (fold std / sqrt(folds)) of the best one, the simplest by the
baseline's complexity order (:attr:`Baseline.complexity`, :func:`one_se_refit`); it is refitted
on all train rows and scored once on the validation split (when there is one) and the test
split. Validation and test rows never enter fitting or selection; rows of any other split (e.g.
'unused') are neither fitted nor scored.
Every random component has ``random_state=seed``, so a rerun gives identical results.

Scaling follows :mod:`saeprobe.probes`: ``StandardScaler`` for dense hidden states,
``MaxAbsScaler`` for sparse SAE features (keeps them sparse and non-negative; a standard scaler
without centring would blow rare features up by 1/std). Scalers are fitted inside each CV fold.

The baselines (grid values above a data-dependent cap are replaced by the cap and deduplicated;
``fit_baseline(..., grid=...)`` replaces a default grid):

``pca_logreg``
    dense: StandardScaler -> PCA(n_components, random_state=seed) -> LogisticRegression;
    sparse: MaxAbsScaler -> TruncatedSVD(n_components, randomized, random_state=seed) ->
    StandardScaler -> LogisticRegression. Sparse input is never densified: PCA needs a dense,
    centred copy (20k x 65k float64 is 10 GB); TruncatedSVD is PCA without centring and works on
    CSR directly. LogisticRegression: lbfgs, class_weight='balanced', max_iter=500, tol=1e-4.
    Grid: n_components in {16, 64, 256} (capped at min(smallest CV-fold train part, n_features) - 1;
    sae-probes: up to 100, log-spaced) x C in {0.01, 1}.
``knn``
    scaler -> KNeighborsClassifier (brute force, Euclidean; works on CSR).
    Grid: n_neighbors in {5, 15, 45} (capped at the smallest CV-fold train part) x weights in
    {uniform, distance}. (sae-probes: odd k up to 20.)
``hist_gradient_boosting``
    QuantileBins(63) -> HistGradientBoostingClassifier(learning_rate=0.3, max_leaf_nodes=7,
    max_iter=60, max_bins=63, min_samples_leaf=20, class_weight='balanced', random_state=seed).
    Early stopping on the loss of a seeded, stratified 10 % hold-out *of the rows it is fitted on*
    (a CV fold's train part, or the train split at the refit), patience 10 iterations; off on
    small train splits (:func:`early_stopping_ok`). :class:`QuantileBins` bins unweighted before
    HGB sees the class weights (sklearn 1.9 bins weighted: 44 CPU-s a fit of 3,200 x 384). Sparse input:
    HGB needs dense input, so the columns active (non-zero) in at least ``min_samples_leaf`` = 20
    fitted rows — a column active in fewer can never be split on —, at most the 512 most often
    active, are densified (:class:`ActiveColumns`, fitted per CV fold, labels unused).
    Grid: learning_rate in {0.3} only — the selection is a CV score, not a choice. HGB is the
    slowest baseline: one tree per class per iteration, ~0.05 CPU-s an iteration on 3,200 x 384
    rows with 6 classes, so each extra candidate adds ~13 s (5 fold fits) on 5,000 x 384, and
    sklearn's defaults (learning rate 0.1, up to 100 iterations, 31 leaves, 255 bins) as a single
    candidate take ~3 min there (29 CPU-s a fit, measured; ~7 min without QuantileBins). Widen with ``grid={"learning_rate": [0.1, 0.3], "max_leaf_nodes": [7, 31],
    "max_iter": [100]}``.
``mlp``
    [ActiveColumns] -> scaler -> MLPClassifier(one hidden layer of 128 ReLU units, adam,
    max_iter=200, random_state=seed) with balanced sample weights (:class:`BalancedMLPClassifier`;
    MLPClassifier has no class_weight), early stopping as for HGB, mini-batches of
    :func:`mlp_batch_size`. Sparse input stays sparse; wider than 4,096 columns, the 4,096 most
    often active in the fitted rows are kept (the first layer's weights are dense: 65k x 128 per
    Adam step). Grid: alpha (L2) in {1e-4, 1}. (sae-probes: a random search over 1-3 layers of
    20-100 units, solvers, alpha 1e-4..1e-2.)
``decision_tree``
    DecisionTreeClassifier(max_depth=5, class_weight='balanced', random_state=seed) — MOSAIC's
    depth-5 tree; on CSR directly. Grid: min_samples_leaf in {1, 20}.

Complexity order of the one-standard-error rule (:attr:`Baseline.complexity`; lower = simpler or
more regularised; compared parameter by parameter in the order listed, the model's size before
its penalty, since size bounds what the model can fit whatever the penalty; a parameter absent
from the grid is left out):

``pca_logreg``
    fewer ``n_components`` (a lower-dimensional linear model), then smaller ``C`` (stronger L2).
``knn``
    *more* ``n_neighbors`` (a vote over more neighbours is a smoother decision boundary; k = 1
    memorises the train set), then ``weights`` 'uniform' before 'distance' (distance weights let
    the nearest row dominate, interpolating the train set).
``hist_gradient_boosting``
    fewer ``max_leaf_nodes`` (None = unlimited counts as infinite), then fewer ``max_iter``
    (boosting rounds), then larger ``l2_regularization``, then smaller ``learning_rate``
    (stronger shrinkage of each tree).
``mlp``
    fewer hidden units in all (then fewer layers) of ``hidden_layer_sizes``, then larger
    ``alpha`` (stronger L2).
``decision_tree``
    larger ``min_samples_leaf`` (fewer, larger leaves); ``criterion`` has no order (gini,
    entropy and log_loss grow trees of the same size): candidates that differ only in it are
    ranked by their CV mean.

Fit time (GridSearchCV, 5 folds, and the refit; CPU-s on one core, threadpoolctl limit 1, of a
shared 2-core VM; synthetic data with 80 % train rows):

======================  ====================  ===================  ======================
baseline                dense 5,000 x 384,    dense 1,300 x 384,   CSR 5,000 x 2,048,
                        6 classes             binary               ~32 non-zeros a row
======================  ====================  ===================  ======================
pca_logreg              7.0                   2.4                  8.5
knn                     2.9                   0.6                  1.5
hist_gradient_boosting  16.1                  2.8                  21.4
mlp                     14.4                  5.7                  17.7
decision_tree           8.1                   1.8                  0.7
======================  ====================  ===================  ======================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.class_weight import compute_sample_weight

from saeprobe.errors import ConfigError, DataError
from saeprobe.probes import MACRO_F1, _cv, _metrics, as_features
from saeprobe.selection import one_se_band, one_se_choice, standard_error

TREE_DEPTH = 5
HGB_MIN_SAMPLES_LEAF = 20
HGB_MAX_SPARSE_COLUMNS = 512
HGB_BINS = 63
HGB_MAX_ITER = 60
MLP_UNITS = 128
MLP_MAX_SPARSE_COLUMNS = 4096
EARLY_STOPPING_FRACTION = 0.1


@dataclass(frozen=True)
class FitShape:
    """What a baseline's pipeline and grid caps depend on: the train split's shape and kind, known before the search.

    ``min_fold_train``: rows in the smallest CV-fold train part (caps PCA components and k);
    ``early_stopping``: whether HGB and the MLP hold out a stopping set (:func:`early_stopping_ok`).
    """

    seed: int
    sparse: bool
    n_features: int
    n_classes: int
    min_fold_train: int
    early_stopping: bool


@dataclass(frozen=True)
class Baseline:
    """A baseline: ``build(shape)`` -> its unfitted pipeline; ``grid``: the default hyper-parameter grid
    in short names (the names reported in ``params``); ``keys``: short name -> pipeline parameter;
    ``complexity``: short name -> function of a value returning a sortable rank (lower = simpler or
    more regularised), one per key, in order of precedence (the module docstring gives the reasons)."""

    build: Callable[[FitShape], Pipeline]
    grid: dict[str, list[Any]]
    keys: dict[str, str]
    complexity: dict[str, Callable[[Any], Any]]


class ActiveColumns(TransformerMixin, BaseEstimator):
    """Keep the columns non-zero in at least ``min_rows`` fitted rows (at most ``max_columns``, the most
    often non-zero; ties by column index). Labels are not used.

    Input: (n, n_features) scipy sparse or dense; output: (n, n_kept) float64, n_kept >= 1 (the most
    often active column is kept even when no column reaches ``min_rows``), a dense array when
    ``dense`` or the input is dense, else CSR.
    """

    def __init__(self, min_rows: int = 1, max_columns: int = 1024, dense: bool = True):
        self.min_rows = min_rows
        self.max_columns = max_columns
        self.dense = dense

    def fit(self, x: Any, y: Any = None) -> ActiveColumns:
        counts = np.asarray((x != 0).sum(axis=0)).ravel()
        order = np.argsort(-counts, kind="stable")[: self.max_columns]
        keep = order[counts[order] >= self.min_rows]
        self.columns_ = np.sort(keep if len(keep) else order[:1])
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: Any) -> np.ndarray | sp.csr_matrix:
        x = x[:, self.columns_]
        if sp.issparse(x):
            return np.asarray(x.toarray(), dtype=np.float64) if self.dense else sp.csr_matrix(x, dtype=np.float64)
        return np.asarray(x, dtype=np.float64)


class QuantileBins(TransformerMixin, BaseEstimator):
    """Replace each column by its bin index (float64) among at most ``max_bins`` unweighted quantile bins
    of the fitted rows — the binning HistGradientBoosting does itself without sample weights.

    Why: with sample weights (``class_weight='balanced'``) scikit-learn 1.9's HGB computes each
    bin edge by a separate weighted-percentile call (254 per feature): 44 CPU-s of the fit of
    3,200 x 384 rows, against 0.5 s unweighted. Given at most ``max_bins`` distinct values per
    column, HGB uses them as they are (midpoint thresholds), so splits are those of unweighted
    binning. Input: (n, d) dense; output: (n, d) dense, integral values in [0, max_bins).
    """

    def __init__(self, max_bins: int = 255):
        self.max_bins = max_bins

    def fit(self, x: Any, y: Any = None) -> QuantileBins:
        x = np.asarray(x, dtype=np.float64)
        percentiles = np.linspace(0, 100, self.max_bins + 1)[1:-1]
        edges = np.percentile(x, percentiles, axis=0, method="averaged_inverted_cdf")
        self.edges_ = [np.unique(edges[:, j]) for j in range(x.shape[1])]
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = np.empty_like(x)
        for j, edges in enumerate(self.edges_):
            out[:, j] = np.searchsorted(edges, x[:, j], side="left")
        return out


class BalancedMLPClassifier(MLPClassifier):
    """MLPClassifier fitted with 'balanced' sample weights (n / (n_classes * class count)) of the y it
    is given — per CV fold and at refit —, the MLP counterpart of ``class_weight='balanced'``."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> BalancedMLPClassifier:
        weight = compute_sample_weight("balanced", y)
        return super().fit(X, y, sample_weight=weight if sample_weight is None else weight * sample_weight)


def early_stopping_ok(y_train: np.ndarray, n_splits: int) -> bool:
    """Whether HGB and the MLP can hold out a stratified 10 % stopping set from every fit's rows.

    Requires every class to have at least 20 train rows (so each CV-fold train part holds >= 2 of
    each class on both sides of the hold-out and the stopping set is not a handful of rows) and
    the stopping set of the smallest CV-fold train part to hold at least one row per class.
    """
    counts = np.bincount(y_train)
    counts = counts[counts > 0]
    smallest_fold_train = len(y_train) - math.ceil(len(y_train) / n_splits)
    return bool(counts.min() >= 20 and math.ceil(EARLY_STOPPING_FRACTION * smallest_fold_train) >= len(counts))


def mlp_batch_size(n_fit: int) -> int:
    """Adam's mini-batch: about 20 steps an epoch, 32..200 rows (200 = scikit-learn's default). With the
    default on a few hundred rows an epoch is one step, and early stopping (patience: 10 epochs) ends
    training after ~20 steps: test accuracy 0.62 where batches of 32 reach 0.85 (180 train rows)."""
    return int(min(np.clip(n_fit // 20, 32, 200), max(1, n_fit * 9 // 10)))


def _scaler(sparse: bool) -> BaseEstimator:
    return MaxAbsScaler() if sparse else StandardScaler()


def _capped(short: str, values: list[Any], shape: FitShape) -> list[Any]:
    """Grid values above what the data allows replaced by the cap (then deduplicated, order kept)."""
    caps = {"n_components": max(1, min(shape.min_fold_train, shape.n_features) - 1),
            "n_neighbors": max(1, shape.min_fold_train)}
    if short not in caps:
        return list(values)
    return list(dict.fromkeys(max(1, min(int(v), caps[short])) for v in values))


def _pca_logreg(s: FitShape) -> Pipeline:
    logreg = LogisticRegression(class_weight="balanced", max_iter=500, tol=1e-4, random_state=s.seed)
    if s.sparse:
        return Pipeline([("scale", MaxAbsScaler()), ("reduce", TruncatedSVD(algorithm="randomized", random_state=s.seed)),
                         ("rescale", StandardScaler()), ("logreg", logreg)])
    return Pipeline([("scale", StandardScaler()), ("reduce", PCA(random_state=s.seed)), ("logreg", logreg)])


def _knn(s: FitShape) -> Pipeline:
    return Pipeline([("scale", _scaler(s.sparse)), ("knn", KNeighborsClassifier(algorithm="brute"))])


def _hgb(s: FitShape) -> Pipeline:
    hgb = HistGradientBoostingClassifier(
        learning_rate=0.3, max_leaf_nodes=7, max_iter=HGB_MAX_ITER, max_bins=HGB_BINS, min_samples_leaf=HGB_MIN_SAMPLES_LEAF,
        early_stopping=s.early_stopping, validation_fraction=EARLY_STOPPING_FRACTION, n_iter_no_change=10,
        scoring="loss", class_weight="balanced", random_state=s.seed,
    )
    steps = [("bin", QuantileBins(HGB_BINS)), ("hgb", hgb)]
    if s.sparse:
        steps.insert(0, ("densify", ActiveColumns(min_rows=HGB_MIN_SAMPLES_LEAF, max_columns=HGB_MAX_SPARSE_COLUMNS)))
    return Pipeline(steps)


def _mlp(s: FitShape) -> Pipeline:
    mlp = BalancedMLPClassifier(
        hidden_layer_sizes=(MLP_UNITS,), max_iter=200, batch_size=mlp_batch_size(s.min_fold_train),
        early_stopping=s.early_stopping, validation_fraction=EARLY_STOPPING_FRACTION, n_iter_no_change=10, random_state=s.seed,
    )
    steps = [("scale", _scaler(s.sparse)), ("mlp", mlp)]
    if s.sparse and s.n_features > MLP_MAX_SPARSE_COLUMNS:
        steps.insert(0, ("select", ActiveColumns(max_columns=MLP_MAX_SPARSE_COLUMNS, dense=False)))
    return Pipeline(steps)


def _tree(s: FitShape) -> Pipeline:
    return Pipeline([("tree", DecisionTreeClassifier(max_depth=TREE_DEPTH, class_weight="balanced", random_state=s.seed))])


def _ascending(value: Any) -> float:
    """Rank of a parameter where a larger value is more complex (None = unlimited = infinite)."""
    return math.inf if value is None else float(value)


def _descending(value: Any) -> float:
    """Rank of a parameter where a larger value is simpler (more neighbours, a stronger penalty)."""
    return -float(value)


def _units(sizes: Any) -> tuple[int, int]:
    """Rank of ``hidden_layer_sizes``: total hidden units, then layers."""
    sizes = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
    return (int(sum(sizes)), len(sizes))


def _knn_weights(value: Any) -> int:
    """Rank of KNN ``weights``: 'uniform' (0) before 'distance' (or a callable, 1)."""
    return 0 if value == "uniform" else 1


def _unordered(value: Any) -> int:
    """A parameter without a complexity order: every value ranks the same."""
    return 0


BASELINES: dict[str, Baseline] = {
    "pca_logreg": Baseline(_pca_logreg, {"n_components": [16, 64, 256], "C": [0.01, 1.0]},
                           {"n_components": "reduce__n_components", "C": "logreg__C"},
                           {"n_components": _ascending, "C": _ascending}),
    "knn": Baseline(_knn, {"n_neighbors": [5, 15, 45], "weights": ["uniform", "distance"]},
                    {"n_neighbors": "knn__n_neighbors", "weights": "knn__weights"},
                    {"n_neighbors": _descending, "weights": _knn_weights}),
    "hist_gradient_boosting": Baseline(_hgb, {"learning_rate": [0.3]},
                                       {"learning_rate": "hgb__learning_rate", "max_leaf_nodes": "hgb__max_leaf_nodes",
                                        "max_iter": "hgb__max_iter", "l2_regularization": "hgb__l2_regularization"},
                                       {"max_leaf_nodes": _ascending, "max_iter": _ascending,
                                        "l2_regularization": _descending, "learning_rate": _ascending}),
    "mlp": Baseline(_mlp, {"alpha": [1e-4, 1.0]}, {"alpha": "mlp__alpha", "hidden_layer_sizes": "mlp__hidden_layer_sizes"},
                    {"hidden_layer_sizes": _units, "alpha": _descending}),
    "decision_tree": Baseline(_tree, {"min_samples_leaf": [1, 20]},
                              {"min_samples_leaf": "tree__min_samples_leaf", "criterion": "tree__criterion"},
                              {"min_samples_leaf": _descending, "criterion": _unordered}),
}
"""Baseline name -> :class:`Baseline` (see the module docstring for each pipeline and grid)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def complexity_key(name: str, params: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key of one candidate of baseline ``name`` (lower = simpler; :attr:`Baseline.complexity`).

    Args:
        params: the candidate's parameters, short names (``n_components``) or pipeline names
            (``reduce__n_components``, as in ``GridSearchCV.cv_results_["params"]``).
    Raises:
        KeyError: a parameter the baseline does not know.
    """
    spec = BASELINES[name]
    short = {v: k for k, v in spec.keys.items()}
    named = {short.get(k, k): v for k, v in params.items()}
    unknown = sorted(set(named) - set(spec.complexity))
    if unknown:
        raise KeyError(f"baseline {name!r} has no complexity order for {unknown}")
    return tuple(rank(named[k]) for k, rank in spec.complexity.items() if k in named)


def one_se_refit(name: str) -> Callable[[dict[str, Any]], int]:
    """The one-standard-error rule for baseline ``name``, in ``GridSearchCV``'s ``refit=`` callable form.

    The callable takes a ``cv_results_`` dict (``params``, ``mean_test_score``,
    ``std_test_score`` and one ``split<i>_test_score`` per fold) and returns the index of the
    candidate :func:`saeprobe.selection.one_se_choice` picks: the simplest by
    :func:`complexity_key` among those whose CV mean is within one standard error
    (``std_test_score / sqrt(folds)``) of the best mean; ties by the higher mean, then grid order.
    """

    def choose(cv_results: dict[str, Any]) -> int:
        folds = sum(1 for k in cv_results if k.startswith("split") and k.endswith("_test_score"))
        ses = standard_error(cv_results["std_test_score"], folds)
        keys = [complexity_key(name, p) for p in cv_results["params"]]
        return one_se_choice(cv_results["mean_test_score"], ses, complexity=keys)

    return choose


def _check(x: Any, y: np.ndarray, split: np.ndarray, rows: np.ndarray, n_classes: int) -> None:
    """One row per document in ``x``, ``y`` and ``split``; on the ``rows`` used, labels in [0, n_classes) and finite features."""
    if x.ndim != 2 or y.ndim != 1 or split.ndim != 1 or not (x.shape[0] == len(y) == len(split)):
        raise DataError(f"features {x.shape}, labels {y.shape} and splits {split.shape} do not have one row per document")
    if n_classes < 2:
        raise DataError(f"n_classes is {n_classes}; a classifier needs at least 2")
    used = y[rows]
    if not np.issubdtype(y.dtype, np.integer) or (len(used) and (used.min() < 0 or used.max() >= n_classes)):
        raise DataError(f"labels must be integers in [0, {n_classes}); got dtype {y.dtype}"
                        + (f", range [{used.min()}, {used.max()}]" if len(used) and np.issubdtype(y.dtype, np.number) else ""))
    values = x[rows].data if sp.issparse(x) else x[rows]
    if not np.isfinite(values).all():
        raise DataError("features contain NaN or infinite values")


def _grid(name: str, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]]:
    spec = BASELINES[name]
    if grid is None:
        return spec.grid
    unknown = sorted(set(grid) - set(spec.keys))
    if unknown or not grid or any(not isinstance(v, (list, tuple)) or not v for v in grid.values()):
        raise ConfigError(f"grid of baseline {name!r}: expected non-empty lists for some of {', '.join(spec.keys)}; "
                          f"got {grid!r}")
    return {k: [tuple(x) if isinstance(x, list) else x for x in v] for k, v in grid.items()}


def select_and_fit(name: str, x: Any, y: np.ndarray, train: np.ndarray, *, n_classes: int, seed: int = 42,
                   cv_folds: int = 5, n_jobs: int = 1, grid: dict[str, list[Any]] | None = None,
                   groups: np.ndarray | None = None) -> tuple[Pipeline, dict[str, Any]]:
    """Grid-search baseline ``name`` by stratified CV on the rows ``train``; refit the chosen candidate on all of them.

    Args:
        name: a key of :data:`BASELINES`.
        x: (n_docs, n_features) features, scipy sparse (kept sparse, as CSR float64) or dense
            (float64). y: (n_docs,) int labels in [0, n_classes). train: (n_docs,) bool mask.
        n_classes: the dataset's number of classes; every class must have >= 2 train rows.
        seed: CV folds and every random component. n_jobs: GridSearchCV's parallel fits
            (results do not depend on it).
        grid: replaces the baseline's default grid (:attr:`Baseline.grid`): short name -> list of
            values, names from :attr:`Baseline.keys` (e.g. ``{"max_leaf_nodes": [7, 31]}``; list
            values such as hidden_layer_sizes [128] become tuples).
        groups: (n_docs,) group ids (``group_column``): the CV folds keep each group together
            (:func:`saeprobe.probes._cv`).
    Selection: the one-standard-error rule (:func:`one_se_refit`; the module docstring gives
    each baseline's complexity order).

    Returns:
        (fitted pipeline, selection record: baseline, params (chosen, short names, JSON types), C,
        cv_macro_f1 / cv_macro_f1_std / cv_macro_f1_se (mean, std (ddof=0) and standard error over
        folds of the chosen candidate), cv_best_params / cv_best_macro_f1 (the plain argmax, first
        in grid order, for information), cv_band_size (candidates within one standard error of the
        best), selection_rule ("one_se"), cv_scores (every candidate's params, mean, std, se,
        in_band), cv_folds, n_train, n_features, early_stopping,
        fit_info (depth and leaves of a tree, boosting or training iterations, kept columns,
        PCA explained variance), convergence_warnings (of the refit)). Rows outside ``train`` are
        never read.
    Raises:
        ConfigError: unknown ``name``, or a ``grid`` with unknown names or empty lists.
        DataError: no train rows, a single train class, a class with fewer than 2 train rows or
            none at all, labels outside [0, n_classes), NaN/inf features, mismatched lengths.
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    y, train = np.asarray(y), np.asarray(train, dtype=bool)
    x = sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)
    _check(x, y, train, train, n_classes)
    if not train.any():
        raise DataError("no train rows")
    x_train, y_train = as_features(x[train]), y[train]
    present = np.unique(y_train)
    if len(present) < 2:
        raise DataError("the train split has a single class")
    groups_train = None if groups is None else np.asarray(groups)[train]
    splitter = _cv(y_train, cv_folds, seed, groups_train)  # DataError for a class with a single train example
    cv = list(splitter.split(np.zeros(len(y_train)), y_train, groups_train))
    if len(present) < n_classes:
        missing = sorted(set(range(n_classes)) - set(present.tolist()))
        raise DataError(f"classes {missing} have no train rows; the baselines need every class in train")
    sparse = sp.issparse(x_train)
    shape = FitShape(seed=seed, sparse=sparse, n_features=int(x_train.shape[1]), n_classes=n_classes,
                     min_fold_train=min(len(tr) for tr, _ in cv),
                     early_stopping=early_stopping_ok(y_train, len(cv)))
    spec = BASELINES[name]
    estimator = spec.build(shape)
    param_grid = {spec.keys[k]: _capped(k, v, shape) for k, v in _grid(name, grid).items()}
    # refit=False and the refit below (GridSearchCV's own refit would mix its ConvergenceWarnings with those of
    # the CV fits); the candidate is the one one_se_refit (a GridSearchCV refit callable) picks.
    search = GridSearchCV(estimator, param_grid, scoring=MACRO_F1, cv=cv, refit=False, n_jobs=n_jobs, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(x_train, y_train)
    res = search.cv_results_
    chosen = one_se_refit(name)(res)
    ses = standard_error(res["std_test_score"], len(cv))
    band = one_se_band(res["mean_test_score"], ses)
    best = int(np.argmax(res["mean_test_score"]))  # the plain argmax (first in grid order), for information
    model = clone(estimator).set_params(**res["params"][chosen])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    short = {v: k for k, v in spec.keys.items()}

    def named(p: dict[str, Any]) -> dict[str, Any]:
        return {short[k]: _jsonable(v) for k, v in p.items()}

    params = named(res["params"][chosen])
    info: dict[str, Any] = {
        "baseline": name,
        "params": params,
        "C": float(params["C"]) if "C" in params else None,
        "cv_macro_f1": float(res["mean_test_score"][chosen]),
        "cv_macro_f1_std": float(res["std_test_score"][chosen]),
        "cv_macro_f1_se": float(ses[chosen]),
        "cv_best_params": named(res["params"][best]),
        "cv_best_macro_f1": float(res["mean_test_score"][best]),
        "cv_band_size": int(band.sum()),
        "selection_rule": "one_se",
        "cv_scores": [{"params": named(p), "mean": float(m), "std": float(s), "se": float(e), "in_band": bool(b)}
                      for p, m, s, e, b in zip(res["params"], res["mean_test_score"], res["std_test_score"], ses, band,
                                               strict=True)],
        "cv_folds": len(cv),
        "n_train": int(train.sum()),
        "n_features": shape.n_features,
        "early_stopping": shape.early_stopping if name in ("hist_gradient_boosting", "mlp") else None,
        "fit_info": _fit_info(model),
        "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    }
    return model, info


def _fit_info(model: Pipeline) -> dict[str, Any]:
    steps = model.named_steps
    if "tree" in steps:
        return {"depth": int(steps["tree"].get_depth()), "n_leaves": int(steps["tree"].get_n_leaves())}
    info: dict[str, Any] = {}
    for step in ("densify", "select"):
        if step in steps:
            info["kept_columns"] = int(len(steps[step].columns_))
    if "hgb" in steps:
        info["n_iter"] = int(steps["hgb"].n_iter_)
    if "mlp" in steps:
        info["n_iter"] = int(steps["mlp"].n_iter_)
    if "reduce" in steps:
        info["explained_variance_ratio"] = float(np.sum(steps["reduce"].explained_variance_ratio_))
    return info


def fit_baseline(name: str, x: Any, y: np.ndarray, split: np.ndarray, *, n_classes: int, seed: int = 42,
                 cv_folds: int = 5, n_jobs: int = 1, grid: dict[str, list[Any]] | None = None,
                 groups: np.ndarray | None = None) -> dict[str, Any]:
    """Fit baseline ``name`` (hyper-parameters chosen by CV on the train split) and score it on validation and test.

    Args:
        name: a key of :data:`BASELINES`.
        x: (n_docs, n_features) features, scipy sparse or dense; row i = doc_id i.
        y: (n_docs,) int labels in [0, n_classes). split: (n_docs,) str: 'train' rows are fitted
            and selected on, 'validation' (optional) and 'test' rows are scored, any other value
            (e.g. 'unused') is ignored.
        n_classes: the dataset's classes; all of them must occur in train.
        seed, cv_folds, n_jobs, grid, groups: as in :func:`select_and_fit`.
    Returns:
        The :func:`select_and_fit` record plus ``validation`` (if any rows) and ``test``: the
        :func:`saeprobe.probes._metrics` dicts (n, macro_f1, missing_classes, accuracy, auroc,
        confusion), and ``predictions``: {split: (pred (n,) int64, proba (n, n_classes) float64,
        rows sum to 1)} for those splits, rows in document order — numpy arrays, to be removed
        before the result is written as JSON (:func:`saeprobe.predictions.finish`).
    Raises:
        ConfigError: unknown ``name`` or a bad ``grid``.
        DataError: no train or no test rows, and the cases of :func:`select_and_fit` (labels and
            features checked on the train, validation and test rows; other rows are not read).
    """
    y, split = np.asarray(y), np.asarray(split)
    x = sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)
    train, test = split == "train", split == "test"
    _check(x, y, split, train | test | (split == "validation"), n_classes)
    if not train.any() or not test.any():
        raise DataError(f"need train and test rows, got {int(train.sum())} train and {int(test.sum())} test")
    model, result = select_and_fit(name, x, y, train, n_classes=n_classes, seed=seed, cv_folds=cv_folds, n_jobs=n_jobs,
                                   grid=grid, groups=groups)
    result["predictions"] = {}
    for part, mask in (("validation", split == "validation"), ("test", test)):
        if mask.any():
            rows = as_features(x[mask])
            proba = np.zeros((int(mask.sum()), n_classes))
            proba[:, model.classes_] = model.predict_proba(rows)
            pred = np.asarray(model.classes_)[np.argmax(proba[:, model.classes_], axis=1)].astype(np.int64)
            result[part] = _metrics(y[mask], pred, proba, n_classes)
            result["predictions"][part] = (pred, proba)
    return result

"""Feature selection and k-sparse probing: rank features on the train split, probe the top k.

**k-sparse probing** (SAEBench ``sparse_probing``, Karvonen et al. 2025; sae-probes, Kantamneni
et al. 2025, "Are Sparse Autoencoders Useful? A Case Study in Sparse Probing"): the features are
ranked once, on train rows only (:func:`rank_features`), and for every k the CV-selected
logistic-regression probe of :func:`saeprobe.probes.fit_probe` (C chosen by stratified CV on the
train split, scored on validation and test) is fitted on the k top-ranked columns
(:func:`fit_ksparse`). Every k shares the one ranking, so the selected sets are nested. Test and
validation rows never enter the ranking, the C selection or the fit. Gallifant et al. 2025
("Sparse Autoencoder Features for Classifications and Transferability") argue that binarising SAE
activations is an efficient alternative to feature selection; that is a different feature
transform, not implemented here.

Rankings (:data:`RANKINGS`), all computed from train rows only:

- ``mean_diff``: |mean over positives - mean over negatives| of the raw feature values. This is
  SAEBench's ``get_top_k_mean_diff_mask`` (github.com/adamkarvonen/SAEBench, read in the fork
  zachmccrth/SAEBench, ``sae_bench/evals/sparse_probing/probe_training.py``, called by
  ``train_probe_on_activations(select_top_k=k)`` for every k of ``k_values``:
  ``(acts[pos].mean(0) - acts[neg].mean(0)).abs()``, then ``argsort(descending=True)``). SAEBench
  probes each class one-vs-rest with the negatives subsampled at random to the positives' count
  (``prepare_probe_data``); here every train row is used (no subsampling, so no randomness) and
  the negatives' mean is that of all the other classes' train rows.
- ``normalized_mean_diff``: each feature is divided by its mean non-zero activation on the train
  rows, then ``mean_diff``; a feature never active on train scores 0. This is sae-probes'
  ``get_sorted_indices_new`` (``sae_probes/run_sae_evals.py`` of github.com/sae-probes/sae-probes, which
  ``run_sae_eval`` uses: column sum / (non-zero count + 1e-6), ``X / (col_mean + 1e-6)``, then the
  |difference of the class means|). The older ``get_sorted_indices`` / ``train_sae_probes.py``
  of the paper's code rank by the plain difference, i.e. ``mean_diff``. Differences from
  sae-probes: no 1e-6 guards (a feature with no non-zero train value scores exactly 0), and the
  normaliser is the mean *absolute* non-zero value, which equals sae-probes' for non-negative SAE
  codes only (see "SAE codes and hidden dimensions" below).
- ``l1``: an L1-regularised logistic-regression path. Features are scaled as
  :mod:`saeprobe.probes` does (``MaxAbsScaler`` for sparse input, ``StandardScaler`` for dense,
  fitted on train rows); the path runs over :data:`L1_N_CS` values of C on a log grid from just
  above ``l1_min_c`` (below it every coefficient is 0) to ``10**L1_DECADES`` times it, with
  ``solver="liblinear"`` and ``class_weight="balanced"`` (as the probes). ``l1_min_c`` is taken on
  the class-weighted rows, so the grid starts where the first weighted feature enters; with
  balanced weights a feature's gradient at 0 is proportional to its scaled mean difference, so
  features active in every class do not enter early as a stand-in for the (penalised) intercept.
  Rank = the grid step at which a feature's coefficient first becomes non-zero; ties by |coef| at
  the largest C fitted (the path stops early once every feature has entered); features that never
  enter come last, ordered by ``mean_diff``. liblinear ignores ``warm_start`` (scikit-learn
  documents it as useless for liblinear), so each C is fitted from scratch; ``saga``, which does
  warm-start, was 10x slower on one one-vs-rest path of synthetic 5,000 x 2,048 sparse codes and
  stopped at max_iter=1000 unconverged at the largest C on another. ``seed`` is liblinear's
  ``random_state`` (coordinate order). The grid is kept small (:data:`L1_N_CS`, :data:`L1_DECADES`)
  because the fits at the largest C dominate the cost. The penalty is given
  as ``l1_ratio=1`` where scikit-learn deprecates ``penalty`` (1.8+), else as ``penalty="l1"``.

**SAE codes and hidden dimensions** (the k-sparse baseline is the same ranking on hidden
dimensions). Each ranking runs the same code on both, but not every ranking means the same on both:

- ``mean_diff``: the same arithmetic on raw values on both sides (the one ranking computed alike).
- ``normalized_mean_diff``: the same formula on both — each column divided by the mean of ``|x|``
  over its non-zero train values — but the normaliser differs in meaning. For SAE codes
  (non-negative, sparse) it is the mean non-zero activation, sae-probes' normaliser. Hidden
  dimensions are signed and dense (practically never exactly 0), so there it is the mean ``|x|``
  over all train rows: ``mean_diff`` on dimensions rescaled to unit mean magnitude, a ranking
  sae-probes does not define (its column sum over the non-zero count would be the signed mean,
  near 0 for a centred dimension). In an independent recomputation on held-out data (issue 21)
  this hidden-state baseline scored 0.49-0.53 macro F1 at k <= 10 against 0.55-0.60 under
  ``mean_diff``: it is not the like-for-like baseline its name suggests.
- ``l1``: the same path, but on the probes' own scaling, which differs by input type:
  ``MaxAbsScaler`` (max ``|x|`` = 1) for sparse SAE codes, ``StandardScaler`` (unit variance) for
  dense hidden states — the same penalty on differently scaled features.

Hence the symmetric comparison of :mod:`saeprobe.ksparse_tables`: at each k, each side is chosen
on CV over every ranking run (``ranking = "best"``), and the per-ranking rows are detail.

Multiclass (more than two classes in train): **one-vs-rest** -- each train class's score against
all other train rows is computed and a feature is ranked by its maximum over classes (for ``l1``:
its earliest entry over the per-class paths, ties by its largest |coef| at the largest C). This is
what a researcher would call OvR ranking. SAEBench and sae-probes are binary-only: SAEBench turns a
multi-class dataset into one binary class-vs-rest probe per class, each with its own top-k set;
a multi-class probe needs one set, hence the maximum. Binary: the plain difference (positive = the
larger label).
Classes absent from the train rows are not scored. Ties: stable by feature id. The ranking is a
full ordering of all ``n_features`` ids.

Shapes and dtypes: ``x`` (n_docs, n_features) scipy sparse (pooled SAE codes, non-negative) or a
dense float array (hidden states); ``y`` (n_docs,) int labels; ``train_mask`` (n_docs,) bool;
``split`` (n_docs,) 'train' / 'validation' / 'test' (any other value, e.g. 'unused', is neither
fitted nor scored). :func:`rank_features` returns (n_features,) int64 feature ids, best first.

Errors: :class:`saeprobe.errors.DataError` for unusable input (shapes, label dtype or range, a
mask that is not a bool vector, fewer than two classes or non-finite values in the train rows, no
test rows); ``ValueError`` for an unknown ranking method or a k < 1.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from functools import cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MaxAbsScaler, StandardScaler
from sklearn.svm import l1_min_c

from saeprobe.errors import DataError
from saeprobe.probes import as_features, fit_probe
from saeprobe.transfer import train_problem

log = logging.getLogger("saeprobe")

RANKINGS = ("mean_diff", "normalized_mean_diff", "l1")

# The l1 path's C grid: L1_N_CS values, log-spaced, from just above l1_min_c to 10**L1_DECADES x it.
# 12 values over 3 decades: 3.3 CPU-s for the 6 one-vs-rest paths of 3,500 train rows x 2,048 synthetic
# SAE codes (~32 active per row), ~1,200-1,300 features entered at the largest C; over 4 decades the same
# paths took about 4x as long (the fits at the largest Cs dominate).
L1_N_CS = 12
L1_DECADES = 3.0
L1_TOL = 1e-4
L1_MAX_ITER = 1000


def rank_features(x: Any, y: np.ndarray, train_mask: np.ndarray, method: str, *, seed: int = 0,
                  n_classes: int | None = None) -> np.ndarray:
    """Feature ids, best first, ranked by ``method`` on the rows ``train_mask`` only.

    Args:
        x: (n_docs, n_features) scipy sparse or dense features. y: (n_docs,) int labels.
        train_mask: (n_docs,) bool, the rows to rank on; no other row of ``x`` or ``y`` is read.
        method: one of :data:`RANKINGS` (see the module docstring).
        seed: random state of the ``l1`` path's solver (the mean-difference rankings are deterministic).
        n_classes: number of labels of the dataset (labels must be below it); None = any label.
    Returns:
        (n_features,) int64: every feature id exactly once, best first; ties by feature id.
    Raises:
        ValueError: unknown ``method``.
        DataError: bad shapes or dtypes, labels out of range, fewer than two classes or
            non-finite values in the train rows.
    """
    if method not in RANKINGS:
        raise ValueError(f"unknown ranking method {method!r}; expected one of {', '.join(RANKINGS)}")
    xt, yt = _train_rows(x, y, train_mask, n_classes)
    return _rank(xt, yt, method, seed)


def fit_ksparse(x: Any, y: np.ndarray, split: np.ndarray, *, ranking: str, ks: Iterable[int], n_classes: int,
                probe: dict[str, Any], seed: int, groups: Any = None) -> list[dict[str, Any]]:
    """k-sparse probes: rank once on the train split, then one :func:`fit_probe` per k on the k top columns.

    Args:
        x: (n_docs, n_features) scipy sparse or dense features; row i = doc_id i.
        y: (n_docs,) int labels. split: (n_docs,) split names ('train', 'validation', 'test'; other
            values are neither fitted nor scored).
        ranking: one of :data:`RANKINGS`. ks: numbers of features; each is capped at n_features and
            duplicates after capping are dropped (first occurrence kept, order kept).
        n_classes: number of labels of the dataset. probe: keyword arguments of :func:`fit_probe`
            (Cs, cv_folds, ...; not ``seed``, ``n_classes`` or ``groups``). seed: for the ranking and the probe.
        groups: None, or (n_docs,) group of every row (the prepared ``group`` column, ``group_column``):
            every k's C is then chosen on grouped CV folds (no group on both sides of a fold, as in
            :func:`saeprobe.probes.fit_cv`); the ranking reads the train rows only either way.
    Returns:
        One dict per distinct capped k: :func:`fit_probe`'s result dict, every key kept as it is,
        plus ``k``, ``ranking`` and ``features`` (the k kept feature ids, ints, in rank order).
    Raises:
        ValueError: an unknown ranking, no ks, or a k that is not an integer >= 1.
        DataError: see :func:`rank_features` and :func:`fit_probe` (e.g. no test rows, or with
            ``groups`` a class in a single train group); ``groups`` not of length n_docs.
    """
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking method {ranking!r}; expected one of {', '.join(RANKINGS)}")
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty; expected at least one number of features")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every k must be an integer >= 1, got {k!r}")
    x, y, split = _features(x), np.asarray(y), np.asarray(split)
    if split.shape != (x.shape[0],):
        raise DataError(f"split must be a (n_docs,) = ({x.shape[0]},) array of split names, got shape {split.shape}")
    if groups is not None and np.shape(groups) != (x.shape[0],):
        raise DataError(f"groups must be a (n_docs,) = ({x.shape[0]},) array of group ids, got shape {np.shape(groups)}")
    train = split == "train"
    if not (split == "test").any():
        raise DataError("k-sparse probing needs test rows; the split has none")
    xt, yt = _train_rows(x, y, train, n_classes)
    if problem := train_problem(yt):  # fit_probe would refuse it too, but only after the ranking
        raise DataError(f"k-sparse probing: {problem}")
    order = _rank(xt, yt, ranking, seed)
    capped = list(dict.fromkeys(min(int(k), x.shape[1]) for k in ks))
    rows = []
    for k in capped:
        ids = order[:k]
        result, _, _ = fit_probe(x[:, ids], y, split, n_classes=n_classes, seed=seed, groups=groups, **probe)
        result.update(k=k, ranking=ranking, features=[int(i) for i in ids])
        log.info("k-sparse %s k=%d: C=%g, test macro F1 %.3f", ranking, k, result["C"], result["test"]["macro_f1"])
        rows.append(result)
    return rows


def _features(x: Any) -> sp.csr_matrix | np.ndarray:
    if not sp.issparse(x) and not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DataError(f"features must be a 2-D (n_docs, n_features) array or scipy sparse matrix with n_features >= 1, "
                        f"got shape {x.shape}")
    if not sp.issparse(x) and not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"features must be numeric, got dtype {x.dtype}")
    return as_features(x)


def _train_rows(x: Any, y: np.ndarray, train_mask: np.ndarray, n_classes: int | None) -> tuple[Any, np.ndarray]:
    """(features, labels) of the train rows, validated; nothing outside ``train_mask`` is read."""
    x = _features(x)
    n = x.shape[0]
    y, mask = np.asarray(y), np.asarray(train_mask)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be a (n_docs,) = ({n},) integer array, got shape {y.shape} and dtype {y.dtype}")
    if mask.shape != (n,) or mask.dtype != bool:
        raise DataError(f"train_mask must be a (n_docs,) = ({n},) bool array, got shape {mask.shape} and dtype {mask.dtype}")
    yt = y[mask]
    if len(yt) and (yt.min() < 0 or (n_classes is not None and yt.max() >= n_classes)):
        bound = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
        raise DataError(f"train labels must be in {bound}, got {int(yt.min())}..{int(yt.max())}")
    if len(np.unique(yt)) < 2:
        raise DataError(f"ranking features needs train rows of at least two classes, got {len(yt)} train rows "
                        f"of {len(np.unique(yt))} class(es)")
    xt = x[mask]
    if not np.isfinite(xt.data if sp.issparse(xt) else xt).all():
        raise DataError("the train rows' features contain NaN or infinite values")
    return xt, yt


def _rank(xt: Any, yt: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "l1":
        return _rank_l1(xt, yt, seed)
    return _order(_mean_diff(xt, yt, normalized=method == "normalized_mean_diff"))


def _problems(yt: np.ndarray) -> list[np.ndarray]:
    """The binary problems a ranking scores: one (larger label vs the other) for two train classes,
    else one per train class against all other train rows (one-vs-rest). Bool positive masks."""
    classes = np.unique(yt)
    if len(classes) == 2:
        return [yt == classes[1]]
    return [yt == c for c in classes]


def _mean_diff(xt: Any, yt: np.ndarray, *, normalized: bool = False) -> np.ndarray:
    """(n_features,) |mean(positives) - mean(negatives)|, the maximum over :func:`_problems`; with
    ``normalized`` each feature divided by its mean absolute non-zero train value (0 if never non-zero)."""
    classes, index = np.unique(yt, return_inverse=True)
    counts = np.bincount(index, minlength=len(classes)).astype(np.float64)
    onehot = sp.csr_matrix((np.ones(len(yt)), (index, np.arange(len(yt)))), shape=(len(classes), len(yt)))
    class_sums = onehot @ xt  # (n_classes_present, n_features)
    class_sums = class_sums.toarray() if sp.issparse(class_sums) else np.asarray(class_sums, dtype=np.float64)
    total = class_sums.sum(0)
    n = float(len(yt))
    pos_rows = [len(classes) - 1] if len(classes) == 2 else range(len(classes))
    score = np.zeros(xt.shape[1])
    for c in pos_rows:
        diff = np.abs(class_sums[c] / counts[c] - (total - class_sums[c]) / (n - counts[c]))
        score = np.maximum(score, diff)
    if normalized:
        if sp.issparse(xt):
            absolute = abs(xt)
            nonzero = np.bincount(xt.indices[xt.data != 0], minlength=xt.shape[1]).astype(np.float64)
            abs_sum = np.asarray(absolute.sum(0)).ravel()
        else:
            nonzero = (xt != 0).sum(0).astype(np.float64)
            abs_sum = np.abs(xt).sum(0)
        active = nonzero > 0
        scale = np.ones(xt.shape[1])
        scale[active] = abs_sum[active] / nonzero[active]
        score = np.where(active, score / scale, 0.0)
    return score


def _order(score: np.ndarray) -> np.ndarray:
    """Feature ids by descending score, ties by id."""
    return np.argsort(-score, kind="stable").astype(np.int64)


@cache
def _l1_penalty() -> dict[str, Any]:
    """``l1_ratio=1`` where scikit-learn deprecates ``penalty`` (1.8+: its default is 'deprecated'), else penalty='l1'."""
    if LogisticRegression().get_params().get("penalty") == "deprecated":
        return {"l1_ratio": 1.0}
    return {"penalty": "l1"}


def _rank_l1(xt: Any, yt: np.ndarray, seed: int) -> np.ndarray:
    """Rank by entry along L1 logistic-regression paths (one per :func:`_problems`), see the module docstring."""
    sparse = sp.issparse(xt)
    xs = MaxAbsScaler().fit_transform(xt) if sparse else StandardScaler().fit_transform(xt)
    xs = sp.csr_matrix(xs) if sparse else np.asarray(xs)
    n, d = xs.shape
    never = L1_N_CS  # entry step of a feature that never enters
    entry = np.full(d, never)
    final = np.zeros(d)
    n_warnings = 0
    for positive in _problems(yt):
        yb = positive.astype(np.int64)
        n_pos = int(yb.sum())
        weight = np.where(positive, n / (2.0 * n_pos), n / (2.0 * (n - n_pos)))  # class_weight="balanced"
        weighted = sp.diags(weight) @ xs if sparse else xs * weight[:, None]
        try:
            c_min = l1_min_c(weighted, yb, loss="log", fit_intercept=False)
        except ValueError:  # every weighted correlation is 0: no feature can enter this path
            continue
        grid = c_min * np.logspace(0.0, L1_DECADES, L1_N_CS + 1)[1:]
        lr = LogisticRegression(solver="liblinear", class_weight="balanced", tol=L1_TOL, max_iter=L1_MAX_ITER,
                                random_state=seed, **_l1_penalty())
        path_entry = np.full(d, never)
        coef = np.zeros(d)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            for step, c in enumerate(grid):
                lr.set_params(C=float(c))
                lr.fit(xs, yb)
                coef = np.ravel(lr.coef_)
                path_entry[(coef != 0) & (path_entry == never)] = step
                if (path_entry < never).all():
                    break
        n_warnings += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        entry = np.minimum(entry, path_entry)
        final = np.maximum(final, np.abs(coef))
    if n_warnings:
        log.warning("l1 ranking: %d liblinear fits did not converge (tol %g, max_iter %d)", n_warnings, L1_TOL, L1_MAX_ITER)
    tie = _mean_diff(xt, yt)
    # np.lexsort: last key is the primary one; feature id last resort (lexsort is stable).
    return np.lexsort((np.arange(d), -tie, -final, entry)).astype(np.int64)

"""Probe-scale benchmark: saeprobe.probes.fit_probe on wide sparse SAE features.

Synthetic pooled SAE codes shaped like the paper's largest case: ``n_docs`` documents (default
20,000) x ``width`` features (default 65,536, Gemma Scope 65k), about ``active`` (default 64)
non-zero features per document, with top-20-count-like values (small positive integers, heavy
tailed: most features fire at one or two of a document's tokens, a few at many). Feature
popularity is Zipf-like, so some features are common and most are rare, as in real SAE codes.
The binary label depends on a few hundred informative features plus noise, so the CV-selected
regularisation is not at an edge of the grid.

Timed: one :func:`saeprobe.probes.fit_probe` call (stratified k-fold CV over ``Cs`` on the train
split, refit, test scoring) with the config's defaults. The features stay a scipy CSR matrix
throughout (never densified). Target: under 2 minutes on 2 cores.

    python benchmarks/probe.py [--docs 20000] [--width 65536] [--active 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

import numpy as np
import scipy.sparse as sp


def synthetic_codes(n_docs: int = 20000, width: int = 65536, active: int = 64, seed: int = 0,
                    n_informative: int = 300, signal: float = 0.05, label_noise: float = 0.1) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(X (n_docs, width) float32 CSR, y (n_docs,) int64 in {0,1}, split (n_docs,) train/test 80/20).

    Per document: ``Poisson(active)`` distinct features drawn with Zipf(1.1)-like popularity;
    values Geometric(0.35) >= 1 (counts of tokens keeping the feature in their top 20). Class 1
    documents draw a share ``signal`` of their features from ``n_informative`` class-specific
    features; a share ``label_noise`` of labels is then flipped.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_docs)
    popularity = 1.0 / np.arange(1, width + 1) ** 1.1
    popularity = popularity[rng.permutation(width)]
    popularity /= popularity.sum()
    informative = rng.choice(width, size=n_informative, replace=False)
    want = np.maximum(1, rng.poisson(active, n_docs))
    # Draw more than wanted, keep distinct (doc, feature) pairs in random order, then the first `want`.
    drawn = (want * 1.6).astype(np.int64) + 4
    doc = np.repeat(np.arange(n_docs), drawn)
    cols = rng.choice(width, size=len(doc), p=popularity)
    swap = (y[doc] == 1) & (rng.random(len(doc)) < signal)
    cols[swap] = rng.choice(informative, size=int(swap.sum()))
    _, first = np.unique(doc * width + cols, return_index=True)
    first = first[np.lexsort((rng.random(len(first)), doc[first]))]
    doc, cols = doc[first], cols[first]
    rank = np.arange(len(doc)) - np.searchsorted(doc, doc)
    keep = rank < want[doc]
    doc, cols = doc[keep], cols[keep]
    values = rng.geometric(0.35, len(doc)).astype(np.float32)
    x = sp.csr_matrix((values, (doc, cols)), shape=(n_docs, width))
    y = np.where(rng.random(n_docs) < label_noise, 1 - y, y)  # some labels no feature explains
    split = np.where(rng.random(n_docs) < 0.8, "train", "test")
    return x, y, split


def config_defaults() -> dict[str, Any]:
    """The ``probe`` section's solver defaults from the config schema (what a run uses unless told otherwise);
    ``split_seeds`` is not a fit setting (it picks extra splits)."""
    from saeprobe.config import load_schema

    return {k: v["default"] for k, v in load_schema()["properties"]["probe"]["properties"].items()
            if "default" in v and k != "split_seeds"}


def run(n_docs: int = 20000, width: int = 65536, active: int = 64, threads: int = 2, seed: int = 0,
        probe_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time one fit_probe call on synthetic codes with the config's probe defaults (``probe_kwargs``
    override them); ``threads`` bounds BLAS/OpenMP threads."""
    from threadpoolctl import threadpool_limits

    from saeprobe.probes import fit_probe

    x, y, split = synthetic_codes(n_docs, width, active, seed)
    kwargs = {**config_defaults(), "seed": 42, **(probe_kwargs or {})}
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with threadpool_limits(threads):
        result, coef, _ = fit_probe(x, y, split, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "docs": n_docs, "width": width, "mean_active": float(x.getnnz(axis=1).mean()), "nnz": int(x.nnz),
        "threads": threads, "wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": after.ru_maxrss / 1024, "solver": result.get("solver"), "C": result["C"],
        "cv_macro_f1": result["cv_macro_f1"], "test_macro_f1": result["test"]["macro_f1"],
        "cv_scores_by_C": result["cv_scores_by_C"], "convergence_warnings": result["convergence_warnings"],
        "nonzero_coef": int(np.count_nonzero(coef)), "load_avg": os.getloadavg(),
        "Cs": kwargs["Cs"], "cv_folds": kwargs["cv_folds"], "tol": kwargs["tol"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--width", type=int, default=65536)
    ap.add_argument("--active", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one line of JSON (for run.py)")
    args = ap.parse_args(argv)
    res = run(args.docs, args.width, args.active, args.threads, args.seed)
    print(json.dumps(res) if args.json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

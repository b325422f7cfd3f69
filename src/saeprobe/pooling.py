"""Per-document pooling of token features, and binarization.

Poolings (docs/DESIGN.md §5; Gallifant et al. 2025 §3 and the MOSAIC code):

- ``mean``, ``max``, ``sum`` over the document's pooled tokens;
- ``last``: the last pooled token (the last real token when special tokens are excluded);
- ``top{N}``: MOSAIC's count pooling — at each token keep the N largest SAE codes, then count
  per feature how many tokens kept it (SAE sources only).

Pooled tokens are real tokens only: padding is never stored, so it can never be pooled
(MOSAIC summed over pads, which made features depend on batch composition). With
``exclude_special=True`` (the default) BOS/CLS/SEP/EOS are left out too: Gemma Scope SAEs were
not trained on BOS, and BOS carries huge-norm activations. A document with no pooled token
gets an all-zero row, and is counted.

SAE codes are non-negative (ReLU, JumpReLU and TopK SAEs), so ``max`` over sparse codes is the
maximum of the stored values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from saeprobe import layout
from saeprobe.errors import DataError
from saeprobe.grid import parse_binarize
from saeprobe.io import atomic_path, reading

if TYPE_CHECKING:  # the stores (and zarr) only where a store is pooled: the probe jobs read pooled .npz files
    from saeprobe.store import RaggedStore

log = logging.getLogger("saeprobe")

_POOLING = re.compile(r"^(mean|max|sum|last|top([1-9][0-9]*))$")


def parse_pooling(name: str) -> tuple[str, int]:
    """``'top20'`` → ``('top', 20)``; ``'mean'`` → ``('mean', 0)``. Raises ValueError otherwise."""
    m = _POOLING.match(name)
    if not m:
        raise ValueError(f"unknown pooling {name!r}: expected mean, max, sum, last or top<N>")
    return ("top", int(m.group(2))) if m.group(2) else (m.group(1), 0)


def _layout(lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For kept tokens: their document index, the per-document kept count, each doc's last kept row."""
    token_doc = np.repeat(np.arange(len(lengths)), lengths)[keep]
    counts = np.bincount(token_doc, minlength=len(lengths))
    kept_rows = np.flatnonzero(keep)
    last = np.full(len(lengths), -1, dtype=np.int64)
    last[token_doc] = kept_rows  # later rows overwrite earlier ones: the last kept row wins
    return token_doc, counts, last


def pool_sparse(codes: sp.csr_matrix, lengths: np.ndarray, keep: np.ndarray, pooling: str) -> sp.csr_matrix:
    """Pool sparse token codes into one row per document.

    Args:
        codes: (n_tokens, d_sae) CSR, tokens of consecutive documents.
        lengths: (n_docs,) tokens per document; sums to n_tokens.
        keep: (n_tokens,) bool, tokens to pool.
        pooling: see module docstring.
    Returns:
        (n_docs, d_sae) float32 CSR.
    """
    kind, n = parse_pooling(pooling)
    n_docs, d = len(lengths), codes.shape[1]
    token_doc, counts, last = _layout(lengths, keep)
    if kind == "last":
        has = np.flatnonzero(last >= 0)
        return (_assignment(has, n_docs) @ codes[last[has]]).tocsr()
    kept = codes[np.flatnonzero(keep)]
    if kind == "top":
        kept = _top_n_indicator(kept.tocsr(), n)
    if kind == "max":
        coo = kept.tocoo()
        key = token_doc[coo.row].astype(np.int64) * d + coo.col
        order = np.argsort(key, kind="stable")
        uniq, starts = np.unique(key[order], return_index=True)
        vals = np.maximum.reduceat(coo.data[order], starts) if len(starts) else np.zeros(0, np.float32)
        return sp.csr_matrix((vals.astype(np.float32), (uniq // d, uniq % d)), shape=(n_docs, d))
    pooled = (_assignment(token_doc, n_docs) @ kept).tocsr().astype(np.float32)
    if kind == "mean":
        pooled = sp.diags(1.0 / np.maximum(counts, 1).astype(np.float32)) @ pooled
    return sp.csr_matrix(pooled, dtype=np.float32)


def _assignment(token_doc: np.ndarray, n_docs: int) -> sp.csr_matrix:
    """(n_docs, n) 0/1 matrix with a 1 at (token_doc[j], j): row sums group rows by document."""
    n = len(token_doc)
    return sp.csr_matrix((np.ones(n, np.float32), (token_doc, np.arange(n))), shape=(n_docs, n))


def _top_n_indicator(codes: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Per row, 1.0 at the ``n`` largest stored codes (ties broken by feature index), else 0."""
    codes.sort_indices()
    row = np.repeat(np.arange(codes.shape[0]), np.diff(codes.indptr))
    order = np.lexsort((codes.indices, -codes.data, row))  # by row, then value desc, then index
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - codes.indptr[row[order]]
    sel = (rank < n) & (codes.data > 0)
    return sp.csr_matrix(
        (np.ones(int(sel.sum()), np.float32), (row[sel], codes.indices[sel])), shape=codes.shape
    )


def pool_dense(x: np.ndarray, lengths: np.ndarray, keep: np.ndarray, pooling: str) -> np.ndarray:
    """Pool dense token vectors (hidden states) into one row per document.

    Args:
        x: (n_tokens, d) float array.
        lengths, keep: as in :func:`pool_sparse`.
        pooling: mean, max, sum or last (``top{N}`` is defined for SAE codes only).
    Returns:
        (n_docs, d) float32; documents without pooled tokens are all-zero rows.
    """
    kind, _ = parse_pooling(pooling)
    if kind == "top":
        raise ValueError("top-N count pooling applies to SAE codes, not hidden states")
    n_docs = len(lengths)
    token_doc, counts, last = _layout(lengths, keep)
    out = np.zeros((n_docs, x.shape[1]), dtype=np.float32)
    kept = x[keep]
    if kind == "last":
        has = last >= 0
        out[has] = x[last[has]]
    elif kind == "max":
        nonempty = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
        if len(kept):
            out[nonempty] = np.maximum.reduceat(kept, starts, axis=0)
    else:
        out[:] = _assignment(token_doc, n_docs) @ kept
        if kind == "mean":
            out /= np.maximum(counts, 1)[:, None]
    return out


def binarize(x: sp.csr_matrix | np.ndarray, threshold: float | None) -> sp.csr_matrix | np.ndarray:
    """``x > threshold`` as float32 (1.0 / 0.0), keeping sparsity; ``None`` returns ``x``.

    MOSAIC binarizes sum/count-pooled SAE features with threshold 1.0.
    """
    if threshold is None:
        return x
    if sp.issparse(x):
        if threshold < 0:
            raise ValueError("a negative threshold would turn every implicit zero into 1; use threshold >= 0")
        out = sp.csr_matrix(x, dtype=np.float32, copy=True)
        out.data = (out.data > threshold).astype(np.float32)
        out.eliminate_zeros()
        return out
    return (np.asarray(x) > threshold).astype(np.float32)


def pool_store(store: RaggedStore, pooling: str, exclude_special: bool = True, layer: int | None = None,
               block_tokens: int = 1 << 16) -> tuple[sp.csr_matrix | np.ndarray, dict[str, int]]:
    """Pool a whole store with one pooling (see :func:`pool_store_all`). Returns (matrix, stats)."""
    matrices, stats = pool_store_all(store, [pooling], exclude_special, layer, block_tokens)
    return matrices[pooling], stats[pooling]


def pool_store_all(store: RaggedStore, poolings: Sequence[str], exclude_special: bool = True, layer: int | None = None,
                   block_tokens: int = 1 << 16) -> tuple[dict[str, sp.csr_matrix | np.ndarray], dict[str, dict[str, int]]]:
    """Pool a whole store with every pooling in one pass, block by block. Rows come back in doc_id order (row i = doc i).

    Each block of documents is read once and pooled every way, so a store is read once however
    many poolings are asked for.

    Args:
        store: a :class:`CodeStore` (sparse codes) or :class:`ActivationStore` (needs ``layer``).
        poolings: names as in the module docstring.
    Returns:
        ({pooling: (n_docs, n_features) float32 CSR for codes or dense array for hidden states},
        {pooling: stats}) — stats count documents and those with an all-zero row.
    Raises:
        ValueError: an unknown pooling, ``top<N>`` on hidden states, or a store whose doc_id is
            not a permutation of 0..n_docs-1.
    """
    from saeprobe.store import ActivationStore, CodeStore

    poolings = list(dict.fromkeys(poolings))  # a pooling asked for twice is computed once
    for pooling in poolings:
        parse_pooling(pooling)
    parts: dict[str, list] = {p: [] for p in poolings}
    for a, b in store.doc_blocks(block_tokens):
        r0, r1 = int(store.offsets[a]), int(store.offsets[b])
        lengths = np.diff(store.offsets[a : b + 1])
        keep = np.ones(r1 - r0, dtype=bool)
        if exclude_special:
            keep &= ~store.special(r0, r1)
        if isinstance(store, CodeStore):
            rows = store.rows(r0, r1)
            for pooling in poolings:
                parts[pooling].append(pool_sparse(rows, lengths, keep, pooling))
        else:
            assert isinstance(store, ActivationStore) and layer is not None
            rows = store.rows(layer, r0, r1)
            for pooling in poolings:
                parts[pooling].append(pool_dense(rows, lengths, keep, pooling))
    inverse = np.argsort(store.doc_id, kind="stable")
    if not np.array_equal(store.doc_id[inverse], np.arange(store.n_docs)):
        raise ValueError(f"{store.path}: doc_id is not a permutation of 0..{store.n_docs - 1}")
    matrices, stats = {}, {}
    for pooling, blocks in parts.items():
        if blocks and sp.issparse(blocks[0]):
            matrix: sp.csr_matrix | np.ndarray = sp.vstack(blocks).tocsr()[inverse]
        else:
            matrix = np.concatenate(blocks)[inverse] if blocks else np.zeros((0, 0), np.float32)
        empty = int((matrix.getnnz(axis=1) == 0).sum()) if sp.issparse(matrix) else int((~matrix.any(axis=1)).sum())
        matrices[pooling], stats[pooling] = matrix, {"n_docs": store.n_docs, "n_empty_rows": empty}
    return matrices, stats


def save_pooled(path: str | Path, matrix: sp.csr_matrix | np.ndarray) -> None:
    """Write a pooled matrix (row i = doc_id i) as .npz atomically (sparse: CSR arrays)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            if sp.issparse(matrix):
                m = sp.csr_matrix(matrix)
                np.savez(fh, format="csr", data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))
            else:
                np.savez(fh, format="dense", X=np.asarray(matrix, np.float32))


def load_pooled(path: str | Path) -> sp.csr_matrix | np.ndarray:
    """A :func:`save_pooled` matrix: (n_docs, n_features) CSR, or a dense float32 array.

    Raises:
        CacheError: the file is missing, truncated or fails its zip CRC (see :func:`saeprobe.io.reading`).
    """
    with reading(path), np.load(path) as z:
        if str(z["format"]) == "csr":
            return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        return z["X"]


def load_cell(pooled: str | Path, pooling: str, binarize_name: str, n_docs: int) -> sp.csr_matrix | np.ndarray:
    """One cell's features: pooling ``pooling`` from the unit folder ``pooled``, binarized as named.

    Args:
        pooled: a pool job's output folder (:data:`saeprobe.layout.POOLED`).
        binarize_name: ``raw`` or ``gt<threshold>`` (:func:`saeprobe.grid.binarize_name`).
        n_docs: documents of the prepared dataset the rows must match.
    Returns:
        (n_docs, n_features) float32 CSR (SAE codes) or dense array (hidden states); row i = doc_id i.
    Raises:
        CacheError: the pooled file is missing or damaged.
        DataError: it has another number of rows than the dataset has documents.
    """
    path = layout.cell_file(str(pooled), pooling)
    x = binarize(load_pooled(path), parse_binarize(binarize_name))
    if x.shape[0] != n_docs:
        raise DataError(f"{path}: {x.shape[0]} rows but the dataset has {n_docs} documents")
    return x

"""Every pooling against hand-computed examples, with BOS excluded, plus binarization."""

import numpy as np
import pytest
import scipy.sparse as sp

from saeprobe.pooling import binarize, parse_pooling, pool_dense, pool_sparse

# Two documents, stored back to back (padding is never stored). Token 0 of each is BOS.
#   doc 0: BOS, a, b        doc 1: BOS, c
# Feature columns 0..3.
CODES = np.array(
    [
        [9.0, 0.0, 0.0, 9.0],  # doc0 BOS (huge, must not leak into pooled rows)
        [1.0, 2.0, 0.0, 0.0],  # doc0 a
        [3.0, 0.0, 0.5, 0.0],  # doc0 b
        [9.0, 9.0, 9.0, 9.0],  # doc1 BOS
        [0.0, 0.0, 4.0, 1.0],  # doc1 c
    ],
    dtype=np.float32,
)
LENGTHS = np.array([3, 2])
BOS = np.array([True, False, False, True, False])

EXPECTED_NO_BOS = {
    "sum": [[4.0, 2.0, 0.5, 0.0], [0.0, 0.0, 4.0, 1.0]],
    "mean": [[2.0, 1.0, 0.25, 0.0], [0.0, 0.0, 4.0, 1.0]],
    "max": [[3.0, 2.0, 0.5, 0.0], [0.0, 0.0, 4.0, 1.0]],
    "last": [[3.0, 0.0, 0.5, 0.0], [0.0, 0.0, 4.0, 1.0]],
    # top1: token a keeps feature 1 (2.0), token b keeps feature 0 (3.0), token c keeps feature 2.
    "top1": [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
    # top2: a keeps {1, 0}, b keeps {0, 2}, c keeps {2, 3}.
    "top2": [[2.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
}


@pytest.mark.parametrize("pooling", sorted(EXPECTED_NO_BOS))
def test_sparse_pooling_excludes_bos(pooling):
    out = pool_sparse(sp.csr_matrix(CODES), LENGTHS, ~BOS, pooling)
    assert sp.issparse(out) and out.dtype == np.float32
    np.testing.assert_allclose(out.toarray(), EXPECTED_NO_BOS[pooling])


@pytest.mark.parametrize("pooling", ["sum", "mean", "max", "last"])
def test_dense_pooling_matches_sparse(pooling):
    out = pool_dense(CODES, LENGTHS, ~BOS, pooling)
    np.testing.assert_allclose(out, EXPECTED_NO_BOS[pooling])


def test_including_bos_changes_sum():
    out = pool_sparse(sp.csr_matrix(CODES), LENGTHS, np.ones(5, bool), "sum").toarray()
    np.testing.assert_allclose(out, [[13.0, 2.0, 0.5, 9.0], [9.0, 9.0, 13.0, 10.0]])


def test_dense_max_handles_negative_values_and_empty_docs():
    x = np.array([[-1.0, -5.0], [-3.0, -2.0], [7.0, 7.0]], np.float32)
    keep = np.array([True, True, False])  # doc 1 (one token) has nothing to pool
    out = pool_dense(x, np.array([2, 1]), keep, "max")
    np.testing.assert_allclose(out, [[-1.0, -2.0], [0.0, 0.0]])
    np.testing.assert_allclose(pool_dense(x, np.array([2, 1]), keep, "last"), [[-3.0, -2.0], [0.0, 0.0]])


def test_doc_without_pooled_tokens_gets_empty_row():
    keep = ~BOS
    keep[4] = False  # doc 1 keeps nothing
    for pooling in ("sum", "mean", "max", "last", "top1"):
        out = pool_sparse(sp.csr_matrix(CODES), LENGTHS, keep, pooling)
        assert out[1].nnz == 0, pooling


def test_top_n_rejects_hidden_states_and_bad_names():
    with pytest.raises(ValueError, match="SAE codes"):
        pool_dense(CODES, LENGTHS, ~BOS, "top2")
    with pytest.raises(ValueError, match="unknown pooling"):
        parse_pooling("median")
    assert parse_pooling("top50") == ("top", 50)


def test_binarize_sparse_and_dense():
    x = sp.csr_matrix(np.array([[0.5, 1.0, 1.5], [0.0, 2.0, 0.0]], np.float32))
    b = binarize(x, 1.0)
    np.testing.assert_array_equal(b.toarray(), [[0, 0, 1], [0, 1, 0]])
    assert b.nnz == 2  # zeros from thresholding are not stored
    np.testing.assert_array_equal(binarize(x.toarray(), 0.0), [[1, 1, 1], [0, 1, 0]])
    assert binarize(x, None) is x
    with pytest.raises(ValueError):
        binarize(x, -1.0)


def test_pool_store_all_matches_one_pooling_at_a_time_even_with_repeats(tmp_path):
    """Every pooling of a one-pass pool equals pooling alone, and a repeated name changes nothing."""
    import saeprobe.config as sc
    import saeprobe.grid as sg
    from saeprobe.pooling import pool_store, pool_store_all

    from tests.helpers import write_dense_store

    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 1, 6, 3)]
    special = [np.r_[True, np.zeros(len(d) - 1, bool)] for d in docs]
    store = write_dense_store(tmp_path / "s.zarr", docs, special, layer=1, doc_order=[2, 0, 3, 1], chunk=4)
    many, _ = pool_store_all(store, ["mean", "max", "mean", "last", "max"], layer=1, block_tokens=5)
    assert list(many) == ["mean", "max", "last"]
    for name, matrix in many.items():
        alone, _ = pool_store(store, name, layer=1, block_tokens=5)
        np.testing.assert_array_equal(matrix, alone)
        assert matrix.shape == (4, 3)
    cfg = sc.validate({"datasets": {"d": {"path": "d.parquet"}}, "models": {"m": {"path": "m", "layers": [1]}},
                       "saes": {"s": {"model": "m", "path": "sae"}},
                       "features": {"poolings": ["mean", "top2"], "binarize": [None, 1.0]},
                       "sweep": {"datasets": ["d"], "poolings": ["top2"], "binarize": [1.0]}})
    assert sg.Plan(cfg).poolings(sg.Unit("m", "d", "s", 1)) == ["mean", "top2"]  # each once

"""SAEs: sparse code round-trip, training data selection, SAELens training and loading."""

import numpy as np
import pytest
import torch
import zarr

from saeprobe.errors import ConfigError
from saeprobe.sae import collect_vectors, encode_store, load_sae, measure, train_topk
from saeprobe.store import CodeStore
from tests.helpers import make_jumprelu, write_dense_store


def test_sparse_codes_roundtrip_and_quality(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(n, 32)).astype(np.float32) for n in (5, 17, 1, 9)]
    special = [np.eye(1, len(d), 0, dtype=bool)[0] for d in docs]  # first token special
    store = write_dense_store(tmp_path / "acts.zarr", docs, special, doc_order=[2, 0, 3, 1])
    sae = make_jumprelu(32, 64)
    group = zarr.open_group(str(tmp_path / "codes.zarr"), mode="w")
    stats = encode_store(sae, store, 0, group, heldout_docs=np.array([False, True, False, True]), batch_size=10,
                         chunk_tokens=4)
    codes = CodeStore(tmp_path / "codes.zarr")
    assert codes.d_sae == 64 and codes.n_tokens == 32
    np.testing.assert_array_equal(codes.doc_id, [2, 0, 3, 1])
    x = torch.from_numpy(np.concatenate([docs[d] for d in [2, 0, 3, 1]]))
    dense = sae.encode(x).detach().numpy()
    np.testing.assert_allclose(codes.rows(0, 32).toarray(), dense, rtol=1e-5, atol=1e-6)  # batching changes float order
    assert stats["nnz"] == int((dense != 0).sum())
    real = ~np.concatenate([special[d] for d in [2, 0, 3, 1]])
    direct = measure(sae, x[torch.from_numpy(real)])
    assert stats["quality"]["explained_variance"] == pytest.approx(direct["explained_variance"], rel=1e-6)
    assert stats["quality"]["l0"] == pytest.approx(direct["l0"])
    assert stats["quality_heldout"]["n_tokens"] == (17 - 1) + (9 - 1)


def test_encode_rejects_width_mismatch(tmp_path):
    store = write_dense_store(tmp_path / "a.zarr", [np.zeros((3, 16), np.float32)], [np.zeros(3, bool)])
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    with pytest.raises(ValueError, match="d_in=32 does not match the model's d_model=16"):
        encode_store(make_jumprelu(32, 64), store, 0, group, heldout_docs=np.zeros(1, bool))


def test_training_vectors_come_from_train_docs_and_real_tokens_only(tmp_path):
    docs = [np.full((6, 4), v, np.float32) for v in (1.0, -1.0, 1.0)]
    special = [np.array([1, 0, 0, 0, 0, 1], bool)] * 3
    for d in docs:
        d[[0, 5]] = 99.0  # special tokens
    store = write_dense_store(tmp_path / "a.zarr", docs, special)
    x = collect_vectors([store], [np.array([True, False, True])], 0, max_vectors=100, seed=0)
    assert x.shape == (8, 4) and torch.all(x == 1.0)
    capped = collect_vectors([store], [np.array([True, False, True])], 0, max_vectors=3, seed=0)
    assert len(capped) == 3 and torch.all(capped == 1.0)


def test_train_topk_saves_a_loadable_saelens_sae(tmp_path):
    torch.manual_seed(0)
    basis = torch.randn(24, 16)
    codes = torch.relu(torch.randn(6000, 24)) * (torch.rand(6000, 24) < 0.15)
    x = codes @ basis
    log = train_topk(x, tmp_path / "sae", width=32, k=4, training_tokens=60000, batch_size=256, lr=3e-3,
                     heldout_fraction=0.1, seed=0)
    assert (tmp_path / "sae" / "cfg.json").exists()
    sae = load_sae({"train": {}}, layer=0, device="cpu", trained_dir=tmp_path / "sae")
    assert sae.cfg.d_sae == 32 and sae.cfg.d_in == 16
    assert log["heldout"]["l0"] <= 4.0
    assert log["heldout"]["explained_variance"] > 0.5
    assert log["loss_curve"][0][1] > log["final_loss"]


def test_load_sae_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no SAELens folder"):
        load_sae({"path": str(tmp_path / "nope_{layer}")}, layer=3, device="cpu", name="mine")
    with pytest.raises(ConfigError, match="release 'no-such-release' is not in SAELens' pretrained SAE directory"):
        load_sae({"release": "no-such-release", "sae_id": "layer_{layer}/width_16k/canonical"}, layer=3, device="cpu")


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_sparse_decode_matches_dense_and_codes_do_not_depend_on_it(tmp_path, arch, monkeypatch):
    # Quality statistics come from a sparse decode where SAELens allows it; they must agree with
    # the dense decode, and the stored codes must be the same either way.
    import saeprobe.sae as sae_mod
    from sae_lens import TopKSAE, TopKSAEConfig

    rng = np.random.default_rng(1)
    docs = [rng.normal(size=(n, 32)).astype(np.float32) for n in (7, 30, 12)]
    store = write_dense_store(tmp_path / "acts.zarr", docs, [np.zeros(len(d), bool) for d in docs])
    if arch == "topk":
        torch.manual_seed(0)
        sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=96, k=5, dtype="float32", device="cpu"))
    else:
        sae = make_jumprelu(32, 96)
    with torch.inference_mode():
        assert sae_mod.sparse_decode_ok(sae, torch.from_numpy(docs[1]))
    held = np.array([True, False, True])
    fast = encode_store(sae, store, 0, zarr.open_group(str(tmp_path / "a.zarr"), mode="w"), heldout_docs=held, batch_size=16)
    monkeypatch.setattr(sae_mod, "sparse_decode_ok", lambda sae, x: False)
    slow = encode_store(sae, store, 0, zarr.open_group(str(tmp_path / "b.zarr"), mode="w"), heldout_docs=held, batch_size=16)
    for key in ("quality", "quality_heldout"):
        assert fast[key].keys() == slow[key].keys()
        for k, v in slow[key].items():
            assert fast[key][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (key, k)
    a, b = CodeStore(tmp_path / "a.zarr"), CodeStore(tmp_path / "b.zarr")
    for name in ("indices", "values", "indptr", "special"):
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:])
    assert fast["nnz"] == slow["nnz"] > 0


def test_encode_batches_are_capped_by_width():
    from saeprobe.sae import encode_batch_size

    assert encode_batch_size(4096, 16384) == 4096
    assert encode_batch_size(4096, 65536) == 2048  # (tokens x d_sae) float32 codes stay under 512 MB
    assert encode_batch_size(4096, 1 << 30) == 1


def test_sae_whose_decode_is_not_linear_in_codes_is_decoded_densely():
    # TopK rescaled by decoder norms multiplies codes by 1/|W_dec| inside decode: the sparse
    # shortcut would be wrong, and the check must say so.
    from sae_lens import TopKSAE, TopKSAEConfig

    from saeprobe.sae import sparse_decode_ok

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=40, k=4, dtype="float32", device="cpu", rescale_acts_by_decoder_norm=True))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.2, 3.0, 40)[:, None])
        assert not sparse_decode_ok(sae, torch.randn(32, 16))


def test_prefetch_keeps_order_and_reraises():
    from saeprobe.store import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def boom():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(boom()):
            got.append(item)
    assert got == [1]
    stream = prefetch(iter(range(100)))
    assert next(stream) == 0
    stream.close()  # an abandoned consumer stops the producer thread


def test_explained_variance_survives_a_large_mean(tmp_path):
    # Residual streams can have means far above their spread; float32 sums would cancel.
    rng = np.random.default_rng(2)
    docs = [(rng.normal(size=(n, 32)) + 3000.0).astype(np.float32) for n in (40, 70)]
    store = write_dense_store(tmp_path / "acts.zarr", docs, [np.zeros(len(d), bool) for d in docs])
    sae = make_jumprelu(32, 64)
    stats = encode_store(sae, store, 0, zarr.open_group(str(tmp_path / "c.zarr"), mode="w"),
                         heldout_docs=np.zeros(2, bool), batch_size=32)
    x = torch.from_numpy(np.concatenate(docs))
    direct = measure(sae, x)  # float64 throughout
    assert stats["quality"]["explained_variance"] == pytest.approx(direct["explained_variance"], rel=1e-4)

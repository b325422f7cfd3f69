"""The GPU data path: chunk-once encoding reads, dense budget, bf16 encode, parallel writers."""

from __future__ import annotations

import contextlib
from collections import Counter

import numpy as np
import pytest
import torch
import zarr

from saeprobe.sae import dense_budget, encode_batch_size, encode_dtype, encode_store
from saeprobe.store import AppendWriter, BackgroundWriter, CodeStore, create_array
from tests.helpers import make_jumprelu, write_dense_store


@contextlib.contextmanager
def chunk_reads():
    """Count the keys Zarr's LocalStore reads (every chunk read is one ``get`` of its key)."""
    counts: Counter[str] = Counter()
    original = zarr.storage.LocalStore.get

    async def get(self, key, *args, **kwargs):
        counts[key] += 1
        return await original(self, key, *args, **kwargs)

    zarr.storage.LocalStore.get = get
    try:
        yield counts
    finally:
        zarr.storage.LocalStore.get = original


def _store(tmp_path, chunk=8, d=32, seed=0):
    rng = np.random.default_rng(seed)
    docs = [rng.normal(size=(n, d)).astype(np.float32) for n in (5, 17, 1, 9, 30, 3, 12)]
    special = [np.eye(1, len(x), 0, dtype=bool)[0] for x in docs]
    store = write_dense_store(tmp_path / "acts.zarr", docs, special, doc_order=[2, 0, 3, 1, 6, 4, 5], chunk=chunk)
    x = torch.from_numpy(np.concatenate([docs[i] for i in [2, 0, 3, 1, 6, 4, 5]]))
    return store, x


@pytest.mark.parametrize("batch_size", [3, 8, 20])
def test_encode_decodes_each_activation_chunk_once_and_codes_match(tmp_path, batch_size):
    store, x = _store(tmp_path)
    sae = make_jumprelu(32, 64)
    with chunk_reads() as reads:
        stats = encode_store(sae, store, 0, zarr.open_group(str(tmp_path / "codes.zarr"), mode="w"),
                             heldout_docs=np.arange(7) % 2 == 1, batch_size=batch_size, chunk_tokens=4)
    layer = {k: n for k, n in reads.items() if k.startswith("layer_0/c/")}
    n_chunks = -(-store.n_tokens // 8)
    assert len(layer) == n_chunks and set(layer.values()) == {1}, layer  # every chunk, each decoded once
    codes = CodeStore(tmp_path / "codes.zarr").rows(0, store.n_tokens).toarray()
    with torch.inference_mode():
        reference = sae.encode(x).numpy()
    np.testing.assert_allclose(codes, reference, rtol=1e-5, atol=1e-6)
    assert stats["nnz"] == int((reference != 0).sum()) and stats["encode_dtype"] == "float32"
    assert stats["quality_heldout"]["n_tokens"] == (17 - 1) + (9 - 1) + (3 - 1)


def test_dense_budget_caps_the_dense_codes(tmp_path, monkeypatch):
    store, _ = _store(tmp_path)
    sae = make_jumprelu(32, 64)
    seen = []
    encode = sae.encode
    monkeypatch.setattr(sae, "encode", lambda x: seen.append(len(x)) or encode(x))
    encode_store(sae, store, 0, zarr.open_group(str(tmp_path / "c.zarr"), mode="w"), heldout_docs=np.zeros(7, bool),
                 batch_size=4096, max_dense=5 * 64)
    assert max(seen) * 64 <= 5 * 64 and sum(seen) >= store.n_tokens
    assert dense_budget("cpu") == 1 << 27 and dense_budget(torch.device("cuda")) == 1 << 30
    assert encode_batch_size(4096, 131072, dense_budget("cpu")) == 1024
    assert encode_batch_size(4096, 131072, dense_budget("cuda")) == 4096


def test_encode_dtype_choice():
    assert encode_dtype("auto", "cpu") == torch.float32  # bf16 only on a CUDA device with native bf16
    assert encode_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="expected one of"):
        encode_dtype("float16", "cpu")


def test_bf16_encode_agrees_with_float32(tmp_path):
    store, _ = _store(tmp_path, d=64)
    sae = make_jumprelu(64, 512, threshold=0.3)
    out = {}
    for dtype in ("float32", "bfloat16"):
        stats = encode_store(sae, store, 0, zarr.open_group(str(tmp_path / dtype), mode="w"),
                             heldout_docs=np.zeros(7, bool), dtype=dtype)
        assert stats["encode_dtype"] == dtype
        group = zarr.open_group(str(tmp_path / dtype), mode="r")
        assert group["values"].dtype == np.float32  # stored float32 either way
        out[dtype] = (CodeStore(tmp_path / dtype).rows(0, store.n_tokens).toarray(), stats)
    assert sae.W_enc.dtype == torch.float32  # the caller's SAE is left as it was
    a, b = out["float32"][0], out["bfloat16"][0]
    both, either = ((a != 0) & (b != 0)).sum(1), ((a != 0) | (b != 0)).sum(1)
    jaccard = float(np.mean(both / np.maximum(either, 1)))
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    assert jaccard > 0.95 and rel < 0.05, (jaccard, rel)  # bf16 keeps 8 bits of mantissa
    assert 0 < rel  # and it really computed in bf16
    ev = [out[k][1]["quality"]["explained_variance"] for k in out]
    assert ev[1] == pytest.approx(ev[0], abs=0.02)


def test_parallel_writers_write_the_same_chunks_as_one(tmp_path):
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n, 6)).astype(np.float16) for n in (5, 13, 1, 40, 7)]

    def write(name, parallel, per_write):
        group = zarr.open_group(str(tmp_path / name), mode="w")
        writers = {f"a{i}": AppendWriter(create_array(group, f"a{i}", (6,), np.float16, 4), per_write) for i in range(3)}
        if parallel:
            with BackgroundWriter(writers, max_pending=1) as w:
                for b in batches:
                    w.submit({key: b for key in writers})
                w.close()
            return w.busy_s
        for b in batches:
            for wr in writers.values():
                wr.write(b)
        for wr in writers.values():
            wr.close()
        return None

    write("one", False, 1)
    busy = write("many", True, 4)
    assert set(busy) == {"a0", "a1", "a2"} and all(v > 0 for v in busy.values())
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(files) == 3 * -(-66 // 4)
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "many" / rel).read_bytes(), rel


def test_extraction_reports_writer_time_and_copies_once_per_batch(tiny_llama, tmp_path, monkeypatch):
    from saeprobe import activations
    from saeprobe.models import load_model

    model = load_model({"path": str(tiny_llama)}, "tiny", torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(0)
    ids = [rng.integers(3, 100, n) for n in (7, 30, 2, 18, 11)]
    special = [np.zeros(len(x), bool) for x in ids]
    calls = []
    to_host = activations.to_host
    monkeypatch.setattr(activations, "to_host", lambda ts: calls.append(len(ts)) or to_host(ts))
    stats = activations.extract(model, ids, special, zarr.open_group(str(tmp_path / "s.zarr"), mode="w"), [0, 2],
                                token_budget=40, chunk_tokens=8)
    n_batches = len(activations.plan_batches(np.array([len(x) for x in ids]), 40))
    assert len(calls) == n_batches  # one device->host transfer (and sync) per batch, for all layers
    w = stats["writer"]
    assert set(w["busy_s"]) == {"layer_0", "layer_2", "special"} and 0 < w["busy_max_s"] <= w["wall_s"]

"""Extraction: layer convention, early stop, batching independence, ragged Zarr round-trip."""

import numpy as np
import pytest
import torch
import zarr

from saeprobe.activations import LayerCapture, extract, plan_batches
from saeprobe.models import load_model, load_tokenizer
from saeprobe.store import ActivationStore
from saeprobe.tokenize import tokenize

TEXTS = ["Once upon a time there was a cat.", "Hi", "The dog ran to the park and played with a red ball all day long.",
         "Lily was sad.", "A", "She saw a big tree near the river and sat down under it to rest."]


@pytest.fixture(scope="module")
def llama(tiny_llama):
    spec = {"path": str(tiny_llama)}
    model = load_model(spec, "tiny", torch.device("cpu"), torch.float32)
    tok = tokenize(TEXTS, load_tokenizer(spec, "tiny"), max_length=64)
    ids = [np.array(x, np.int64) for x in tok["input_ids"].to_list()]
    special = [np.array(x, bool) for x in tok["special_mask"].to_list()]
    return model, ids, special


def test_plan_batches_respects_budget_and_sorts():
    lengths = np.array([5, 40, 3, 40, 12, 1])
    batches = plan_batches(lengths, token_budget=80)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(6))
    assert list(lengths[order]) == sorted(lengths, reverse=True)
    assert all(len(b) * lengths[b].max() <= 80 for b in batches)
    assert plan_batches(np.array([500]), 100)[0].tolist() == [0]  # an over-budget doc is its own batch


def test_block_output_matches_hidden_states_and_mosaic_is_one_earlier(llama):
    model, ids, _ = llama
    x = torch.tensor(ids[0])[None]
    ref = model(input_ids=x, output_hidden_states=True).hidden_states
    for convention, shift in (("block_output", 1), ("mosaic", 0)):
        cap = LayerCapture(model, [0, 2], convention)
        out = cap.run(model, x, torch.ones_like(x))
        cap.remove()
        for layer in (0, 2):
            torch.testing.assert_close(out[layer], ref[layer + shift])


def test_last_layer_is_block_output_not_final_norm(llama):
    # hidden_states[-1] is taken after the final norm: the hook gives the raw block output.
    model, ids, _ = llama
    x = torch.tensor(ids[0])[None]
    cap = LayerCapture(model, [3])
    out = cap.run(model, x, torch.ones_like(x))[3]
    cap.remove()
    ref = model(input_ids=x, output_hidden_states=True).hidden_states[4]
    torch.testing.assert_close(model.norm(out), ref)
    assert not torch.allclose(out, ref)


def test_forward_stops_after_deepest_layer(llama):
    model, ids, _ = llama
    from saeprobe.models import blocks

    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(blocks(model))]
    cap = LayerCapture(model, [1], "block_output")
    cap.run(model, torch.tensor(ids[0])[None], torch.ones(1, len(ids[0]), dtype=torch.long))
    cap.remove()
    for h in handles:
        h.remove()
    assert calls == [0, 1]  # blocks 2 and 3 never ran


def test_layer_out_of_range_is_a_clear_error(llama):
    with pytest.raises(ValueError, match=r"the model has 4 blocks \(valid layers 0..3\)"):
        LayerCapture(llama[0], [4])


def _extract(model, ids, special, tmp_path, name, budget, dtype="float32"):
    group = zarr.open_group(str(tmp_path / name), mode="w")
    extract(model, ids, special, group, [1, 3], token_budget=budget, store_dtype=dtype, chunk_tokens=8)
    return ActivationStore(tmp_path / name)


def test_ragged_store_roundtrip_and_batch_independence(llama, tmp_path):
    model, ids, special = llama
    big = _extract(model, ids, special, tmp_path, "big.zarr", budget=4096)
    small = _extract(model, ids, special, tmp_path, "small.zarr", budget=20)
    assert big.n_tokens == sum(len(x) for x in ids)  # no padding stored
    assert sorted(big.doc_id.tolist()) == list(range(len(ids)))
    for store in (big, small):
        for i, doc in enumerate(store.doc_id):
            a, b = store.offsets[i], store.offsets[i + 1]
            x = torch.tensor(ids[doc])[None]
            ref = model(input_ids=x, output_hidden_states=True).hidden_states
            np.testing.assert_allclose(store.rows(1, a, b), ref[2][0].detach().numpy(), atol=2e-5)
            np.testing.assert_array_equal(store.special(a, b), special[doc])


def test_float16_store_and_overflow_check(llama, tmp_path):
    model, ids, special = llama
    store = _extract(model, ids, special, tmp_path, "f16.zarr", budget=4096, dtype="float16")
    assert store.group["layer_1"].dtype == np.float16
    saved = model.embed_tokens.weight.detach().clone()
    with torch.no_grad():
        model.embed_tokens.weight.mul_(1e7)
    try:
        with pytest.raises(OverflowError, match="layer 1: activation magnitude .* float16"):
            _extract(model, ids, special, tmp_path, "boom.zarr", budget=4096, dtype="float16")
    finally:
        with torch.no_grad():
            model.embed_tokens.weight.copy_(saved)


def _reference_extract(model, ids, special, group, layers, budget, store_dtype, chunk_tokens):
    """The synchronous writer extraction wrote before the writer thread: float32 rows cast by numpy
    (same codecs as extract, so that chunk files can be compared byte for byte)."""
    from saeprobe.store import ACTIVATION_COMPRESSOR, AppendWriter, create_array, write_index

    lengths = np.array([len(x) for x in ids])
    cap = LayerCapture(model, layers)
    writers = {layer: AppendWriter(create_array(group, f"layer_{layer}", (model.config.hidden_size,), store_dtype,
                                                chunk_tokens, ACTIVATION_COMPRESSOR)) for layer in layers}
    spec = AppendWriter(create_array(group, "special", (), bool, chunk_tokens * 4))
    order = []
    with torch.inference_mode():
        for batch in plan_batches(lengths, budget):
            order.append(batch)
            w = int(lengths[batch].max())
            x, m = np.zeros((len(batch), w), np.int64), np.zeros((len(batch), w), bool)
            for r, d in enumerate(batch):
                x[r, : lengths[d]], m[r, : lengths[d]] = ids[d], True
            out = cap.run(model, torch.from_numpy(x), torch.from_numpy(m).long())
            for layer in layers:
                writers[layer].write(out[layer][torch.from_numpy(m)].float().numpy())
            spec.write(np.concatenate([special[d] for d in batch]))
    cap.remove()
    for w in [*writers.values(), spec]:
        w.close()
    stored = np.concatenate(order)
    write_index(group, np.concatenate([[0], np.cumsum(lengths[stored])]), stored)


@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_threaded_writer_output_is_byte_identical_to_synchronous_writes(llama, tmp_path, compute):
    # The writer thread and the on-device cast must not change a single stored byte.
    model, ids, special = llama
    model = model.to(compute)
    try:
        for name, fn in (("threaded", extract), ("reference", _reference_extract)):
            group = zarr.open_group(str(tmp_path / name), mode="w")
            if fn is extract:
                extract(model, ids, special, group, [1, 3], token_budget=40, store_dtype="float16", chunk_tokens=8,
                        max_pending=1)
            else:
                fn(model, ids, special, group, [1, 3], 40, "float16", 8)
    finally:
        model.to(torch.float32)
    files = sorted(p.relative_to(tmp_path / "threaded") for p in (tmp_path / "threaded").rglob("*") if p.is_file())
    ref = sorted(p.relative_to(tmp_path / "reference") for p in (tmp_path / "reference").rglob("*") if p.is_file())
    assert files == ref and len(files) > 10
    for rel in files:
        if rel.name != "zarr.json":  # metadata holds no data; chunk files must match bit for bit
            assert (tmp_path / "threaded" / rel).read_bytes() == (tmp_path / "reference" / rel).read_bytes(), rel


def test_background_writer_reraises_worker_errors(tmp_path):
    from saeprobe.store import AppendWriter, BackgroundWriter, create_array

    group = zarr.open_group(str(tmp_path / "w.zarr"), mode="w")
    writer = BackgroundWriter({"a": AppendWriter(create_array(group, "a", (2,), np.float32, 4))}, max_pending=1)
    writer.submit({"a": np.zeros((3, 2))})
    writer.submit({"a": np.zeros((3, 5))})  # wrong row width: fails on the worker thread
    with pytest.raises(RuntimeError, match="writing the store failed"):
        for _ in range(10):
            writer.submit({"a": np.zeros((3, 2))})
        writer.close()
    with pytest.raises(RuntimeError, match="writing the store failed"):
        writer.close()


def test_decoders_are_called_without_a_kv_cache(llama):
    model, ids, _ = llama
    seen = {}
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: seen.update(kwargs), with_kwargs=True)
    cap = LayerCapture(model, [1])
    try:
        cap.run(model, torch.from_numpy(ids[0])[None], torch.ones(1, len(ids[0]), dtype=torch.long))
    finally:
        cap.remove()
        handle.remove()
    assert seen["use_cache"] is False


def test_heap_trim_returns_freed_memory_on_glibc():
    import platform

    from saeprobe import heap

    if platform.libc_ver()[0] != "glibc":
        assert heap.trim() is False  # a no-op elsewhere
        return
    assert heap._malloc_trim() is not None
    # Free every other 64 KB block (below the mmap threshold, so on the heap): the holes sit
    # between live blocks, where free() never returns them; only malloc_trim can.
    blocks = [bytearray(64 * 1024) for _ in range(2000)]
    kept = blocks[1::2]
    del blocks
    assert heap.trim() is True
    assert len(kept) == 1000


def test_heap_guard_trims_only_past_its_watermark(monkeypatch):
    from saeprobe import heap

    rss = iter([100, 120, 110, 123, 124, 200, 90]) 
    monkeypatch.setattr(heap, "resident_bytes", lambda: next(rss))
    monkeypatch.setattr(heap, "_malloc_trim", lambda: (lambda pad: 1))
    guard = heap.HeapGuard(warmup=3, slack=0.03)
    trimmed = [guard.step() for _ in range(7)]
    # watermark = 120 after three steps; 123 is within 3%, 124 and 200 are not.
    assert trimmed == [False, False, False, False, True, True, False]
    assert guard.watermark == 120 and guard.trims == 2

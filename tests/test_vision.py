"""The visual-classification path: tiny-paligemma preset, image datasets, image-token activations, workflow."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
import torch
import zarr
from PIL import Image

from saeprobe import data, randinit, vision
from saeprobe.errors import ConfigError, DataError
from saeprobe.pooling import pool_store
from saeprobe.store import ActivationStore
from tests.helpers import STORIES, snakemake, write_config


@pytest.fixture(scope="module")
def paligemma_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_paligemma")
    randinit.save(randinit.build("tiny-paligemma", {}, seed=0), folder, STORIES)
    return folder


@pytest.fixture(scope="module")
def loaded(paligemma_dir):
    return vision.load({"path": str(paligemma_dir)}, "tiny", torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def digits():
    frame, names, report = vision.prepare({"sklearn": "digits", "kind": "image", "test_fraction": 0.2}, "digits", 7)
    return frame, names, report


def _png(rgb: tuple[int, int, int], size: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- preset


def test_preset_loads_offline_with_auto_classes(paligemma_dir):
    from transformers import AutoConfig, AutoModel, AutoProcessor

    cfg = AutoConfig.from_pretrained(paligemma_dir)
    assert cfg.model_type == "paligemma" and cfg.text_config.model_type == "gemma2"  # PaliGemma 2: Gemma 2 LM
    processor = AutoProcessor.from_pretrained(paligemma_dir)
    assert type(processor).__name__ == "PaliGemmaProcessor"
    side, patch = cfg.vision_config.image_size, cfg.vision_config.patch_size
    assert processor.image_seq_length == (side // patch) ** 2 == 16
    assert processor.image_token_id == cfg.image_token_index
    assert len(processor.tokenizer) <= cfg.text_config.vocab_size  # every token the processor emits is embeddable
    model = AutoModel.from_pretrained(paligemma_dir)
    assert type(model).__name__ == "PaliGemmaModel"
    enc = processor(images=[Image.new("RGB", (8, 8))], text=[processor.image_token], return_tensors="pt")
    assert int((enc["input_ids"] == processor.image_token_id).sum()) == 16
    with torch.no_grad():
        out = model(**{k: v for k, v in enc.items() if k != "labels"})
    assert out.last_hidden_state.shape == (1, enc["input_ids"].shape[1], cfg.text_config.hidden_size)


def test_preset_is_seeded_and_checks_its_tokenizer(tmp_path):
    a, b, c = (randinit.build("tiny-paligemma", {}, seed=s) for s in (0, 0, 1))
    key = "model.language_model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    bigger = randinit.build("tiny-paligemma", {"vision_config": {"image_size": 48}}, seed=0)
    assert bigger.config.vision_config.image_size == 48 and bigger.config.text_config.num_image_tokens == 36
    wrong = randinit.build("tiny-paligemma", {"image_token_index": 7}, seed=0)
    with pytest.raises(ConfigError, match="image_token_index 7"):
        randinit.save(wrong, tmp_path / "wrong", STORIES)
    with pytest.raises(ConfigError, match="random.tokenizer"):
        randinit.save(a, tmp_path / "no_tok", None)


# --------------------------------------------------------------------------- data


def test_prepare_digits(digits, tmp_path):
    from sklearn.datasets import load_digits

    frame, names, report = digits
    assert frame.columns == ["doc_id", "text", "label", "label_name", "split", "lang", "source_row", "image"]
    assert frame.height == 1797 and names == [str(i) for i in range(10)]
    assert frame["doc_id"].to_list() == list(range(1797)) and frame["lang"].null_count() == 1797
    assert set(frame["split"]) == {"train", "test"} and report["splits_from"] == "seeded stratified split"
    source = load_digits()
    per_class = frame.group_by("label").agg((pl.col("split") == "test").sum().alias("test"), pl.len().alias("n"))
    for label, n_test, n in per_class.iter_rows():
        assert n == int((source.target == label).sum())
        assert abs(n_test - 0.2 * n) <= 1  # stratified
    # Pixels: 0..16 scaled to 0..255, grayscale as RGB.
    row = frame.row(5, named=True)
    img = np.asarray(vision.decode(row["image"]))
    assert img.shape == (8, 8, 3) and (img[..., 0] == img[..., 2]).all()
    np.testing.assert_array_equal(img[..., 1], np.rint(source.images[row["source_row"]] * 255 / 16).astype(np.uint8))
    assert row["label"] == source.target[row["source_row"]]
    # Same seed, same file; another seed, other splits. data.read still works on it.
    again, _, _ = vision.prepare({"sklearn": "digits", "kind": "image", "test_fraction": 0.2}, "digits", 7)
    assert again.equals(frame)
    other, _, _ = vision.prepare({"sklearn": "digits", "kind": "image", "test_fraction": 0.2}, "digits", 8)
    assert other["split"].to_list() != frame["split"].to_list()
    data.write(frame, names, tmp_path / "digits.parquet")
    back, back_names = data.read(tmp_path / "digits.parquet")
    assert back_names == names and back.equals(frame)


def test_prepare_max_rows_is_a_seeded_stratified_sample():
    from sklearn.datasets import load_digits

    spec = {"sklearn": "digits", "kind": "image", "test_fraction": 0.2, "max_rows": 200}
    frame, _, report = vision.prepare(spec, "digits", 0)
    assert frame.height == 200 and report["n_dropped_max_rows"] == 1597
    full = np.bincount(load_digits().target)
    kept = np.bincount(frame["label"].to_numpy(), minlength=10)
    assert (np.abs(kept - 200 * full / full.sum()) <= 1).all()  # stratified by label
    assert frame["source_row"].is_sorted() and frame["doc_id"].to_list() == list(range(200))
    assert vision.prepare(spec, "digits", 0)[0].equals(frame)
    assert vision.prepare(spec, "digits", 1)[0]["source_row"].to_list() != frame["source_row"].to_list()


def test_prepare_folder_and_corrupt_file(tmp_path):
    root = tmp_path / "shapes"
    for label, rgb in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / label).mkdir(parents=True)
        for i in range(5):
            (root / label / f"{i}.png").write_bytes(_png(rgb))
    (root / ".DS_Store").write_bytes(b"junk")  # hidden: skipped and counted
    spec = {"path": str(root), "kind": "image", "test_fraction": 0.4, "prompt": "colour"}
    frame, names, report = vision.prepare(spec, "shapes", 0)
    assert names == ["blue", "red"] and frame.height == 10
    assert frame.filter(pl.col("split") == "test").group_by("label").len()["len"].to_list() == [2, 2]
    assert set(frame["text"]) == {"colour"}
    reds = frame.filter(pl.col("label_name") == "red")["image"].to_list()
    assert all(np.asarray(vision.decode(b))[0, 0].tolist() == [255, 0, 0] for b in reds)

    (root / "red" / "broken.png").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"dataset 'shapes'.*broken\.png"):
        vision.prepare(spec, "shapes", 0)
    (root / "loose.png").write_bytes(_png((0, 0, 0)))
    with pytest.raises(DataError, match="outside class sub-folders"):
        vision.prepare(spec, "shapes", 0)
    with pytest.raises(DataError, match="not found"):
        vision.prepare({"path": str(tmp_path / "missing"), "kind": "image"}, "gone", 0)


def test_prepare_folder_with_split_folders(tmp_path):
    root = tmp_path / "split_shapes"
    for split, n in (("train", 4), ("test", 2)):
        for label, rgb in (("a", (0, 0, 0)), ("b", (255, 255, 255))):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                (root / split / label / f"{i}.png").write_bytes(_png(rgb))
    frame, names, report = vision.prepare({"path": str(root), "kind": "image"}, "s", 0)
    assert names == ["a", "b"] and report["splits_from"] == "source"
    assert frame.group_by("split").len().sort("split").rows() == [("test", 4), ("train", 8)]


def test_prepare_table_with_image_bytes(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0)] * 4
    pl.DataFrame({
        "img": [{"bytes": _png(c), "path": None} for c in colours],  # the HF Image feature's struct
        "y": ["r", "g"] * 4,
        "split": ["train"] * 6 + ["test"] * 2,
    }).write_parquet(tmp_path / "t.parquet")
    spec = {"path": str(tmp_path / "t.parquet"), "kind": "image", "image_column": "img", "label_column": "y",
            "split_column": "split"}
    frame, names, report = vision.prepare(spec, "t", 0)
    assert names == ["g", "r"] and frame["split"].to_list() == ["train"] * 6 + ["test"] * 2
    assert np.asarray(vision.decode(frame["image"][1]))[0, 0].tolist() == [0, 255, 0]
    with pytest.raises(DataError, match="no image column 'image'"):
        vision.prepare({**spec, "image_column": "image"}, "t", 0)


def test_image_only_keys_are_rejected_on_text_datasets():
    from saeprobe.config import validate

    cfg = {"datasets": {"t": {"path": "x.parquet", "max_rows": 10, "prompt": "p"}},
           "models": {"m": {"path": "m", "layers": [0]}}}
    with pytest.raises(ConfigError, match=r"datasets\.t\.max_rows.*only for image datasets"):
        validate(cfg)


def test_hub_source_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="dataset 'hubimgs'.*could not load 'no-such-user/no-such-images'"):
        vision.prepare({"hub": "no-such-user/no-such-images", "kind": "image"}, "hubimgs", 0)


# --------------------------------------------------------------------------- activations


def _extract(loaded, images, prompts, layers, tmp_path, **kw):
    model, processor = loaded
    group = zarr.open_group(str(tmp_path), mode="w")
    stats = vision.extract(model, processor, images, prompts, group, layers, store_dtype="float32", **kw)
    return group, stats


def _hidden_states(loaded, images, prompt):
    model, processor = loaded
    inputs = vision.batch_inputs(processor, [vision.decode(b) for b in images], prompt)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return out.hidden_states, (inputs["input_ids"] == processor.image_token_id)


def test_image_positions_match_manual_forward(loaded, digits, tmp_path):
    frame, _, _ = digits
    images = frame["image"].to_list()[:6]
    group, stats = _extract(loaded, images, [""] * 6, [0, 1], tmp_path / "a.zarr", token_budget=40)  # 2 per batch
    assert stats["n_tokens"] == 6 * 16 and stats["seq_length"] == 18  # 16 image tokens + BOS + "\n"
    hidden, is_img = _hidden_states(loaded, images, "")
    for layer in (0, 1):  # block output of a non-last block = hidden_states[L+1]
        np.testing.assert_allclose(group[f"layer_{layer}"][:], hidden[layer + 1][is_img].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(group["offsets"][:], np.arange(7) * 16)
    np.testing.assert_array_equal(group["doc_id"][:], np.arange(6))
    assert not group["special"][:].any()

    # MOSAIC convention = the block's input, hidden_states[L]; a text prompt adds positions that are not stored.
    group, stats = _extract(loaded, images, ["a digit"] * 6, [1, 2], tmp_path / "b.zarr", convention="mosaic")
    assert stats["seq_length"] > 18 and stats["n_tokens"] == 6 * 16
    hidden, is_img = _hidden_states(loaded, images, "a digit")
    for layer in (1, 2):
        np.testing.assert_allclose(group[f"layer_{layer}"][:], hidden[layer][is_img].numpy(), rtol=1e-5, atol=1e-5)


def test_store_reads_like_a_text_store(loaded, digits, tmp_path):
    frame, _, _ = digits
    images = frame["image"].to_list()[:5]
    prompts = ["", "x", "", "x", ""]  # grouped by prompt: stored order 0, 2, 4, 1, 3
    group, _ = _extract(loaded, images, prompts, [1], tmp_path / "c.zarr", token_budget=10_000)
    group.attrs.update({"hook_point": "language_model.blocks.{layer}.hook_resid_post"})
    store = ActivationStore(tmp_path / "c.zarr")
    assert store.layers == [1] and store.n_docs == 5 and store.doc_id.tolist() == [0, 2, 4, 1, 3]
    pooled, stats = pool_store(store, "mean", exclude_special=True, layer=1)
    assert pooled.shape == (5, 32) and stats["n_empty_rows"] == 0
    # Batch composition does not change a document's rows: doc 3 alone gives the same mean.
    alone, _ = _extract(loaded, [images[3]], ["x"], [1], tmp_path / "d.zarr")
    np.testing.assert_allclose(pooled[3], alone["layer_1"][:].mean(axis=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        _extract(loaded, images[:1], [""], [3], tmp_path / "e.zarr")


def test_float16_overflow_is_caught(loaded, digits, tmp_path):
    model, processor = loaded
    frame, _, _ = digits
    handle = vision.language_model(model).layers[0].register_forward_hook(lambda m, a, out: (out[0] * 1e6, *out[1:])
                                                                          if isinstance(out, tuple) else out * 1e6)
    try:
        group = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
        with pytest.raises(OverflowError, match="layer 0.*store_dtype: float32"):
            vision.extract(model, processor, frame["image"].to_list()[:2], ["", ""], group, [0], store_dtype="float16")
    finally:
        handle.remove()


# --------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_workflow_digits_end_to_end(tmp_path):
    cfg = {
        "seed": 0,
        "device": "cpu",
        "datasets": {"digits": {"sklearn": "digits", "kind": "image", "max_rows": 150}},
        "models": {"tiny_paligemma": {"random": {"preset": "tiny-paligemma", "tokenizer": str(STORIES), "seed": 0},
                                      "kind": "vision", "layers": [1], "token_budget": 512}},
        "saes": {"pg_topk": {"model": "tiny_paligemma",
                             "train": {"width": 64, "k": 4, "training_tokens": 8000, "batch_size": 256}}},
        "features": {"poolings": ["top4"], "binarize": [None], "hidden_poolings": ["mean"]},
        "probe": {"Cs": [1.0], "cv_folds": 3},
    }
    write_config(tmp_path, cfg)
    snakemake(tmp_path, "results/tables/grid.parquet")  # the probe grid only (not figures or reports)
    res = tmp_path / "results"
    grid = pl.read_parquet(res / "tables" / "grid.parquet")
    digits_rows = grid.filter(pl.col("dataset") == "digits")
    assert digits_rows.height == 2 and set(digits_rows["family"]) == {"sae", "hidden"}
    assert (digits_rows["n_test"] == 30).all() and digits_rows["test_macro_f1"].is_between(0, 1).all()
    acts = zarr.open_group(str(res / "activations" / "tiny_paligemma" / "digits.zarr"), mode="r")
    assert acts.attrs["n_docs"] == 150 and acts.attrs["n_tokens"] == 150 * 16 and acts.attrs["d_model"] == 32
    assert acts.attrs["attn_implementation"] == "eager" and acts["layer_1"].dtype == np.float16
    frame, names = data.read(res / "data" / "digits.parquet")
    assert frame.height == 150 and names == [str(i) for i in range(10)]
    assert (res / "saes" / "pg_topk" / "layer_1" / "cfg.json").exists()
    assert (res / "logs" / "extract_image_activations" / "tiny_paligemma" / "digits.log").exists()

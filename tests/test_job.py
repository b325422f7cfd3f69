"""Job setup (saeprobe.job), provenance of activation stores, and the one-line report of user errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from saeprobe import job, tokenize, vision
from saeprobe.activations import check_activations, hook_point
from saeprobe.errors import CacheError, ConfigError, NonFiniteError, SaeprobeError, StoreRangeError
from saeprobe.models import load_model, load_tokenizer
from tests.conftest import ROOT


@pytest.fixture
def restore_logging():
    """setup_logging redirects sys.stderr and installs an excepthook: undo both after the test."""
    saved = sys.stderr, sys.excepthook, list(logging.getLogger("saeprobe").handlers)
    yield
    if sys.stderr is not saved[0]:
        sys.stderr.close()
    sys.stderr, sys.excepthook = saved[0], saved[1]
    logging.getLogger("saeprobe").handlers[:] = saved[2]
    logging.getLogger("py.warnings").handlers.clear()


def fake_snakemake(tmp_path, device="cpu", threads=1):
    return SimpleNamespace(log=[str(tmp_path / "job.log")], threads=threads, params=SimpleNamespace(runtime={"device": device}))


def test_setup_gives_logger_threads_device_and_dtype(tmp_path, restore_logging):
    before = torch.get_num_threads()
    try:
        j = job.setup(fake_snakemake(tmp_path, "cpu", 1), dtype="float32")
        assert j.device == torch.device("cpu") and j.dtype == torch.float32 and j.threads == 1
        assert torch.get_num_threads() == 1
        j.log.info("hello")
        assert "device cpu, compute dtype float32, 1 torch threads" in (tmp_path / "job.log").read_text()
        assert job.setup(fake_snakemake(tmp_path, "auto", 1)).dtype is None
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_setup_fails_in_one_line_when_the_device_is_missing(tmp_path, restore_logging):
    with pytest.raises(ConfigError, match=r"^device: 'cuda', but (torch .* is a CPU-only build|no CUDA device is visible)"):
        job.setup(fake_snakemake(tmp_path, "cuda", 1))


def test_a_user_error_in_a_job_is_one_line_without_traceback(tmp_path):
    """What a workflow script does: setup_logging first, then a SaeprobeError reaches the top."""
    code = ("import sys\nfrom saeprobe.io import setup_logging\nfrom saeprobe.errors import ModelLoadError\n"
            f"setup_logging({str(tmp_path / 'x.log')!r})\n"
            "raise ModelLoadError(\"models.m: could not load model weights from 'x': OSError: no file\")\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["saeprobe: models.m: could not load model weights from 'x': OSError: no file"]
    log = (tmp_path / "x.log").read_text()
    assert "models.m: could not load" in log and "Traceback" not in log


def test_text_and_image_provenance_have_the_same_keys(tiny_llama):
    spec = {"path": str(tiny_llama), "layers": [1], "layer_convention": "block_output", "store_dtype": "float16"}
    model = load_model(spec, "tiny", torch.device("cpu"), torch.float32)
    stats = {"n_docs": 2, "n_tokens": 7, "max_abs": {1: 3.5}}
    text = job.provenance("tiny", spec, model, model.config, device=torch.device("cpu"), dtype=torch.float32,
                          hook_point=hook_point("block_output"), positions="all", max_length=32,
                          tokenizer={"class": "X", "fingerprint": "f"}, stats=stats)
    image = job.provenance("tiny", {**spec, "layer_convention": "mosaic"}, model, model.config,
                           device=torch.device("cpu"), dtype=torch.bfloat16,
                           hook_point=hook_point("mosaic", "language_model"), positions="image tokens", max_length=18,
                           tokenizer={"class": "X", "fingerprint": "f"}, stats=stats, image={"image_seq_length": 16})
    assert text.keys() == image.keys()
    assert text["source"] == {"path": str(tiny_llama), "hub": None, "package": None, "gguf": None, "gguf_package": None,
                              "random": None, "revision": None}
    assert text["model_class"] == "LlamaModel" and text["d_model"] == 32 and text["compute_dtype"] == "float32"
    assert text["hook_point"] == "blocks.{layer}.hook_resid_post" and text["image"] is None
    assert image["hook_point"] == "language_model.hidden_states[{layer}] (block input)"
    assert image["compute_dtype"] == "bfloat16" and text["max_abs_activation"] == {"1": 3.5}
    assert set(text["versions"]) == {"saeprobe", "torch", "transformers", "zarr", "python"}
    json.dumps(text)  # Zarr attributes are JSON


def test_tokens_file_roundtrip_and_damage(tiny_llama, tmp_path):
    tok = load_tokenizer({"path": str(tiny_llama)}, "tiny")
    frame = tokenize.tokenize(["Once upon a time", "Hi"], tok, max_length=16)
    meta = tokenize.metadata(tok, 16)
    tokenize.write(frame, meta, tmp_path / "t.parquet")
    ids, special, back = tokenize.read(tmp_path / "t.parquet")
    assert back == meta and [x.tolist() for x in ids] == frame["input_ids"].to_list()
    assert [x.dtype for x in ids] == [np.int64, np.int64] and special[0][0] and not special[0][1:].any()
    pq.write_table(frame.to_arrow(), tmp_path / "nometa.parquet")  # no tokenizer metadata
    with pytest.raises(CacheError, match=r"nometa\.parquet: no 'saeprobe\.tokenizer' metadata \(not written by tokenize\)"):
        tokenize.read(tmp_path / "nometa.parquet")


def test_prepared_images_without_an_image_column_is_a_damaged_cache(tmp_path):
    from saeprobe import data

    frame = pl.DataFrame({"doc_id": [0, 1], "text": ["a", "b"], "label": [0, 1], "label_name": ["x", "y"],
                          "split": ["train", "test"]})
    data.write(frame, ["x", "y"], tmp_path / "d.parquet")
    with pytest.raises(CacheError, match=r"d\.parquet: no 'image' column .*snakemake --forcerun"):
        vision.read_prepared(tmp_path / "d.parquet")


def test_activation_range_errors_are_user_errors_and_keep_their_builtin_type():
    docs = np.array([3, 4])
    with pytest.raises(StoreRangeError, match="layer 2: activation magnitude 70000 .*store_dtype: float32") as err:
        check_activations(torch.tensor([[70000.0]]), 2, docs, "float16")
    assert isinstance(err.value, OverflowError) and isinstance(err.value, ConfigError)
    with pytest.raises(NonFiniteError, match=r"layer 1: non-finite activations .* documents \[3, 4\]") as err:
        check_activations(torch.tensor([[float("nan")]]), 1, docs, "float32")
    assert isinstance(err.value, FloatingPointError) and isinstance(err.value, SaeprobeError)
    assert check_activations(torch.tensor([[70000.0]]), 2, docs, "float32") == 70000.0

"""Offline safety: with ``offline: true`` no stage even tries to open a network connection.

Sockets are refused in this process (connect, create_connection, DNS lookups) and every attempt
is recorded — libraries may swallow the refusal and fall back to a cache, so the record, not an
exception, is what is checked. The in-process pipeline then runs on a tiny model: prepare,
tokenize, model load and extraction, SAE load from a local folder and encoding, pooling,
probes, TF-IDF; and the hub-backed loaders fail at once with a clear message.
"""

from __future__ import annotations

import socket

import numpy as np
import polars as pl
import pytest
import torch
import zarr

from saeprobe import data
from saeprobe.activations import extract
from saeprobe.errors import ConfigError, DataError
from saeprobe.models import load_model, load_tokenizer
from saeprobe.offline import OFFLINE_VARS, set_offline
from saeprobe.pooling import pool_store
from saeprobe.probes import fit_probe, fit_tfidf
from saeprobe.sae import encode_store, load_sae
from saeprobe.store import ActivationStore, CodeStore
from saeprobe.tokenize import tokenize
from tests.helpers import DATA


@pytest.fixture
def no_network(monkeypatch):
    """Refuse and record every connection or name lookup; switch offline mode on as the Snakefile does."""
    attempts: list[str] = []

    def refuse(kind):
        def blocked(*args, **kwargs):
            attempts.append(f"{kind}{args[1:] if kind.startswith('socket.') else args}")
            raise OSError(f"network access in offline mode: {kind}")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    # Start from online settings, already imported libraries included, so set_offline is what is tested.
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    set_offline(True)
    yield attempts
    assert attempts == [], f"network access attempted in offline mode: {attempts}"


def test_pipeline_stages_run_without_any_connection(no_network, tiny_gemma2, jumprelu_dir, tmp_path):
    src = pl.read_parquet(DATA / "jailbreak_classification.parquet")
    small = pl.concat([src.filter(pl.col("split") == s).head(n) for s, n in (("train", 40), ("test", 20))])
    small.write_parquet(tmp_path / "d.parquet")
    frame, names, _ = data.prepare({"path": str(tmp_path / "d.parquet")}, "d", seed=0)

    spec = {"path": str(tiny_gemma2), "layers": [1]}
    tokens = tokenize(frame["text"].to_list(), load_tokenizer(spec, "tiny"), max_length=32)
    model = load_model(spec, "tiny", torch.device("cpu"), torch.float32)
    ids = [np.asarray(x) for x in tokens["input_ids"].to_list()]
    special = [np.asarray(x) for x in tokens["special_mask"].to_list()]
    extract(model, ids, special, zarr.open_group(str(tmp_path / "acts.zarr"), mode="w"), [1])
    acts = ActivationStore(tmp_path / "acts.zarr")

    sae = load_sae({"path": str(jumprelu_dir)}, 1, "cpu", "jumprelu")
    heldout = frame["split"].to_numpy() != "train"
    encode_store(sae, acts, 1, zarr.open_group(str(tmp_path / "codes.zarr"), mode="w"), heldout_docs=heldout)
    x, _ = pool_store(CodeStore(tmp_path / "codes.zarr"), "mean")
    y, split = frame["label"].to_numpy(), frame["split"].to_numpy()
    result, _, _ = fit_probe(x, y, split, Cs=[1.0], cv_folds=2, n_classes=len(names))
    assert 0 <= result["test"]["macro_f1"] <= 1
    tfidf = fit_tfidf(frame["text"].to_list(), y, split, Cs=[1.0], cv_folds=2, n_classes=len(names))
    assert 0 <= tfidf["test"]["macro_f1"] <= 1


def test_hub_sources_fail_at_once_without_a_connection(no_network):
    with pytest.raises(ConfigError, match=r"(?s)models\.gemma: could not load a tokenizer .*offline mode"):
        load_tokenizer({"hub": "google/gemma-2-2b"}, "gemma")
    with pytest.raises(ConfigError, match=r"(?s)models\.gemma: could not load a model config .*offline mode"):
        load_model({"hub": "google/gemma-2-2b", "layers": [5]}, "gemma", torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match=r"(?s)saes\.gs: could not load SAE .*offline mode"):
        load_sae({"release": "gemma-scope-2b-pt-res-canonical", "sae_id": "layer_{layer}/width_16k/canonical"},
                 12, "cpu", "gs")
    with pytest.raises(DataError, match=r"dataset 'hubset': could not load 'someone/some-dataset'"):
        data.prepare({"hub": "someone/some-dataset"}, "hubset", seed=0)

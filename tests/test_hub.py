"""The hub path, executed offline: config/paper.yaml and config/gemma-scope-2.yaml run end to end against a
stand-in Hugging Face cache (tests/hub_cache.py) with HF_HUB_OFFLINE=1 and every network connection refused.

Each shipped config is narrowed — fewer layers, SAE entries, languages and rows, 64-token documents; no TF-IDF,
sweeps, k-sparse probes, and SAE quality (spliced loss) in the Gemma Scope 2 run only — but
keeps its ids (hub models, hub datasets, SAELens releases and sae_ids), and keeps at least one cell of every
model architecture (Gemma 2, PaliGemma 2, Gemma 3), source kind (hub model, hub dataset, release SAE, hidden
states; local files in behaviour and in gemma-scope-2.yaml), dataset and release, so that the real loaders
(``from_pretrained``, ``load_dataset``, ``SAE.from_pretrained``) run on the exact ids down to the tables.
The stand-ins are random: the tests check that the path runs and that what arrives is what the stand-in
holds (shapes, splits, links), never a score.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from tests import hub_cache
from tests.helpers import DATA, ROOT, SHARED, per_label_slice, write_parquet
from tests.test_paper_config import NO_NETWORK

PAPER = ROOT / "config" / "paper.yaml"
GEMMA_SCOPE_2 = ROOT / "config" / "gemma-scope-2.yaml"

# Kept of config/paper.yaml: one SAE entry (and layer) per release and model, its 16k width.
PAPER_SAES = {"gemma-2-2b-res-16k": [12], "gemma-2-9b-res-16k": [20], "gemma-2-9b-it-res-16k": [20],
              "paligemma2-3b-res-16k": [12]}
# Kept of config/gemma-scope-2.yaml: both widths; the medium L0 is the one Neuronpedia hosts.
GS2_SAES = {"gemma-3-270m-res-16k-l0-medium": [5], "gemma-3-270m-res-65k-l0-small": [9]}


def narrow_paper(cfg: dict[str, Any]) -> dict[str, Any]:
    """config/paper.yaml, narrowed for a CPU test: every hub model id, dataset id and release stays."""
    cfg = dict(cfg, device="cpu")
    for twin in ("gemma-2-2b-mosaic", "gemma-2-9b-mosaic", "gemma-2-9b-it-mosaic"):  # same ids as their models
        del cfg["models"][twin]
    for spec in cfg["models"].values():
        spec["layers"] = spec["layers"][1:2]  # the middle layer: 12 (2B, PaliGemma 2), 20 (9B)
        spec["dtype"] = "auto"  # bfloat16 is for the GPU; on a CPU without native bfloat16 it is emulated, slowly
        spec["max_length"] = 64  # stand-in texts through 2,304/3,584-wide residual streams: keep documents short
    owners = {"election_questions": "gemma-2-2b", "reject_prompts": "gemma-2-9b",
              "jailbreak_classification": "gemma-2-9b-it", "multilingual_toxicity": "gemma-2-2b",
              "tweet_sentiment_multilingual": "gemma-2-2b"}
    for name, model in owners.items():
        cfg["datasets"][name]["models"] = [model]
    cfg["datasets"]["multilingual_toxicity"]["hub_splits"] = ["en", "es", "de"]
    cfg["datasets"]["tweet_sentiment_multilingual"].update(hub_data_dir=["english", "german", "spanish"], grid=False)
    cfg["saes"] = {name: dict(spec, layers=PAPER_SAES[name]) for name, spec in cfg["saes"].items() if name in PAPER_SAES}
    cfg["saes"]["gemma-2-2b-res-16k"]["datasets"] = ["election_questions"]
    cfg["saes"]["gemma-2-9b-it-res-16k"]["datasets"] = ["jailbreak_classification"]
    for name in ("reject_prompts", "jailbreak_classification", "cifar100"):  # SAE cells there; hidden ones elsewhere
        cfg["datasets"][name]["hidden_poolings"] = []
    cfg["features"].update(poolings=["sum", "top20", "mean"], hidden_poolings=["last", "mean"])
    cfg["probe"]["Cs"] = [0.1, 1.0]
    cfg["bootstrap"] = {"resamples": 200}  # the floor of a 95 % percentile interval (T2)
    cfg["tfidf"]["enabled"] = False
    cfg["sae_quality"] = {"enabled": False}  # the spliced loss runs in the Gemma Scope 2 test (Gemma 3)
    piqa = cfg["behaviour"]["piqa_gemma-2-9b-it"]  # scored by the 9B-IT stand-in, probed with its own features
    cfg["behaviour"] = {"piqa_gemma-2-9b-it": dict(piqa, max_items=16, models=["gemma-2-9b-it"])}
    cfg["transfer"].update(datasets=["tweet_sentiment_multilingual"], poolings=["mean"], binarize=[None],
                           hidden_poolings=["mean"])
    cfg.pop("sweep")
    return cfg


def narrow_gemma_scope_2(cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """config/gemma-scope-2.yaml, narrowed: its model and release ids stay; its local datasets become slices."""
    cfg = dict(cfg, device="cpu")
    jailbreak = pl.read_parquet(DATA / "jailbreak_classification.parquet").filter(pl.col("text").str.len_chars() < 400)
    trec = pl.read_parquet(DATA / "trec.parquet")
    cfg["datasets"] = {
        "jailbreak_classification": {"path": write_parquet(folder, per_label_slice(
            jailbreak, {"train": 24, "test": 12}, 2), "jailbreak_classification.parquet")},
        "trec": {"path": write_parquet(folder, per_label_slice(trec, {"train": 36, "test": 18}, 6), "trec.parquet")},
    }
    cfg["models"]["gemma-3-270m"].update(layers=sorted({layer for layers in GS2_SAES.values() for layer in layers}),
                                         max_length=64)
    cfg["saes"] = {name: dict(spec, layers=GS2_SAES[name]) for name, spec in cfg["saes"].items() if name in GS2_SAES}
    cfg["saes"]["gemma-3-270m-res-16k-l0-medium"]["datasets"] = ["jailbreak_classification"]
    cfg["saes"]["gemma-3-270m-res-65k-l0-small"]["datasets"] = ["trec"]
    cfg["sae_quality"].update(max_tokens=2000, loss_tokens=200, loss_datasets=["jailbreak_classification"])
    cfg["features"].update(poolings=["mean", "top20"], hidden_poolings=["mean"])
    cfg["probe"]["Cs"] = [0.1, 1.0]
    cfg["bootstrap"] = {"resamples": 200}  # the floor of a 95 % percentile interval (T2)
    cfg["tfidf"]["enabled"] = False
    for stage in ("ksparse", "transfer"):
        cfg.pop(stage)
    return cfg


def release_ids(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(release, sae_id) of every SAE layer a config loads."""
    return [(s["release"], s["sae_id"].format(layer=layer)) for s in cfg["saes"].values() if "release" in s
            for layer in s.get("layers") or cfg["models"][s["model"]]["layers"]]


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Any]:
    """The stand-in cache, and an environment in which it is the only hub: offline, network refused."""
    base = tmp_path_factory.mktemp("hub")
    paper = narrow_paper(yaml.safe_load(PAPER.read_text()))
    gs2 = narrow_gemma_scope_2(yaml.safe_load(GEMMA_SCOPE_2.read_text()), base)
    start = time.perf_counter()
    hub_cache.build(base / "hf" / "hub", release_ids(paper) + release_ids(gs2))
    guard = base / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK.replace("during a dry run", "in the hub test"))
    # Jobs run in the workdir: a relative PYTHONPATH entry (PYTHONPATH=src) must not lose this checkout's saeprobe.
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "HF_HOME": str(base / "hf"), "HF_HUB_CACHE": str(base / "hf" / "hub"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(guard), *paths])}
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    (base / "shared").symlink_to(SHARED)  # paper.yaml's behaviour files are ../shared/data/...
    return {"base": base, "env": env, "paper": paper, "gs2": gs2, "build_s": time.perf_counter() - start}


def run_config(hub: dict[str, Any], name: str) -> tuple[Path, subprocess.CompletedProcess, float]:
    workdir = hub["base"] / name
    workdir.mkdir()
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(hub[name], sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", "--show-failed-logs"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hub["env"], timeout=1500)
    elapsed = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{out[-6000:]}"
    assert "network access attempted" not in out
    return workdir, proc, elapsed


def table(workdir: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(workdir / "results" / "tables" / f"{name}.parquet")


def code_stats(workdir: Path, model: str, dataset: str, sae: str, layer: int) -> dict[str, Any]:
    import zarr

    return dict(zarr.open_group(str(workdir / "results" / "features" / model / dataset / sae / f"layer_{layer}.zarr"),
                                mode="r").attrs)


def test_gemma_scope_2_config_names_real_ids():
    """config/gemma-scope-2.yaml as typed: valid, every (release, sae_id) it loads is in SAELens' registry
    (4 layers x 2 widths x 3 L0s), the tables' width parser reads its ids, Neuronpedia has the medium L0s."""
    import saeprobe.config as sc
    from saeprobe.grid import sae_attributes
    from saeprobe.top_features import neuronpedia_id

    cfg = sc.validate(yaml.safe_load(GEMMA_SCOPE_2.read_text()))
    assert {m["hub"] for m in cfg["models"].values()} == {"google/gemma-3-270m"}
    assert cfg["models"]["gemma-3-270m"]["layers"] == [5, 9, 12, 15] and cfg["offline"] is False
    directory = hub_cache.saelens_directory()
    ids = release_ids(cfg)
    assert len(ids) == len(set(ids)) == 24 and {r for r, _ in ids} == {"gemma-scope-2-270m-pt-res"}
    listed = {s["id"] for s in directory["gemma-scope-2-270m-pt-res"]["saes"]}
    assert set(i for _, i in ids) <= listed
    assert directory["gemma-scope-2-270m-pt-res"]["model"] == "google/gemma-3-270m"
    widths = {name: attrs["sae_width"] for name, attrs in sae_attributes(cfg).items()}
    assert widths == {name: 16384 if "16k" in name else 65536 for name in cfg["saes"]}
    links = {i: neuronpedia_id(r, i, directory) for r, i in ids}
    assert {i for i, link in links.items() if link} == {i for i in links if i.endswith("_l0_medium")}
    assert links["layer_5_width_16k_l0_medium"] == "gemma-3-270m/5-gemmascope-2-res-16k"


@pytest.fixture
def offline_cache(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face cache as this process's, offline (as `offline: true` sets it), connections refused."""
    import socket

    import datasets.config
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise OSError("saeprobe test: network access attempted")

    for target, name in ((socket.socket, "connect"), (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(target, name, refuse)
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return cache


def test_offline_hub_dataset_is_read_from_its_snapshot_in_the_hub_cache(offline_cache):
    """datasets alone, offline, reads only its processed cache: a downloaded repository did not load."""
    from saeprobe import data

    files = hub_cache.jailbreak_classification(n_train=4, n_test=6)
    hub_cache.put_repo(offline_cache, "jackhhao/jailbreak-classification", files, "dataset")
    spec = yaml.safe_load(PAPER.read_text())["datasets"]["jailbreak_classification"]  # hub_splits [test], own split
    frame, names, report = data.prepare(spec, "jailbreak_classification", seed=42)
    test_csv = pl.read_csv(files["balanced/jailbreak_dataset_test_balanced.csv"])
    assert frame.height == test_csv.height and sorted(frame["text"]) == sorted(test_csv["prompt"])
    assert names == sorted(set(test_csv["type"])) and set(frame["split"]) == {"train", "test"}


def test_hub_data_dir_reads_one_folder_per_language_of_the_parquet_export(offline_cache):
    from saeprobe import data
    from saeprobe.errors import DataError

    main, export = hub_cache.tweet_sentiment_multilingual({"train": 2, "validation": 1, "test": 1})
    hub_cache.put_repo(offline_cache, "cardiffnlp/tweet_sentiment_multilingual", main, "dataset")
    hub_cache.put_repo(offline_cache, "cardiffnlp/tweet_sentiment_multilingual", export, "dataset",
                       revision="refs/convert/parquet")
    spec = dict(yaml.safe_load(PAPER.read_text())["datasets"]["tweet_sentiment_multilingual"],
                hub_data_dir=["english", "german"])
    frame, names, _ = data.prepare(spec, "tweets", seed=42)
    assert set(frame["lang"]) == {"english", "german"}
    assert frame.group_by("lang", "split").len().height == 6  # the export's own train/validation/test per language
    assert names == ["0", "1", "2"] and frame.height == 2 * 3 * (2 + 1 + 1)
    # The main branch (a loading script, its README's configs an old list of names) does not load at all.
    with pytest.raises(DataError, match="tweet_sentiment_multilingual"):
        data.prepare({**{k: v for k, v in spec.items() if k not in ("revision", "hub_data_dir")},
                      "hub_config": "english", "lang_column": "hub_config"}, "tweets", seed=42)


def test_gemma_scope_2_sae_loads_offline_from_the_cache(offline_cache):
    """SAELens' gemma_3 loader asked huggingface.co for the file's header even when it was cached."""
    from safetensors.numpy import load_file

    from saeprobe.sae import load_sae

    written = hub_cache.build_saes(offline_cache, [("gemma-scope-2-270m-pt-res", "layer_9_width_65k_l0_small")])
    spec = yaml.safe_load(GEMMA_SCOPE_2.read_text())["saes"]["gemma-3-270m-res-65k-l0-small"]
    sae = load_sae(spec, 9, "cpu", "gemma-3-270m-res-65k-l0-small")
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (640, hub_cache.GS2_WIDTHS["65k"])
    assert sae.cfg.metadata.hook_name == "blocks.9.hook_resid_post"
    folder = written[("gemma-scope-2-270m-pt-res", "layer_9_width_65k_l0_small")]
    params = next((offline_cache / "models--google--gemma-scope-2-270m-pt" / "snapshots").iterdir()) / folder
    assert (sae.W_enc.detach().numpy() == load_file(params / "params.safetensors")["w_enc"]).all()


@pytest.fixture(scope="module")
def paper_run(hub):
    return run_config(hub, "paper")


@pytest.fixture(scope="module")
def gs2_run(hub):
    return run_config(hub, "gs2")


@pytest.mark.workflow
def test_paper_config_runs_offline_on_the_hub_ids(hub, paper_run):
    workdir, _, elapsed = paper_run
    cfg = hub["paper"]
    grid = table(workdir, "grid")
    # Every hub dataset and model id of paper.yaml was loaded and probed, with hidden states and its release SAE.
    probed = {(r["model"], r["dataset"]) for r in grid.select("model", "dataset").unique().iter_rows(named=True)}
    for name, spec in cfg["datasets"].items():
        if spec.get("grid", True):
            assert any(d == name for _, d in probed), f"dataset {name} ({spec['hub']}) has no probe"
    assert {m for m, _ in probed} >= {"gemma-2-2b", "gemma-2-9b", "gemma-2-9b-it", "paligemma2-3b"}
    assert set(grid["source"]) >= {"hidden", *PAPER_SAES}
    # The Gemma Scope stand-ins arrived through SAELens' gemma_2 loader at their real shapes (d_in from the repo id).
    for sae, model, dataset, d_in in (("gemma-2-2b-res-16k", "gemma-2-2b", "election_questions", 2304),
                                      ("gemma-2-9b-res-16k", "gemma-2-9b", "reject_prompts", 3584),
                                      ("gemma-2-9b-it-res-16k", "gemma-2-9b-it", "jailbreak_classification", 3584),
                                      ("paligemma2-3b-res-16k", "paligemma2-3b", "cifar100", 2304)):
        stats = code_stats(workdir, model, dataset, sae, cfg["saes"][sae]["layers"][0])
        assert (stats["d_in"], stats["d_sae"]) == (d_in, 16384)
        assert 0 < stats["quality"]["l0"] <= hub_cache.GEMMA_SCOPE_ACTIVE  # only the stand-in's random latents fire
    # The hub datasets' own splits and languages came through load_dataset.
    prepared = {d: pl.read_parquet(workdir / "results" / "data" / f"{d}.parquet") for d in cfg["datasets"]}
    assert set(prepared["tweet_sentiment_multilingual"]["lang"]) == {"english", "german", "spanish"}
    assert set(prepared["multilingual_toxicity"]["lang"]) == {"en", "es", "de"}
    assert set(prepared["tweet_sentiment_multilingual"]["split"]) == {"train", "validation", "test"}
    assert prepared["election_questions"].height == 32  # both *_eval.csv files (split test), not eu_accuracy
    assert set(table(workdir, "transfer")["train_lang"]) == {"english", "german", "spanish"}
    # Behaviour: the 9B-IT stand-in (causal LM from the hub) scored PIQA; its features were probed on it.
    assert table(workdir, "behaviour").height > 0
    # Neuronpedia links for Gemma Scope features, from SAELens' registry.
    links = [u for u in table(workdir, "top_features")["neuronpedia"] if u]
    assert any(u.startswith("https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/") for u in links), links[:5]
    print(f"\nstand-in hub built in {hub['build_s']:.0f} s; paper.yaml (narrowed) ran in {elapsed:.0f} s")


@pytest.mark.workflow
def test_gemma_scope_2_config_runs_offline_on_the_hub_ids(hub, gs2_run):
    workdir, _, elapsed = gs2_run
    grid = table(workdir, "grid")
    assert set(grid["model"]) == {"gemma-3-270m"}
    assert set(grid["source"]) == {"hidden", *GS2_SAES}
    assert set(grid["dataset"]) == {"jailbreak_classification", "trec"}
    # SAELens' gemma_3 loader read the shapes and weights from the cached params.safetensors (offline).
    for sae, dataset, layer, width in (("gemma-3-270m-res-16k-l0-medium", "jailbreak_classification", 5, "16k"),
                                       ("gemma-3-270m-res-65k-l0-small", "trec", 9, "65k")):
        stats = code_stats(workdir, "gemma-3-270m", dataset, sae, layer)
        assert (stats["d_in"], stats["d_sae"]) == (640, hub_cache.GS2_WIDTHS[width])
    # The sizing's width parser reads Gemma Scope 2 ids: the tables carry the release's nominal widths.
    widths = dict(grid.filter(pl.col("source") != "hidden").select("source", "sae_width").unique().iter_rows())
    assert widths == {"gemma-3-270m-res-16k-l0-medium": 16384, "gemma-3-270m-res-65k-l0-small": 65536}
    # SAE quality with the spliced loss: Gemma 3 loaded from the hub id as a causal LM, the SAE spliced in.
    quality = json.loads((workdir / "results" / "sae_quality" / "gemma-3-270m-res-16k-l0-medium" /
                          "layer_5.json").read_text())["quality"]
    assert quality["n_loss_tokens"] > 0 and all(math.isfinite(quality[k]) for k in ("ce_clean", "ce_spliced", "ce_zero"))
    links = [u for u in table(workdir, "top_features").filter(pl.col("source") == "gemma-3-270m-res-16k-l0-medium")
             ["neuronpedia"]]
    assert links and all(u.startswith("https://www.neuronpedia.org/gemma-3-270m/5-gemmascope-2-res-16k/") for u in links)
    print(f"\ngemma-scope-2.yaml (narrowed) ran in {elapsed:.0f} s")

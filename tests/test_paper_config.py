"""config/paper.yaml: the paper's grid validates and dry-runs offline with every cell planned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

import saeprobe.config as sc
import saeprobe.grid as sg
from tests.conftest import ROOT, SHARED

PAPER = ROOT / "config" / "paper.yaml"

# Imported first by every Python process started with this folder on PYTHONPATH: any attempt to
# open a network connection fails loudly, so a dry run that touches the hub fails the test.
NO_NETWORK = '''
import socket

def _refuse(*args, **kwargs):
    raise RuntimeError("saeprobe test: network access attempted during a dry run")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
'''


def paper_config() -> dict:
    return sc.validate(yaml.safe_load(PAPER.read_text()))


def test_paper_grid_is_the_papers():
    cfg = paper_config()
    models = {m: s for m, s in cfg["models"].items() if s.get("kind", "text") == "text"}
    assert {s["hub"] for s in models.values()} == {"google/gemma-2-2b", "google/gemma-2-9b", "google/gemma-2-9b-it"}
    assert {m: s["layers"] for m, s in models.items() if "2b" in m} == {"gemma-2-2b": [5, 12, 19],
                                                                         "gemma-2-2b-mosaic": [5, 12, 19]}
    assert all(s["layers"] == [9, 20, 31] for m, s in models.items() if "9b" in m)
    # MOSAIC's layer indexing, side by side with the corrected one, for every model.
    assert sorted(s["layer_convention"] for s in models.values()) == ["block_output"] * 3 + ["mosaic"] * 3
    widths = {(cfg["saes"][s]["release"], cfg["saes"][s]["sae_id"].split("/")[1]) for s in cfg["saes"]}
    assert {w for r, w in widths if r == "gemma-scope-2b-pt-res-canonical"} == {"width_16k", "width_65k"}
    assert {w for r, w in widths if r.startswith("gemma-scope-9b")} == {"width_16k", "width_131k"}
    feats = cfg["features"]
    assert {"sum", "top20", "top50"} <= set(feats["poolings"]) and feats["binarize"] == [None, 1.0]
    assert "last" in feats["hidden_poolings"]
    assert cfg["tfidf"] == {"enabled": True, "ngram_max": 2, "max_features": 20000, "stop_words": "english", "min_df": 1}
    assert cfg["seed"] == 42 and all(d["test_fraction"] == 0.2 for d in cfg["datasets"].values())
    hubs = {d.get("hub") for d in cfg["datasets"].values()}
    assert {"Anthropic/election_questions", "AIM-Harvard/reject_prompts", "jackhhao/jailbreak-classification",
            "textdetox/multilingual_toxicity_dataset", "cardiffnlp/tweet_sentiment_multilingual"} <= hubs


@pytest.mark.workflow
def test_paper_dry_run_offline_covers_every_cell(tmp_path):
    cfg = paper_config()
    (tmp_path / "shared").symlink_to(SHARED)  # paper.yaml's behaviour files are ../shared/data/...
    workdir = tmp_path / "run"
    workdir.mkdir()
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(PAPER), "--cores", "1", "--quiet", "rules"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "network access attempted" not in proc.stdout + proc.stderr
    counts = Counter()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    plan = sg.Plan(cfg)
    assert counts["fit_probe"] == len(plan.units["grid"])  # one job per feature store, every cell on it
    assert sum(len(cells) for cells in plan.units["grid"].values()) == len(sg.probe_cells(cfg))
    assert counts["pool"] == len(plan.pooled_units)
    assert counts["fit_tfidf"] == len(sg.tfidf_datasets(cfg))
    assert counts["transfer"] == len(plan.units["transfer"])
    assert counts["score_behaviour"] == len(cfg["behaviour"])
    n_text = sum(1 for d in cfg["datasets"] if sg.dataset_kind(cfg, d) == "text")
    assert counts["extract_activations"] == sum(len(sg.dataset_models(cfg, d)) for d in cfg["datasets"]
                                                if sg.dataset_kind(cfg, d) == "text") and n_text > 0
    print(f"paper dry run: {counts['total']} jobs in {elapsed:.1f} s")

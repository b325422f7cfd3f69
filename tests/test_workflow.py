"""Whole-workflow runs through the snakemake CLI on a tiny random Gemma 2 model.

Exercises the pretrained-SAE path (a JumpReLU SAE built from a config and saved in SAELens
format) and the train_sae path side by side, then checks what a changed setting reruns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
import zarr

import saeprobe.grid as sg
import saeprobe.layout as sl
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--show-failed-logs", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned(workdir: Path) -> dict[str, int]:
    """Rule -> job count that a dry run plans (empty when there is nothing to do)."""
    out = snakemake(workdir, "-n").stdout
    if "Job stats:" not in out:
        assert "Nothing to be done" in out, out[-2000:]
        return {}
    lines = out.split("Job stats:")[1].splitlines()[3:]
    jobs = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_gemma2, jumprelu_dir):
    workdir = tmp_path_factory.mktemp("workflow")
    # A small real dataset: 60 train and 30 test prompts of jailbreak_classification.
    src = pl.read_parquet(DATA / "jailbreak_classification.parquet")
    small = pl.concat([src.filter(pl.col("split") == s).group_by("label", maintain_order=True).head(n // 2)
                       for s, n in (("train", 60), ("test", 30))])
    small.write_parquet(workdir / "jailbreak_small.parquet")
    cfg = {
        "seed": 0,
        "device": "cpu",
        "datasets": {"jailbreak": {"path": str(workdir / "jailbreak_small.parquet")}},
        "models": {"tiny_gemma2": {"path": str(tiny_gemma2), "layers": [0, 1], "max_length": 64, "token_budget": 512}},
        "saes": {
            "jumprelu": {"model": "tiny_gemma2", "path": str(jumprelu_dir), "layers": [1]},
            "topk": {"model": "tiny_gemma2", "layers": [1],
                     "train": {"width": 64, "k": 4, "training_tokens": 20000, "batch_size": 256}},
        },
        "features": {"poolings": ["mean", "top2"], "binarize": [None, 0.5], "hidden_poolings": ["last"]},
        "probe": {"Cs": [0.1, 1.0], "cv_folds": 3},
        "bootstrap": {"resamples": 200},
        "ksparse": {"datasets": ["jailbreak"], "rankings": ["mean_diff", "l1"], "ks": [1, 4], "poolings": ["top2"],
                    "hidden_poolings": ["last"]},
        "baselines": {"datasets": ["jailbreak"], "methods": ["decision_tree"], "sae_methods": [],
                      "hidden_poolings": ["last"]},
    }
    write_config(workdir, cfg)
    proc = snakemake(workdir)
    return workdir, cfg, proc


def test_run_produces_tables_and_stage_outputs(run):
    workdir, _, proc = run
    assert "tables are in results/tables/" in proc.stdout + proc.stderr
    res = workdir / "results"
    grid = pl.read_parquet(res / "tables" / "grid.parquet")
    assert grid.height == 2 * 2 * 2 + 2 + 1 + 2  # SAE probes + hidden probes + TF-IDF + hidden decision trees
    assert set(grid["family"]) == {"sae", "hidden", "tfidf"}
    assert grid.filter(pl.col("probe") == "decision_tree")["source"].to_list() == ["hidden", "hidden"]
    assert grid["test_macro_f1"].is_between(0, 1).all() and (grid["n_test"] == 30).all()
    assert ((grid["test_macro_f1_lo"] <= grid["test_macro_f1"]) & (grid["test_macro_f1"] <= grid["test_macro_f1_hi"])).all()
    assert grid["majority_macro_f1"].n_unique() == 1
    # Every table carries the SAE's architecture, width and k/sparsity from the config, after source.
    at = grid.columns.index("source")
    assert grid.columns[at + 1:at + 5] == ["sae_architecture", "sae_width", "sae_k", "sae_sparsity"]
    by_source = {r["source"]: r for r in grid.select("source", "sae_architecture", "sae_width", "sae_k",
                                                      "sae_sparsity").unique().iter_rows(named=True)}
    assert by_source["topk"] == {"source": "topk", "sae_architecture": "topk", "sae_width": 64, "sae_k": 4.0,
                                 "sae_sparsity": 4.0}
    assert by_source["jumprelu"]["sae_architecture"] is None  # a path SAE: not loaded to find out
    assert by_source["hidden"]["sae_width"] is None and by_source["tfidf"]["sae_k"] is None
    best = pl.read_csv(res / "tables" / "best.csv")
    assert set(best["family"]) == {"sae", "hidden", "tfidf"}
    assert best.filter(pl.col("family") == "sae")["vs_hidden_verdict"].is_in(["win", "tie", "loss", "unstable"]).all()
    assert (res / "tables" / "best.md").read_text().count("|") > 10
    assert set(pl.read_csv(res / "tables" / "best_on_test.csv")["selected_on"]) == {"test"}
    ks = pl.read_parquet(res / "tables" / "ksparse.parquet")
    assert set(ks["k"]) == {1, 4} and set(ks["ranking"]) == {"mean_diff", "l1"}
    assert ks.filter(pl.col("source") == "topk")["sae_width"].unique().to_list() == [64]
    assert ks["features"].list.len().to_list() == ks["k"].to_list()
    assert pl.read_parquet(res / "tables" / "binarize_vs_ksparse.parquet").height > 0
    assert "Win / tie / loss" in (res / "tables" / "summary.md").read_text()
    for name in ("ksparse", "binarize_vs_ksparse"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 5000
    acts = zarr.open_group(str(res / "activations" / "tiny_gemma2" / "jailbreak.zarr"), mode="r")
    assert acts.attrs["attn_implementation"] == "eager"  # Gemma 2 soft-capping honoured
    assert acts.attrs["hook_point"] == "blocks.{layer}.hook_resid_post"
    assert acts["layer_1"].shape[1] == 32
    for sae in ("jumprelu", "topk"):
        codes = zarr.open_group(str(res / "features" / "tiny_gemma2" / "jailbreak" / sae / "layer_1.zarr"), mode="r")
        assert 0 < codes.attrs["quality"]["l0"] and "explained_variance" in codes.attrs["quality_heldout"]
    log = json.loads((res / "saes" / "topk" / "layer_1" / "training_log.json").read_text())
    assert log["heldout"]["l0"] <= 4 and log["train_datasets"] == ["jailbreak"]
    assert (res / "saes" / "topk" / "layer_1" / "cfg.json").exists()
    for stage in ("extract_activations", "train_sae", "encode_sae", "pool", "fit_probe"):
        assert any((res / "benchmarks" / stage).rglob("*.tsv")), stage
    cell = sg.ProbeCell("tiny_gemma2", "jailbreak", "jumprelu", 1, "top2", "gt0.5")
    probe = json.loads((workdir / cell.path).read_text())
    assert probe["label_names"] == ["benign", "jailbreak"] and probe["threshold"] == 0.5


def test_rerun_plans_only_what_changed(run):
    workdir, cfg, _ = run
    assert planned(workdir) == {}

    changed = json.loads(json.dumps(cfg))
    changed["probe"]["Cs"] = [0.5, 2.0]
    write_config(workdir, changed)
    report = {"figures", "top_features", "report_tables", "summary", "sae_table"}  # everything drawn from the tables
    assert set(planned(workdir)) == {"fit_probe", "fit_tfidf", "ksparse", "ksparse_tables", "tables", "all"} | report

    changed = json.loads(json.dumps(cfg))
    changed["saes"]["topk"]["train"]["k"] = 3
    write_config(workdir, changed)
    jobs = planned(workdir)
    assert set(jobs) == {"train_sae", "sae_quality", "encode_sae", "pool", "fit_probe", "ksparse", "ksparse_tables",
                         "tables", "all"} | report
    assert jobs["encode_sae"] == 1 and jobs["fit_probe"] == 1  # only the topk SAE's branch (one job: its 4 cells)
    assert jobs["ksparse"] == 1

    write_config(workdir, cfg)
    assert planned(workdir) == {}


def test_damaged_cache_names_the_file_and_its_rebuild_command_works(run):
    """A truncated pooled .npz: the probe job stops with one line, and the command it names rebuilds it."""
    workdir, _, _ = run
    unit = sg.Unit("tiny_gemma2", "jailbreak", "topk", 1)
    rel = sl.cell_file(unit.folder(sl.POOLED), "mean")
    pooled, probe = workdir / rel, workdir / sl.cell_file(unit.folder(sl.PROBES), "mean", "raw", "json")
    before = json.loads(probe.read_text())["test"]
    pooled.write_bytes(pooled.read_bytes()[:100])
    proc = snakemake(workdir, "--forcerun", unit.folder(sl.PROBES), check=False)  # the probes read it again
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"saeprobe: {rel}: damaged or incomplete cached file (BadZipFile" in out, out[-3000:]
    assert f"snakemake --forcerun {unit.folder(sl.POOLED)}" in out  # the pool job's output: the unit folder
    snakemake(workdir, "--forcerun", unit.folder(sl.POOLED))
    assert json.loads(probe.read_text())["test"] == before  # rebuilt, same result
    assert planned(workdir) == {}


def test_bad_config_stops_with_the_key_named(tmp_path):
    write_config(tmp_path, {"datasets": {"d": {"path": "x.parquet"}}, "models": {"m": {"path": "m", "layers": [0]}},
                            "probe": {"cv_fold": 3}})
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "unknown key 'probe.cv_fold'" in proc.stdout + proc.stderr


def test_dataset_without_label_column_fails_clearly(tmp_path):
    pl.DataFrame({"text": ["a", "b"], "category": [0, 1]}).write_parquet(tmp_path / "bad.parquet")
    write_config(tmp_path, {"datasets": {"bad": {"path": str(tmp_path / "bad.parquet")}},
                            "models": {"m": {"path": str(tmp_path), "layers": [0]}}})
    proc = snakemake(tmp_path, "results/data/bad.parquet", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "dataset 'bad'" in out and "no label column 'label'" in out and "columns are ['text', 'category']" in out
    assert not (tmp_path / "results" / "data" / "bad.parquet").exists()

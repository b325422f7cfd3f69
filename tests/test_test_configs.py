"""The `.test/` configurations: every file validates and dry-runs offline; the full one plans every rule.

Only dry runs here (seconds each). ``minimal.yaml`` runs end to end in about a minute on 2 cores:
``snakemake --cores 2 --configfile .test/config/minimal.yaml`` from the repository root.
"""

from __future__ import annotations

import copy

import polars as pl
import pytest

import saeprobe.config as sc
import saeprobe.layout as sl
from saeprobe import grid
from tests.helpers import (
    DATA,
    TEST_CONFIGS,
    TEST_DIR,
    config_files,
    config_workdir,
    jailbreak_slice,
    list_rules,
    load_test_config,
    multilingual_slice,
    per_label_slice,
    planned,
)

CONFIGS = config_files()
MAX_FILE_BYTES = 100_000


def test_the_configurations_exist():
    assert {"minimal.yaml", "full.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configuration_validates(path, capsys):
    """``python -m saeprobe.config FILE`` says ok."""
    assert sc.main([str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"config file {path}: ok")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configuration_reads_only_files_that_exist(path, tmp_path):
    """Every local file a configuration names is there (relative to the repository root), so the
    run needs no network and nothing made in Python; files under .test/ stay small."""
    workdir = config_workdir(tmp_path)
    cfg = load_test_config(path.stem)
    named = [spec["path"] for section in ("datasets", "models", "saes", "behaviour")
             for spec in cfg.get(section, {}).values() if "path" in spec]
    named += [spec["gguf"] for spec in cfg["models"].values() if "gguf" in spec]
    named += [spec["random"]["tokenizer"] for spec in cfg["models"].values() if "tokenizer" in spec.get("random", {})]
    for rel in named:
        assert not rel.startswith("/"), f"{path.name}: '{rel}' is absolute; paths are relative to the repository root"
        assert (workdir / rel).exists(), f"{path.name}: '{rel}' does not exist"
    for name, spec in cfg["models"].items():
        assert sl.built_model(name, spec), f"{path.name}: every model is built by the workflow (random, GGUF), got {spec}"
    for file in TEST_DIR.rglob("*"):
        if file.is_file():
            assert file.stat().st_size < MAX_FILE_BYTES, f"{file} is {file.stat().st_size} bytes"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configuration_dry_runs(path, tmp_path):
    jobs = planned(config_workdir(tmp_path), configfile=path)
    assert jobs.get("all") == 1, jobs
    assert {"init_random_model", "prepare_dataset", "fit_probe", "tables"} <= set(jobs), jobs


def test_minimal_is_one_model_one_sae_one_layer_with_every_probe_family(tmp_path):
    cfg = sc.validate(load_test_config("minimal"))
    assert len(cfg["models"]) == 1 and len(cfg["saes"]) == 1
    (model,) = cfg["models"].values()
    assert len(model["layers"]) == 1
    cells = grid.probe_cells(cfg)
    assert {c.source for c in cells} == {grid.HIDDEN, *cfg["saes"]}
    assert grid.tfidf_datasets(cfg) == list(cfg["datasets"])
    jobs = planned(config_workdir(tmp_path), configfile=TEST_CONFIGS / "minimal.yaml")
    assert {"train_sae", "encode_sae", "fit_tfidf", "top_features"} <= set(jobs), jobs


def test_full_dry_run_plans_every_rule_of_the_workflow(tmp_path):
    workdir = config_workdir(tmp_path)
    full = TEST_CONFIGS / "full.yaml"
    rules = list_rules(workdir, configfile=full)
    assert len(rules) > 10 and "all" in rules, rules
    jobs = planned(workdir, configfile=full)
    missing = sorted(set(rules) - set(jobs))
    assert not missing, f"full.yaml plans no job of rules {missing}; extend it so that every rule runs"


def test_full_covers_both_tiny_text_architectures_and_a_vision_model():
    cfg = sc.validate(load_test_config("full"))
    presets = {spec["random"]["preset"] for spec in cfg["models"].values() if "random" in spec}
    assert {"tiny-gemma2", "tiny-llama", "tiny-paligemma"} <= presets
    assert any("gguf" in spec for spec in cfg["models"].values())  # convert_gguf
    assert cfg["transfer"]["datasets"] and cfg["sweep"]["datasets"] and cfg["behaviour"]
    assert any("path" in s for s in cfg["saes"].values()) and any("train" in s for s in cfg["saes"].values())


def test_a_broken_configuration_fails_the_checks(tmp_path):
    """The checks above can fail: an unknown key stops validation and the dry run."""
    from tests.helpers import snakemake, write_config

    bad = copy.deepcopy(load_test_config("minimal"))
    bad["probe"]["cv_fold"] = 3
    path = write_config(tmp_path, bad, "bad.yaml")
    assert sc.main([str(path)]) == 1
    proc = snakemake(config_workdir(tmp_path), "-n", configfile=path, check=False)
    assert proc.returncode != 0 and "unknown key 'probe.cv_fold'" in proc.stdout + proc.stderr


@pytest.mark.skipif(not DATA.exists(), reason="needs the shared data (../shared/data)")
def test_data_slices_are_what_the_helpers_build():
    """.test/data is up to date with `python .test/build.py` (the tests' own slices)."""
    trec = per_label_slice(pl.read_parquet(DATA / "trec.parquet").select("text", "label", "split"),
                           {"train": 90, "test": 30}, 6)
    tweets = multilingual_slice().select("text", "label", "split", "lang")
    for name, expected in (("jailbreak_classification", jailbreak_slice()), ("trec", trec),
                           ("tweet_sentiment_multilingual", tweets)):
        got = pl.read_parquet(TEST_DIR / "data" / f"{name}.parquet")
        assert got.equals(expected), f".test/data/{name}.parquet differs from what .test/build.py writes"


def test_the_gguf_file_is_what_the_helper_builds(tmp_path):
    """.test/models/tiny_gemma3.gguf is up to date with `python .test/build.py` (byte for byte)."""
    pytest.importorskip("gguf")
    from tests.helpers import write_tiny_gguf

    fresh = write_tiny_gguf(tmp_path / "tiny_gemma3.gguf", seed=0)
    assert (TEST_DIR / "models" / "tiny_gemma3.gguf").read_bytes() == fresh.read_bytes()

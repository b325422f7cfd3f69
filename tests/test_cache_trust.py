"""A user's config runs alone; labels, metrics, file-name values and permissions can be trusted.

Issue 10 ("a cache that never serves stale or corrupt results"): each test here failed on the
main before it. Fingerprinted weights and corrupt caches have their own files
(test_fingerprint.py, test_cache_corruption.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import saeprobe.config as sc
import saeprobe.grid as sg
from saeprobe import data
from saeprobe.errors import ConfigError, DataError
from saeprobe.io import atomic_path
from saeprobe.probes import fit_probe, macro_f1
from saeprobe.tables import grid
from tests.conftest import DATA, ROOT, STORIES
from tests.helpers import job_counts

# The README's commands run `.venv/bin/snakemake`: the snakemake of this interpreter's environment.
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def readme_snakemake(*args: str) -> subprocess.CompletedProcess:
    """Run snakemake from the repository root exactly as the README types it (no --snakefile/--directory)."""
    cmd = [str(SNAKEMAKE) if SNAKEMAKE.exists() else sys.executable, *([] if SNAKEMAKE.exists() else ["-m", "snakemake"]),
           *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


# --------------------------------------------------------------------------- 1. a user's config runs alone


@pytest.mark.workflow
def test_user_config_plans_only_its_own_jobs(tmp_path):
    """`.venv/bin/snakemake --cores all --configfile my.yaml` (README) plans the user's grid, not the default's too."""
    my = tmp_path / "my.yaml"
    my.write_text(yaml.safe_dump({
        "datasets": {"my_task_only": {"path": str(DATA / "trec.parquet")}},
        "models": {"my_model_only": {"path": str(STORIES), "layers": [3, 1]}},
        "features": {"hidden_poolings": ["mean", "last"]},
    }))
    proc = readme_snakemake("-n", "--cores", "all", "--configfile", str(my))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = job_counts(proc.stdout)
    # 1 dataset x 1 model x 2 layers = 2 feature stores (2 hidden poolings each: one pool and one probe job per store), plus TF-IDF.
    assert jobs == {"prepare_dataset": 1, "tokenize": 1, "extract_activations": 1, "pool": 2, "fit_probe": 2,
                    "fit_tfidf": 1, "tables": 1, "summary": 1, "figures": 1, "report_tables": 1, "all": 1}
    for default_name in ("jailbreak_classification", "minilm", "stories260k/", "piqa", "digits"):
        assert default_name not in proc.stdout, default_name


@pytest.mark.workflow
def test_readme_paper_dry_run_command_works():
    """`.venv/bin/snakemake -n --configfile config/paper.yaml` (README) plans the paper's grid alone."""
    proc = readme_snakemake("-n", "--configfile", "config/paper.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = job_counts(proc.stdout)
    assert jobs["fit_probe"] > 300  # one job per feature store (357), each fitting every cell on it
    assert "results/data/trec.parquet" not in proc.stdout and "stories260k" not in proc.stdout  # default-only names


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "my.yaml"
    bad.write_text("datasets:\n  a: {path: x\n  b: [1,\n")
    with pytest.raises(ConfigError) as err:
        sc.load_yaml(bad)
    assert str(bad) in str(err.value) and "line 3, column 4" in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "saeprobe.config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and f"config file {bad}: invalid YAML at line 3" in proc.stdout


# --------------------------------------------------------------------------- 4. labels


def test_label_spellings_are_one_class(tmp_path, caplog):
    csv = tmp_path / "labels.csv"
    rows = ["1", "1.0", " spam", "spam ", "spam", "1", "01", "spam", "1", "spam"]
    csv.write_text("text,label\n" + "".join(f"doc {i},{lab}\n" for i, lab in enumerate(rows)))
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        out, names, report = data.prepare({"path": str(csv), "split_column": None, "test_fraction": 0.3}, "d", 0)
    assert names == ["1", "spam"]
    assert out.sort("source_row")["label_name"].to_list() == ["1", "1", "spam", "spam", "spam", "1", "1", "spam", "1", "spam"]
    assert report["label_spellings_merged"] == {"1": ["01", "1", "1.0"], "spam": [" spam", "spam", "spam "]}
    assert "'1.0' (1 rows, e.g. row 1)" in caplog.text and "are one class '1'" in caplog.text


def test_float_labels_name_their_classes_by_value(tmp_path):
    pl.DataFrame({"text": [f"t{i}" for i in range(8)], "label": [0.0, 1.0] * 4}).write_parquet(tmp_path / "f.parquet")
    _, names, _ = data.prepare({"path": str(tmp_path / "f.parquet"), "split_column": None, "test_fraction": 0.25}, "d", 0)
    assert names == ["0", "1"]


def test_duplicate_column_names_are_an_error(tmp_path):
    csv = tmp_path / "dup.csv"
    csv.write_text("text,label,label\na,0,x\nb,1,y\n")
    with pytest.raises(DataError, match=r"more than one column named 'label' \(columns 1, 2\)"):
        data.prepare({"path": str(csv)}, "d", 0)
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array([0, 1]), pa.array([1, 0])], names=["text", "label", "label"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"dup.parquet has more than one column named 'label'"):
        data.prepare({"path": str(tmp_path / "dup.parquet")}, "d", 0)


# --------------------------------------------------------------------------- 5. honest metrics


def test_macro_f1_counts_absent_classes_as_zero():
    y_true = np.zeros(40, dtype=int)
    y_pred = np.array([0] * 25 + [1] * 15)  # confusion [[25, 15], [0, 0]]
    assert macro_f1(y_true, y_pred) == pytest.approx(0.3846, abs=1e-4)
    assert macro_f1(y_true, y_pred, n_classes=3) == pytest.approx(0.7692 / 3, abs=1e-4)


def test_a_test_split_missing_a_class_is_flagged(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2] * 40)
    x = rng.normal(size=(len(y), 5)) + y[:, None]
    split = np.array(["train"] * 90 + ["test"] * 30, dtype=object)
    split[90:][y[90:] == 2] = "train"  # class 2 never reaches the test split
    result, _, _ = fit_probe(x, y, split, Cs=[1.0], cv_folds=3, n_classes=3)
    assert result["test"]["missing_classes"] == [2]
    pred_present = sorted(set(np.unique(y[split == "test"])))
    assert pred_present == [0, 1]
    # Averaged over the three classes of the dataset, so at most 2/3 when class 2 is never predicted.
    assert result["test"]["macro_f1"] <= 2 / 3 + 1e-9
    result.update(dataset="d", model="m", source="hidden", layer=0, pooling="mean", binarize="raw")
    from saeprobe.io import write_json

    write_json(tmp_path / "p.json", result)
    assert grid([tmp_path / "p.json"])["test_missing_classes"].to_list() == [1]


# --------------------------------------------------------------------------- 6. validation covers what the rules need


def base_config() -> dict:
    return {"datasets": {"d": {"path": "x.parquet"}}, "models": {"m": {"path": "m", "layers": [3, 1, 3]}},
            "saes": {"s": {"model": "m", "train": {"width": 64, "k": 8}}}}


def test_k_above_width_is_a_config_error():
    cfg = base_config()
    cfg["saes"]["s"]["train"]["k"] = 65
    with pytest.raises(ConfigError, match=r"'saes.s.train.k'.*k=65 > width=64"):
        sc.validate(cfg)


def test_layers_are_sorted_and_deduplicated():
    cfg = sc.validate(base_config())
    assert cfg["models"]["m"]["layers"] == [1, 3]


@pytest.mark.parametrize("threshold", [1e-5, 1e6, 2.5e-7, 0.0, 123456.75])
def test_every_non_negative_threshold_gets_a_matching_file_name(threshold):
    cfg = base_config()
    cfg["features"] = {"binarize": [None, threshold]}
    cells = sg.probe_cells(sc.validate(cfg))
    import re

    names = {c.binarize for c in cells}
    assert all(re.fullmatch(sc.WILDCARDS["binarize"], n) for n in names), names
    assert sg.parse_binarize(sg.binarize_name(threshold)) == threshold


def test_thresholds_close_in_value_do_not_collide():
    assert sg.binarize_name(0.1234567) != sg.binarize_name(0.1234568)
    assert sg.binarize_name(1e-5) == "gt0.00001" and sg.binarize_name(1.0) == "gt1" and sg.binarize_name(1e6) == "gt1000000"


@pytest.mark.parametrize("threshold", [-1.0, float("inf")])
def test_negative_or_infinite_threshold_is_a_config_error(threshold):
    cfg = base_config()
    cfg["features"] = {"binarize": [threshold]}
    with pytest.raises(ConfigError, match=r"'features.binarize': threshold"):
        sc.validate(cfg)


def test_repeated_threshold_in_transfer_is_a_config_error():
    cfg = base_config()
    cfg["datasets"]["d"]["lang_column"] = "lang"
    cfg["transfer"] = {"datasets": ["d"], "binarize": [0.5, 0.50]}
    with pytest.raises(ConfigError, match=r"'transfer.binarize': thresholds 0.5 and 0.5 are the same value"):
        sc.validate(cfg)


@pytest.mark.workflow
def test_tiny_threshold_plans_every_probe(tmp_path):
    """binarize 1e-5 used to end in MissingInputException (gt1e-05 matches no wildcard)."""
    my = tmp_path / "my.yaml"
    my.write_text(yaml.safe_dump({
        "datasets": {"d_tiny_thr": {"path": str(DATA / "trec.parquet")}},
        "models": {"m_tiny_thr": {"path": str(STORIES), "layers": [1]}},
        "saes": {"s_tiny_thr": {"model": "m_tiny_thr", "train": {"width": 64, "k": 4}}},
        "features": {"poolings": ["mean"], "binarize": [1e-5, 1e6], "hidden_states": False},
        "tfidf": {"enabled": False},
    }))
    proc = readme_snakemake("-n", "--cores", "all", "--configfile", str(my))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert job_counts(proc.stdout)["fit_probe"] == 1  # one feature store, both thresholds
    plan = sg.Plan(sc.validate(sc.load_yaml(my)))
    files = [c.path for c in plan.stage_cells["grid"]]
    assert [f.rsplit("/", 1)[1] for f in files] == ["mean__gt0.00001.json", "mean__gt1000000.json"]


# --------------------------------------------------------------------------- 7. outputs readable by the group


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_umask_permissions(tmp_path, umask):
    import tempfile

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "store.zarr", directory=True) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "weights.safetensors").write_bytes(b"x")
            fd, _ = tempfile.mkstemp(dir=tmp)  # 0600, as library writers that use temporary files leave it
            os.close(fd)
        with atomic_path(tmp_path / "table.csv") as tmp:
            tmp.write_text("a\n")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    dirs, files = 0o777 & ~umask, 0o666 & ~umask
    assert modes.pop("store.zarr") == dirs and modes.pop("store.zarr/sub") == dirs
    assert set(modes.values()) == {files}, {k: oct(v) for k, v in modes.items()}

"""Bad input: every case ends in a clear error naming the file, column and row (or the config
key), or in a counted, logged drop where dropping is the documented behaviour.

Library-level tests for each case, then a few through the snakemake CLI checking that the
message reaches the user's terminal and the job's log, without a traceback, and that the failed
job leaves no output behind.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from saeprobe import data
from saeprobe.config import validate
from saeprobe.errors import ConfigError, DataError
from saeprobe.models import load_model, load_tokenizer
from saeprobe.sae import check_sae_input, encode_store, load_sae
from saeprobe.tokenize import tokenize
from tests.helpers import STORIES, alternating_frame, make_jumprelu, snakemake, write_config, write_parquet


# --------------------------------------------------------------------------- texts


def test_empty_and_whitespace_texts_are_dropped_counted_and_logged(tmp_path, caplog):
    frame = alternating_frame(12).with_columns(
        pl.Series("text", ["", "  \t", None, "\n"] + [f"t {i}" for i in range(8)], dtype=pl.String))
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        out, _, report = data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)
    assert report["n_dropped_empty_text"] == 4 and out.height == 8
    assert sorted(out["source_row"].to_list()) == list(range(4, 12))
    assert "dropped 4 empty or whitespace-only texts (source rows [0, 1, 2, 3]" in caplog.text


def test_only_empty_texts_is_an_error_naming_the_column(tmp_path):
    path = write_parquet(tmp_path, pl.DataFrame({"body": ["", " "], "label": [0, 1]}))
    with pytest.raises(DataError, match=r"dataset 'd' \(.*d\.parquet\): every text in column 'body' is empty"):
        data.prepare({"path": path, "text_column": "body"}, "d", seed=0)


def test_missing_text_column_names_file_column_and_key(tmp_path):
    path = write_parquet(tmp_path, pl.DataFrame({"prompt": ["a"], "label": [0]}))
    with pytest.raises(DataError) as err:
        data.prepare({"path": path}, "d", seed=0)
    msg = str(err.value)
    assert path in msg and "no text column 'text'" in msg and "['prompt', 'label']" in msg
    assert "datasets.d.text_column" in msg


def test_missing_label_column_names_file_column_and_key(tmp_path):
    path = write_parquet(tmp_path, pl.DataFrame({"text": ["a"], "category": [0]}))
    with pytest.raises(DataError, match=r"no label column 'label'; columns are \['text', 'category'\].*label_column"):
        data.prepare({"path": path}, "d", seed=0)


def test_text_far_beyond_max_length_is_truncated_counted_and_logged(caplog):
    tok = load_tokenizer({"path": str(STORIES)}, "stories")
    texts = ["a short one", "once upon a time " * 5000]  # ~20k tokens against max_length 32
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        out = tokenize(texts, tok, max_length=32)
    assert out["n_tokens"].to_list()[1] == 32 and out["truncated"].to_list() == [False, True]
    assert out["n_tokens_full"][1] > 10000
    assert "truncated 1 of 2 documents to max_length=32 tokens" in caplog.text


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("labels", [[0.0, 1.0, math.nan, 1.0], [0.0, 1.0, None, 1.0]], ids=["nan", "null"])
def test_nan_or_null_labels_name_column_and_rows(tmp_path, labels):
    frame = pl.DataFrame({"text": list("abcd"), "label": labels}, schema={"text": pl.String, "label": pl.Float64})
    path = write_parquet(tmp_path, frame)
    with pytest.raises(DataError) as err:
        data.prepare({"path": path}, "d", seed=0)
    msg = str(err.value)
    assert path in msg and "column 'label' has 1 missing labels" in msg and "rows [2]" in msg


def test_nan_and_empty_labels_in_csv_name_the_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,x\nb,y\nc,\nd,NaN\ne,x\n")
    with pytest.raises(DataError, match=r"column 'label' has 2 missing labels .* rows \[2, 3\]"):
        data.prepare({"path": str(path)}, "d", seed=0)


def test_single_class_is_an_error(tmp_path):
    path = write_parquet(tmp_path, pl.DataFrame({"text": list("abcd"), "label": ["x"] * 4}))
    with pytest.raises(DataError, match=r"column 'label' has a single class \['x'\]; a probe needs two or more"):
        data.prepare({"path": path}, "d", seed=0)


def test_class_with_one_example_when_splits_are_drawn(tmp_path):
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(11)], "label": ["a"] * 5 + ["b"] * 5 + ["rare"]})
    with pytest.raises(DataError) as err:
        data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)
    msg = str(err.value)
    assert "column 'label'" in msg and "cannot draw a stratified test split" in msg and "'rare' (1)" in msg


def test_class_with_one_train_example_in_source_splits(tmp_path):
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(9)], "label": ["a", "a", "b", "b", "c", "a", "b", "c", "c"],
                          "split": ["train"] * 5 + ["test"] * 4})
    with pytest.raises(DataError) as err:
        data.prepare({"path": write_parquet(tmp_path, frame)}, "d", seed=0)
    assert "1 of 3 classes have fewer than 2 train examples: 'c' (1 in train, 3 in all)" in str(err.value)


def test_too_few_rows_for_a_stratified_split(tmp_path):
    frame = pl.DataFrame({"text": list("abcdefghi"), "label": [0, 1, 2] * 3})  # a 20% test split has 2 rows
    with pytest.raises(DataError, match=r"cannot draw a stratified test split \(0.2 of 9 rows, 3 classes\)"):
        data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)


# --------------------------------------------------------------------------- encodings, ids, emptiness


def test_non_utf8_csv_names_row_and_column(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine,0\ncaf\u00e9 au lait,1\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        data.prepare({"path": str(path)}, "d", seed=0)
    msg = str(err.value)
    assert str(path) in msg and "is not valid UTF-8: row 1, column 'text'" in msg and "iconv" in msg


def test_non_utf8_in_a_later_column_of_a_multiline_record(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes('text,label\nok,a\n"two\nlines",caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"row 1, column 'label'"):
        data.prepare({"path": str(path)}, "d", seed=0)


def test_non_utf8_jsonl_names_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"text": "ok", "label": 0}\n{"text": "caf\u00e9", "label": 1}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"d\.jsonl is not valid UTF-8: row 1 "):
        data.prepare({"path": str(path)}, "d", seed=0)


def test_non_utf8_bytes_in_a_binary_parquet_column(tmp_path):
    frame = pl.DataFrame({"text": [b"ok", b"ok too", b"\xff\xfe bad", b"fine"], "label": [0, 1, 0, 1]})
    with pytest.raises(DataError, match=r"column 'text' row 2 is not valid UTF-8"):
        data.prepare({"path": write_parquet(tmp_path, frame)}, "d", seed=0)


def test_duplicate_ids_name_the_ids_and_rows(tmp_path):
    frame = alternating_frame(8, doc=["a", "b", "c", "a", "d", "e", "b", "f"])
    with pytest.raises(DataError) as err:
        data.prepare({"path": write_parquet(tmp_path, frame), "id_column": "doc"}, "d", seed=0)
    msg = str(err.value)
    assert "column 'doc' (id_column) has 2 duplicated ids" in msg and "'a' in rows [0, 3]" in msg
    assert "'b' in rows [1, 6]" in msg


def test_missing_id_column_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"no id column 'doc'"):
        data.prepare({"path": write_parquet(tmp_path, alternating_frame(8)), "id_column": "doc"}, "d", seed=0)


def test_duplicate_texts_are_kept_but_counted_and_logged(tmp_path, caplog):
    texts = ["same"] * 3 + [f"t{i}" for i in range(9)]
    frame = pl.DataFrame({"text": texts, "label": [0, 1, 0] + [0, 1] * 4 + [1],
                          "split": ["train", "train", "test"] + ["train"] * 6 + ["test"] * 3})
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        out, _, report = data.prepare({"path": write_parquet(tmp_path, frame)}, "d", seed=0)
    assert out.height == 12
    assert report["duplicates"] == {"n_duplicate_rows": 2, "n_duplicated_texts": 1, "n_texts_in_train_and_test": 1,
                                    "n_texts_with_conflicting_labels": 1}
    assert "1 texts occur more than once (2 extra rows, kept); 1 of them are in both train and test" in caplog.text


def test_empty_dataset_is_an_error(tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataError, match=r"dataset 'd' \(.*h\.csv\): no rows"):
        data.prepare({"path": str(header_only)}, "d", seed=0)
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"could not read .*e\.csv"):
        data.prepare({"path": str(empty)}, "d", seed=0)


def test_missing_dataset_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'd': file not found: .*nope\.csv"):
        data.prepare({"path": str(tmp_path / "nope.csv")}, "d", seed=0)


# --------------------------------------------------------------------------- models and SAEs


def test_unknown_model_path_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.m\.path: no model folder with a config\.json at '.*nowhere'"):
        load_tokenizer({"path": str(tmp_path / "nowhere")}, "m")
    with pytest.raises(ConfigError, match=r"models\.m\.package: cannot import 'no_such_model_pkg'"):
        load_tokenizer({"package": "no_such_model_pkg"}, "m")


def test_hub_model_offline_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        load_tokenizer({"hub": "google/gemma-2-2b"}, "gemma")
    assert "models.gemma: could not load a tokenizer from 'google/gemma-2-2b'" in str(err.value)
    assert "offline mode" in str(err.value) and "offline: false" in str(err.value)


def test_layer_beyond_depth_fails_before_weights_are_read(tiny_llama, monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the layer check")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    with pytest.raises(ConfigError) as err:
        load_model({"path": str(tiny_llama), "layers": [1, 4, 9]}, "tiny", torch.device("cpu"), torch.float32)
    assert "models.tiny.layers: layers [4, 9] do not exist: model 'tiny'" in str(err.value)
    assert "has 4 blocks, so layers run from 0 to 3" in str(err.value)


def test_unknown_sae_release_suggests_the_closest():
    spec = {"release": "gemma-scope-2b-pt-res-canonicl", "sae_id": "layer_{layer}/width_16k/canonical"}
    with pytest.raises(ConfigError) as err:
        load_sae(spec, 12, "cpu", "gs")
    msg = str(err.value)
    assert msg.startswith("saes.gs.release: release 'gemma-scope-2b-pt-res-canonicl' is not in SAELens'")
    assert "did you mean 'gemma-scope-2b-pt-res-canonical'" in msg


def test_unknown_sae_id_lists_the_closest_ids():
    spec = {"release": "gemma-scope-2b-pt-res-canonical", "sae_id": "layer_{layer}/width_17k/canonical"}
    with pytest.raises(ConfigError) as err:
        load_sae(spec, 12, "cpu", "gs")
    msg = str(err.value)
    assert msg.startswith("saes.gs.sae_id: release 'gemma-scope-2b-pt-res-canonical' has no SAE id "
                          "'layer_12/width_17k/canonical'")
    assert "'layer_12/width_16k/canonical'" in msg


def test_missing_sae_folder_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"saes\.mine: no SAELens folder \(cfg\.json \+ weights\) at '.*layer_3'"):
        load_sae({"path": str(tmp_path / "layer_{layer}")}, 3, "cpu", "mine")


def test_sae_width_that_does_not_match_the_model(tmp_path):
    sae = make_jumprelu(16, 32)
    with pytest.raises(ConfigError) as err:
        check_sae_input(sae, 32, 1, "wrong", "tiny")
    assert ("saes.wrong: the SAE reads vectors of width d_in=16, but model 'tiny' has d_model=32 at layer 1"
            in str(err.value))
    check_sae_input(make_jumprelu(32, 64), 32, 1, "right", "tiny")  # no error


def test_encode_store_checks_the_width_before_writing(tmp_path):
    import zarr

    from saeprobe.store import ActivationStore, create_array, write_index

    group = zarr.open_group(str(tmp_path / "acts.zarr"), mode="w")
    arr = create_array(group, "layer_0", (32,), "float32", 8)
    arr.append(np.ones((5, 32), np.float32), axis=0)
    special = create_array(group, "special", (), bool, 8)
    special.append(np.zeros(5, bool), axis=0)
    write_index(group, np.array([0, 2, 5]), np.array([0, 1]))
    out = zarr.open_group(str(tmp_path / "codes.zarr"), mode="w")
    with pytest.raises(ValueError, match="d_in=16 does not match the model's d_model=32 at layer 0"):
        encode_store(make_jumprelu(16, 32), ActivationStore(tmp_path / "acts.zarr"), 0, out,
                     heldout_docs=np.zeros(2, bool))
    assert list(out.array_keys()) == []


# --------------------------------------------------------------------------- config


def test_config_typo_names_the_key_and_suggests_the_right_one():
    cfg = {"datasets": {"d": {"path": "x.csv", "lable_column": "y"}}, "models": {"m": {"path": "m", "layers": [0]}},
           "probe": {"cv_fold": 3}}
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert "unknown key 'datasets.d.lable_column' — did you mean 'label_column'?" in msg
    assert "unknown key 'probe.cv_fold' — did you mean 'cv_folds'?" in msg


# --------------------------------------------------------------------------- through the snakemake CLI


def _cli(workdir: Path, cfg: dict, *targets: str):
    write_config(workdir, cfg)
    proc = snakemake(workdir, *targets, check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.mark.workflow
def test_cli_config_typo_reaches_the_terminal(tmp_path):
    out = _cli(tmp_path, {"datasets": {"d": {"path": "x.csv"}}, "models": {"m": {"path": "m", "layers": [0]}},
                          "sede": 3}, "-n")
    assert "unknown key 'sede' — did you mean 'seed'?" in out
    assert "Traceback" not in out


@pytest.mark.workflow
def test_cli_non_utf8_dataset_reaches_terminal_and_log_without_traceback(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("text,label\nfine,0\ncaf\u00e9,1\n".encode("latin-1"))
    cfg = {"datasets": {"bad": {"path": str(tmp_path / "latin1.csv")}}, "models": {"m": {"path": str(tmp_path), "layers": [0]}}}
    out = _cli(tmp_path, cfg, "results/data/bad.parquet")
    expected = "is not valid UTF-8: row 1, column 'text'"
    assert f"saeprobe: dataset 'bad': {tmp_path / 'latin1.csv'} {expected}" in out  # the job's own stderr line
    log = (tmp_path / "results" / "logs" / "prepare_dataset" / "bad.log").read_text()
    assert expected in log and "Traceback" not in log
    assert not (tmp_path / "results" / "data" / "bad.parquet").exists()
    assert not list((tmp_path / "results" / "data").glob(".*tmp"))  # no temporary left behind


@pytest.mark.workflow
def test_cli_layer_beyond_depth_stops_extraction_with_the_key(tmp_path, tiny_llama):
    alternating_frame(20).write_parquet(tmp_path / "d.parquet")
    cfg = {"device": "cpu", "datasets": {"d": {"path": str(tmp_path / "d.parquet"), "split_column": None}},
           "models": {"tiny": {"path": str(tiny_llama), "layers": [1, 6], "max_length": 16}}}
    out = _cli(tmp_path, cfg, "results/activations/tiny/d.zarr")
    assert "saeprobe: models.tiny.layers: layers [6] do not exist" in out
    log = (tmp_path / "results" / "logs" / "extract_activations" / "tiny" / "d.log").read_text()
    assert "has 4 blocks, so layers run from 0 to 3" in log and "Traceback" not in log
    assert not (tmp_path / "results" / "activations" / "tiny" / "d.zarr").exists()


def test_make_report_before_any_run_says_run_make_run_first(tmp_path):
    """`make report` with nothing run printed ~20 warnings and a missing-figure error; now one line."""
    import shutil
    import subprocess
    import sys

    from tests.helpers import ROOT, SNAKEFILE, config_workdir, load_test_config

    if shutil.which("make") is None:
        pytest.skip("needs make")
    workdir = config_workdir(tmp_path)
    configfile = write_config(workdir, load_test_config("minimal"))
    snake = f"{sys.executable} -m snakemake --snakefile {SNAKEFILE} --directory {workdir} --configfile {configfile}"
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", ".venv/bin/.installed", "report", f"SNAKEMAKE={snake}"],
                          capture_output=True, text=True, timeout=600)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0
    lines = [line for line in out.splitlines() if not line.startswith("make")]
    assert len(lines) == 1, out[-3000:]
    assert lines[0].startswith("saeprobe: no finished run to report on (") and lines[0].endswith("run `make run` first")
    assert int(lines[0].split("(")[1].split()[0]) > 10  # the minimal run's jobs, none done
    assert not (workdir / "results").exists()

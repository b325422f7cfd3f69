"""Damaged cached files (truncated, one byte altered) raise a one-line CacheError that names the
file (for Zarr: the store and the chunk) and the command that rebuilds it."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import zarr

from saeprobe import data
from saeprobe.errors import CacheError
from saeprobe.io import read_json, write_json
from saeprobe.pooling import load_pooled, save_pooled
from saeprobe.probes import load_coef, save_coef
from saeprobe.sae import encode_store, load_sae
from saeprobe.store import ACTIVATION_COMPRESSOR, ActivationStore, AppendWriter, CodeStore, create_array, write_index
from saeprobe.top_features import read_token_ids
from tests.helpers import make_jumprelu

N_ROWS, CHUNK = 40, 8  # five chunks of activations per layer


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def flip_middle_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def assert_names(err: pytest.ExceptionInfo[CacheError], path: Path, *parts: str, rebuild: Path | None = None) -> str:
    """The message is one line, names ``path`` and ``parts``, and says how to rebuild."""
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: damaged or incomplete cached file (")
    for part in parts:
        assert part in message
    assert f"snakemake --forcerun {rebuild or path} " in message
    return message


@pytest.fixture
def dense_store(tmp_path) -> Path:
    """A float16 activation store (layer 0, 32 wide) written like extraction writes it."""
    path = tmp_path / "acts.zarr"
    group = zarr.open_group(str(path), mode="w")
    rows = np.random.default_rng(0).normal(size=(N_ROWS, 32)).astype(np.float16)
    layer = AppendWriter(create_array(group, "layer_0", (32,), np.float16, CHUNK, ACTIVATION_COMPRESSOR))
    special = AppendWriter(create_array(group, "special", (), bool, CHUNK))
    layer.write(rows)
    special.write(np.arange(N_ROWS) % 10 == 0)
    layer.close(), special.close()
    write_index(group, np.arange(0, N_ROWS + 1, 10), np.arange(4))
    return path


@pytest.fixture
def code_store(tmp_path, dense_store) -> Path:
    """Sparse codes of ``dense_store`` written by :func:`encode_store` (values: 128 per chunk)."""
    path = tmp_path / "codes.zarr"
    encode_store(make_jumprelu(32, 64), ActivationStore(dense_store), 0, zarr.open_group(str(path), mode="w"),
                 heldout_docs=np.zeros(4, bool), batch_size=16, chunk_tokens=4)
    return path


def test_every_array_written_ends_with_a_crc32c_checksum(dense_store, code_store):
    for path in (dense_store, code_store):
        group = zarr.open_group(str(path), mode="r")
        for name, array in group.arrays():
            codecs = [c.to_dict()["name"] for c in array.metadata.codecs]
            assert codecs == ["bytes", "blosc", "crc32c"], (path, name, codecs)


def test_truncated_activation_chunk_names_store_and_chunk(dense_store):
    truncate(dense_store / "layer_0" / "c" / "2" / "0")
    store = ActivationStore(dense_store)
    assert store.rows(0, 0, 2 * CHUNK).shape == (2 * CHUNK, 32)  # the chunks before it still read
    with pytest.raises(CacheError) as err:
        store.rows(0, 0, N_ROWS)
    message = assert_names(err, dense_store, "layer_0/c/2/0", "checksum")
    assert "c/1/0" not in message and "c/3/0" not in message


@pytest.mark.parametrize("where", ["layer_0/c/3/0", "special/c/0"])
def test_one_altered_byte_fails_the_checksum(dense_store, where):
    flip_middle_byte(dense_store / where)  # same size: only the checksum can tell
    store = ActivationStore(dense_store)
    with pytest.raises(CacheError) as err:
        store.rows(0, 0, N_ROWS) if where.startswith("layer") else store.special(0, N_ROWS)
    assert_names(err, dense_store, where, "ValueError: Stored and computed checksum do not match")


def test_damaged_code_chunks_are_all_named(code_store):
    values = zarr.open_array(str(code_store / "values"), mode="r")
    assert values.nchunks >= 3
    truncate(code_store / "values" / "c" / "0")
    flip_middle_byte(code_store / "values" / "c" / "2")
    store = CodeStore(code_store)
    with pytest.raises(CacheError) as err:
        store.rows(0, store.n_tokens)
    message = assert_names(err, code_store, "values/c/0, values/c/2")
    assert "values/c/1" not in message


@pytest.mark.parametrize("meta", ["zarr.json", "offsets/zarr.json", "layer_0/zarr.json"])
def test_truncated_zarr_metadata_is_named(dense_store, meta):
    truncate(dense_store / meta)
    with pytest.raises(CacheError) as err:
        ActivationStore(dense_store).rows(0, 0, N_ROWS)
    assert_names(err, dense_store, f"({meta}: JSONDecodeError")


def test_truncated_pooled_npz(tmp_path):
    path = tmp_path / "mean__none.npz"
    save_pooled(path, sp.random(20, 50, density=0.2, format="csr", random_state=0, dtype=np.float32))
    truncate(path)
    with pytest.raises(CacheError) as err:
        load_pooled(path)
    assert_names(err, path, "BadZipFile")


def test_altered_pooled_npz_fails_its_zip_crc(tmp_path):
    path = tmp_path / "mean__none.npz"
    save_pooled(path, np.random.default_rng(0).normal(size=(50, 40)).astype(np.float32))
    flip_middle_byte(path)  # inside X's data: np.savez stores without compression
    with pytest.raises(CacheError) as err:
        load_pooled(path)
    assert_names(err, path, "BadZipFile: Bad CRC-32")


def test_truncated_coef_npz(tmp_path):
    path = tmp_path / "mean__none.coef.npz"
    save_coef(path, np.ones((3, 20)), np.zeros(3), ["a", "b", "c"])
    coef, intercept, names = load_coef(path)
    assert coef.shape == (3, 20) and names == ["a", "b", "c"]
    truncate(path)
    with pytest.raises(CacheError) as err:
        load_coef(path)
    assert_names(err, path, "BadZipFile")


def test_truncated_probe_json(tmp_path):
    path = tmp_path / "mean__none.json"
    write_json(path, {"C": 1.0, "test": {"macro_f1": 0.5}})
    truncate(path)
    with pytest.raises(CacheError) as err:
        read_json(path)
    assert_names(err, path, "JSONDecodeError")


@pytest.fixture
def sae_folder(tmp_path) -> Path:
    folder = tmp_path / "layer_0"
    make_jumprelu(32, 64).save_model(folder)
    return folder


@pytest.mark.parametrize("file", ["sae_weights.safetensors", "cfg.json"])
def test_truncated_trained_sae_names_the_file_and_reruns_the_folder(sae_folder, file):
    truncate(sae_folder / file)
    with pytest.raises(CacheError) as err:
        load_sae({"train": {}}, 0, "cpu", "mine", trained_dir=sae_folder)
    assert_names(err, sae_folder / file, "SafetensorError" if file.endswith("safetensors") else "JSONDecodeError",
                 rebuild=sae_folder)


def test_truncated_user_sae_is_named_but_not_rebuilt(sae_folder):
    truncate(sae_folder / "sae_weights.safetensors")
    with pytest.raises(CacheError) as err:
        load_sae({"path": str(sae_folder)}, 0, "cpu", "mine")
    message = str(err.value)
    assert message.startswith(f"{sae_folder / 'sae_weights.safetensors'}: damaged or incomplete file (SafetensorError")
    assert "restore or replace it" in message and "--forcerun" not in message


def test_truncated_prepared_and_tokens_parquet(tmp_path):
    prepared, tokens = tmp_path / "data.parquet", tmp_path / "tokens.parquet"
    frame = pl.DataFrame({"doc_id": list(range(200)), "text": ["a document"] * 200, "label": [0, 1] * 100,
                          "split": ["train"] * 200})
    data.write(frame, ["neg", "pos"], prepared)
    pl.DataFrame({"doc_id": list(range(200)), "input_ids": [[1, 2, 3]] * 200}).write_parquet(tokens)
    for path in (prepared, tokens):
        truncate(path)
    with pytest.raises(CacheError) as err:
        data.read(prepared)
    assert_names(err, prepared, "ArrowInvalid")
    with pytest.raises(CacheError) as err:
        read_token_ids(tokens, [0, 1])
    assert_names(err, tokens)


def test_truncated_transfer_cell_and_table_parquet(tmp_path):
    from saeprobe.io import read_parquet
    from saeprobe.cell_tables import frame, read_report, write_parquet
    from saeprobe.transfer_tables import TRANSFER_SCHEMA, transfer_table

    cell = {"model": "m", "dataset": "d", "source": "hidden", "family": "hidden", "layer": 0, "pooling": "mean",
            "binarize": "raw"}
    rows = [{"train_lang": a, "test_lang": b, "macro_f1": 0.5, "accuracy": 0.5, "n_train": 10, "n_test": 5, "C": 1.0,
             "cv_macro_f1": 0.5, "test_missing_classes": 0} for a in "xy" for b in "xy"]
    path = tmp_path / "mean__raw.parquet"
    write_parquet(frame(rows, cell, TRANSFER_SCHEMA), path, {"languages": ["x", "y"]})
    assert transfer_table([path]).height == 4 and read_report(path)["languages"] == ["x", "y"]
    truncate(path)
    for read in (lambda: transfer_table([path]), lambda: read_report(path), lambda: read_parquet(path)):
        with pytest.raises(CacheError) as err:
            read()
        assert_names(err, path)


# --------------------------------------------------------------------------- the hint reproduces the run (issue 21 T15)


def test_rebuild_hint_carries_the_run_options(tmp_path, monkeypatch):
    from saeprobe.io import RUN_OPTIONS_ENV, damaged, rebuild_command, run_options

    monkeypatch.delenv(RUN_OPTIONS_ENV, raising=False)
    assert rebuild_command("results/x.npz") == "snakemake --forcerun results/x.npz"  # outside a run: nothing to add
    options = run_options(configfiles=[tmp_path / "my run.yaml"], config_args=["seed=1"], directory=tmp_path)
    assert options == f"--directory {tmp_path} --configfile '{tmp_path / 'my run.yaml'}' --config seed=1"
    monkeypatch.setenv(RUN_OPTIONS_ENV, options)
    message = str(damaged(tmp_path / "x.npz", ValueError("bad"), rebuild="results/x.npz"))
    assert f"rebuild it with: snakemake --forcerun results/x.npz {options}  (or delete it" in message


@pytest.mark.workflow
def test_damaged_cache_under_a_configfile_run_prints_that_configfile(tmp_path):
    """`snakemake --forcerun <path>` typed without the run's --configfile loads the default config: the hint a job
    prints names the --configfile (and --directory, --snakefile) the run was started with."""
    from saeprobe import layout
    from tests.helpers import STORIES, alternating_frame, snakemake, write_config

    workdir = tmp_path / "run"
    workdir.mkdir()
    alternating_frame(20).write_parquet(workdir / "d.parquet")
    configfile = write_config(tmp_path, {"device": "cpu", "datasets": {"d": {"path": "d.parquet", "split_column": None}},
                                         "models": {"stories": {"path": str(STORIES), "layers": [1]}}}, "my run.yaml")
    prepared = workdir / layout.path(layout.DATA, dataset="d")  # newer than its source: prepare_dataset does not rerun
    prepared.parent.mkdir(parents=True)
    prepared.write_bytes(b"PAR1 not a parquet file")
    tokens = layout.path(layout.TOKENS, model="stories", dataset="d")
    proc = snakemake(workdir, tokens, configfile=configfile, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"saeprobe: {layout.path(layout.DATA, dataset='d')}: damaged or incomplete cached file" in out, out[-3000:]
    hint = f"--forcerun {layout.path(layout.DATA, dataset='d')} "
    assert hint in out
    options = out.split(hint, 1)[1].split("  (or delete")[0]
    assert f"--configfile '{configfile}'" in options and f"--directory {workdir}" in options
    assert "--snakefile " in options

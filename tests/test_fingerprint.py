"""Weights are inputs: folder/package/hub fingerprints, their cache, and the reruns they trigger."""

from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from saeprobe import fingerprint as fp
from tests.helpers import jailbreak_slice, planned, snakemake, write_config

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Default caches (.snakemake/saeprobe/ under the working directory) land in the test's folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_racy_window(monkeypatch):
    """Cache files written a moment ago (the tests' files) as if they were old."""
    monkeypatch.setattr(fp, "RACY_NS", 0)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / "config.json").write_text('{"hidden_size": 32}')
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def rewrite_same_size(path: Path) -> None:
    """New bytes, same size, same inode, old mtime restored: only the ctime tells."""
    st = path.stat()
    data = path.read_bytes()
    with path.open("r+b") as fh:
        fh.seek(len(data) - 16)
        fh.write(bytes(255 - b for b in data[-16:]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def count_hashes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = fp._hash_file
    monkeypatch.setattr(fp, "_hash_file", lambda path: calls.append(path) or real(path))
    return calls


# --------------------------------------------------------------------------- folders


def test_folder_fingerprint_follows_the_bytes(model_dir, tmp_path, no_racy_window):
    cache = tmp_path / "cache.json"
    first = fp.folder_fingerprint(model_dir, cache)
    assert first.startswith("sha256:") and fp.folder_fingerprint(model_dir, cache) == first
    # Hidden and cache folders are not weights.
    for junk in (".git/HEAD", ".cache/huggingface/x.lock", "__pycache__/m.pyc", ".DS_Store"):
        (model_dir / junk).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / junk).write_text("noise")
    assert fp.folder_fingerprint(model_dir, cache) == first

    rewrite_same_size(model_dir / "model.safetensors")
    changed = fp.folder_fingerprint(model_dir, cache)
    assert changed != first
    # A renamed or added file changes it too; the same bytes under the old names give it back.
    (model_dir / "sub" / "tokenizer.json").rename(model_dir / "sub" / "tok.json")
    assert fp.folder_fingerprint(model_dir, cache) not in (first, changed)
    (model_dir / "sub" / "tok.json").rename(model_dir / "sub" / "tokenizer.json")
    assert fp.folder_fingerprint(model_dir, cache) == changed


def test_cache_spares_the_reads_until_a_file_changes(model_dir, tmp_path, monkeypatch, no_racy_window):
    cache = tmp_path / "cache.json"
    calls = count_hashes(monkeypatch)
    first = fp.folder_fingerprint(model_dir, cache)
    assert len(calls) == 3
    assert fp.folder_fingerprint(model_dir, cache) == first and len(calls) == 3
    fp._LOADED.clear()  # a new process: read back from the file
    assert fp.folder_fingerprint(model_dir, cache) == first and len(calls) == 3
    entries = json.loads(cache.read_text())["files"]
    assert set(entries) == {os.path.abspath(p) for p in model_dir.rglob("*") if p.is_file()}

    rewrite_same_size(model_dir / "model.safetensors")
    assert fp.folder_fingerprint(model_dir, cache) != first
    assert calls[3:] == [str(model_dir / "model.safetensors")]
    # A deleted file's entry is dropped.
    (model_dir / "config.json").unlink()
    fp.folder_fingerprint(model_dir, cache)
    assert os.path.abspath(model_dir / "config.json") not in json.loads(cache.read_text())["files"]


def test_just_written_files_are_not_cached(model_dir, tmp_path, monkeypatch):
    # Written within the timestamp granularity, a second rewrite could keep every stat field.
    calls = count_hashes(monkeypatch)
    fp.folder_fingerprint(model_dir, tmp_path / "cache.json")
    fp.folder_fingerprint(model_dir, tmp_path / "cache.json")
    assert len(calls) == 6


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "files": {"x": [1]}}', '[1, 2]', ""])
def test_corrupt_cache_is_ignored_and_rewritten(model_dir, tmp_path, content, no_racy_window):
    reference = fp.folder_fingerprint(model_dir, tmp_path / "good.json")
    cache = tmp_path / "bad.json"
    cache.write_text(content)
    assert fp.folder_fingerprint(model_dir, cache) == reference
    assert len(json.loads(cache.read_text())["files"]) == 3


def test_unwritable_cache_is_skipped(model_dir, tmp_path, no_racy_window):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert fp.folder_fingerprint(model_dir, blocker / "cache.json") == fp.folder_fingerprint(model_dir, tmp_path / "c.json")


def _hammer(args):
    folder, cache, rounds = args
    fp.RACY_NS = 0
    for i in range(rounds):
        (Path(folder) / "w.bin").write_bytes(i.to_bytes(4, "little"))
        fp.folder_fingerprint(folder, cache)


def test_racing_writers_never_corrupt_the_cache(tmp_path):
    cache = tmp_path / "cache.json"
    folders = []
    for n in range(4):
        folders.append(tmp_path / f"m{n}")
        folders[-1].mkdir()
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_hammer, [(str(f), str(cache), 25) for f in folders])
    entries = json.loads(cache.read_text())["files"]  # valid JSON: replaced whole, never half-written
    assert entries and set(entries) <= {os.path.abspath(f / "w.bin") for f in folders}
    assert not list(tmp_path.glob("*.tmp"))


def test_mistakes_give_a_marker_not_a_traceback(tmp_path):
    missing = tmp_path / "nope"
    assert fp.folder_fingerprint(missing, tmp_path / "c.json") == f"missing:{missing}"
    assert fp.model_fingerprint({"path": str(missing)}) == f"missing:{missing}"
    assert fp.model_fingerprint({"package": "no_such_package_xyz"}) == "not-installed:no_such_package_xyz"
    assert fp.sae_fingerprint({"path": str(missing / "layer_{layer}")}, 3) == f"missing:{missing}/layer_3"
    assert fp.sae_fingerprint({"path": str(missing / "{nope}")}, 3).startswith("bad-path:")


def test_workflow_built_weights_are_not_fingerprinted():
    assert fp.model_fingerprint({"random": {"preset": "tiny-gemma2"}}) is None
    assert fp.sae_fingerprint({"train": {"width": 64}}, 1) is None


def test_sae_path_fills_the_layer(tmp_path, no_racy_window):
    for layer in (1, 2):
        (tmp_path / f"layer_{layer}").mkdir()
        (tmp_path / f"layer_{layer}" / "sae_weights.safetensors").write_bytes(bytes([layer]) * 10)
    spec = {"path": str(tmp_path / "layer_{layer}")}
    assert fp.sae_fingerprint(spec, 1) == fp.folder_fingerprint(tmp_path / "layer_1")
    assert fp.sae_fingerprint(spec, 1) != fp.sae_fingerprint(spec, 2)


# --------------------------------------------------------------------------- packages


def fake_versions(monkeypatch, versions: dict[str, str]) -> None:
    real = importlib.metadata.version

    def version(dist):
        return versions[dist] if dist in versions else real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_package_fingerprint_has_version_and_folder(tmp_path, monkeypatch, no_racy_window):
    pkg = tmp_path / "site" / "fake_model_pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('fingerprinting must not import the package')\n")
    (pkg / "model" / "model.safetensors").write_bytes(b"\0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    fake_versions(monkeypatch, {"fake_model_pkg": "1.0"})
    v1 = fp.model_fingerprint({"package": "fake_model_pkg"})
    assert v1.startswith("fake_model_pkg 1.0, sha256:")
    assert (tmp_path / ".snakemake" / "saeprobe" / "fingerprints.json").exists()
    fake_versions(monkeypatch, {"fake_model_pkg": "2.0"})
    v2 = fp.model_fingerprint({"package": "fake_model_pkg"})
    assert v2 != v1 and v2.split(", ")[1] == v1.split(", ")[1]
    rewrite_same_size(pkg / "model" / "model.safetensors")
    assert fp.model_fingerprint({"package": "fake_model_pkg"}).split(", ")[1] != v1.split(", ")[1]


def test_package_named_unlike_its_distribution(tmp_path):
    # `yaml` is installed by the PyYAML distribution: found through packages_distributions().
    assert fp.package_fingerprint("yaml", tmp_path / "c.json").startswith(f"PyYAML {importlib.metadata.version('PyYAML')}, ")


# --------------------------------------------------------------------------- hub


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def set_ref(cache: Path, repo: str, ref: str, commit: str) -> None:
    path = cache / ("models--" + repo.replace("/", "--")) / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)


def test_hub_model_resolves_offline_from_the_cache(hub_cache):
    spec = {"hub": "org/name"}
    assert fp.model_fingerprint(spec) == "org/name@unresolved:main"
    set_ref(hub_cache, "org/name", "main", COMMIT_A)
    assert fp.model_fingerprint(spec) == f"org/name@{COMMIT_A}"
    set_ref(hub_cache, "org/name", "main", COMMIT_B)  # a newer download moved main
    assert fp.model_fingerprint(spec) == f"org/name@{COMMIT_B}"
    set_ref(hub_cache, "org/name", "v1", COMMIT_A)
    assert fp.model_fingerprint({**spec, "revision": "v1"}) == f"org/name@{COMMIT_A}"
    assert fp.model_fingerprint({**spec, "revision": "v2"}) == "org/name@unresolved:v2"
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert fp.model_fingerprint({**spec, "revision": commit}) == f"org/name@{commit}"


def test_hub_cache_from_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    set_ref(tmp_path / "hub", "org/name", "main", COMMIT_A)
    assert fp.hub_commit("org/name") == COMMIT_A


def test_hub_online_asks_the_hub_and_falls_back_to_the_cache(hub_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    asked = []

    class FakeApi:
        def repo_info(self, repo_id, revision=None, repo_type=None, timeout=None):
            asked.append((repo_id, revision))
            if repo_id == "org/down":
                raise OSError("no network")
            return type("Info", (), {"sha": COMMIT_B})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    fp._ask_hub.cache_clear()
    try:
        set_ref(hub_cache, "org/name", "main", COMMIT_A)
        assert fp.hub_commit("org/name") == COMMIT_B
        assert fp.hub_commit("org/name") == COMMIT_B and asked == [("org/name", "main")]  # once per process
        set_ref(hub_cache, "org/down", "main", COMMIT_A)
        assert fp.hub_commit("org/down") == COMMIT_A
    finally:
        fp._ask_hub.cache_clear()


def test_release_sae_has_sae_lens_version_and_repo_commit(hub_cache, monkeypatch):
    spec = {"release": "gemma-scope-2b-pt-res-canonical", "sae_id": "layer_{layer}/width_16k/canonical"}
    set_ref(hub_cache, "google/gemma-scope-2b-pt-res", "main", COMMIT_A)
    fake_versions(monkeypatch, {"sae-lens": "6.0.0"})
    assert fp.sae_fingerprint(spec, 12) == f"sae-lens 6.0.0, google/gemma-scope-2b-pt-res@{COMMIT_A}"
    fake_versions(monkeypatch, {"sae-lens": "6.1.0"})
    assert fp.sae_fingerprint(spec, 12) == f"sae-lens 6.1.0, google/gemma-scope-2b-pt-res@{COMMIT_A}"
    # A release SAELens does not list is loaded as a hub repo of that name.
    set_ref(hub_cache, "someone/my-saes", "main", COMMIT_B)
    assert fp.sae_fingerprint({"release": "someone/my-saes", "sae_id": "x"}, 0).endswith(f"someone/my-saes@{COMMIT_B}")


# --------------------------------------------------------------------------- through the workflow


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory, tiny_gemma2, jumprelu_dir):
    """A finished run on private copies of the tiny model and SAE (the session fixtures stay untouched)."""
    workdir = tmp_path_factory.mktemp("fingerprint_run")
    shutil.copytree(tiny_gemma2, workdir / "model")
    shutil.copytree(jumprelu_dir, workdir / "sae")
    jailbreak_slice(24, 12).write_parquet(workdir / "jailbreak_small.parquet")
    write_config(workdir, {
        "seed": 0,
        "device": "cpu",
        "datasets": {"jailbreak": {"path": str(workdir / "jailbreak_small.parquet")}},
        "models": {"tiny": {"path": str(workdir / "model"), "layers": [1], "max_length": 32}},
        "saes": {"jumprelu": {"model": "tiny", "path": str(workdir / "sae"), "layers": [1]}},
        "features": {"poolings": ["mean"], "binarize": [None], "hidden_states": False},
        "probe": {"Cs": [1.0], "cv_folds": 2},
        "tfidf": {"enabled": False},
    })
    snakemake(workdir)
    return workdir


@pytest.mark.workflow
def test_finished_run_plans_nothing(fp_run):
    assert planned(fp_run) == {}
    assert (fp_run / ".snakemake" / "saeprobe" / "fingerprints.json").exists()


# Everything drawn from the probe tables.
REPORT = {"fit_probe", "tables", "summary", "figures", "top_features", "report_tables", "sae_table", "all"}


@pytest.mark.workflow
def test_rewritten_model_weights_rerun_tokenize_and_below(fp_run):
    weights = fp_run / "model" / "model.safetensors"
    original, st = weights.read_bytes(), weights.stat()
    rewrite_same_size(weights)
    try:
        assert set(planned(fp_run)) == {"tokenize", "extract_activations", "encode_sae", "sae_quality", "pool"} | REPORT
    finally:  # the old bytes back (ctime moved again): the fingerprint is the content's, so nothing to do
        weights.write_bytes(original)
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert planned(fp_run) == {}


@pytest.mark.workflow
def test_rewritten_sae_weights_rerun_encode_sae_and_below(fp_run):
    weights = fp_run / "sae" / "sae_weights.safetensors"
    original, st = weights.read_bytes(), weights.stat()
    rewrite_same_size(weights)
    try:
        assert set(planned(fp_run)) == {"encode_sae", "sae_quality", "pool"} | REPORT
    finally:
        weights.write_bytes(original)
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert planned(fp_run) == {}

"""Faults and determinism, through the snakemake CLI on a tiny random Llama.

- A run from clean killed (SIGKILL to the whole snakemake process group) while the forward
  pass is writing its store, then `--unlock` and a rerun, gives the same bytes as an
  uninterrupted run from clean — every file under results/ but the logs and benchmarks (which
  hold timings): tables, probe results, pooled features, trained SAE, activation stores. Both
  runs start from clean, so this is also the two-runs-from-clean determinism check. The killed
  job left no output that Snakemake takes as complete (only its temporary, which the rerun
  removes).
- Atomic writes: a failed writer leaves nothing; every workflow script writes its outputs
  through the atomic writers.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from saeprobe.io import atomic_path
from tests.helpers import DATA, ROOT, planned, snakemake, snakemake_cmd, write_config

SKIP = ("logs", "benchmarks")


def outputs(workdir: Path) -> dict[str, bytes]:
    """Every file under results/ (logs and benchmarks excepted), by relative path."""
    res = workdir / "results"
    return {str(p.relative_to(res)): p.read_bytes() for p in sorted(res.rglob("*"))
            if p.is_file() and p.relative_to(res).parts[0] not in SKIP}


def assert_same_outputs(a: Path, b: Path) -> None:
    oa, ob = outputs(a), outputs(b)
    assert sorted(oa) == sorted(ob)
    differ = [k for k in oa if oa[k] != ob[k]]
    assert not differ, f"{len(differ)} of {len(oa)} files differ, e.g. {differ[:5]}"


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_llama) -> dict:
    # All of jailbreak_classification (1306 documents, ~41k tokens at max_length 32): a forward
    # pass long enough to be caught writing its store (it flushes a chunk every 16384 tokens),
    # the rest small. The SAE is trained by the workflow: SAE training is seeded too.
    return {
        "seed": 3,
        "device": "cpu",
        "datasets": {"jailbreak": {"path": str(DATA / "jailbreak_classification.parquet")}},
        "models": {"tiny": {"path": str(tiny_llama), "layers": [2], "max_length": 32, "token_budget": 512}},
        "saes": {"topk": {"model": "tiny", "train": {"width": 64, "k": 4, "training_tokens": 8192, "batch_size": 256}}},
        "features": {"poolings": ["mean"], "binarize": [None], "hidden_poolings": ["mean"]},
        "probe": {"Cs": [0.1, 1.0], "cv_folds": 2},
        "tfidf": {"enabled": False},  # deterministic, and compared by the SLURM check; skipped for time
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config) -> Path:
    workdir = tmp_path_factory.mktemp("reference")
    write_config(workdir, config)
    snakemake(workdir)
    return workdir


@pytest.mark.workflow
def test_run_killed_during_extraction_then_rerun_equals_a_clean_run_byte_for_byte(tmp_path, config, reference):
    """Also the determinism check: this run starts from clean too (and the killed forward pass
    is redone from scratch), so two runs from clean give the same bytes."""
    write_config(tmp_path, config)
    acts = tmp_path / "results" / "activations" / "tiny"
    final = acts / "jailbreak.zarr"
    cmd = snakemake_cmd(tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Wait until the forward pass has written part of its store (a chunk in the temporary), then
    # kill snakemake and its jobs at once: no handler runs, as on a node failure.
    partial = None
    deadline = time.monotonic() + 600
    while partial is None and time.monotonic() < deadline and proc.poll() is None and not final.exists():
        for tmp in acts.glob(".jailbreak.zarr.*.tmp") if acts.exists() else []:
            if any(p.is_file() for p in (tmp / "layer_2" / "c").rglob("*")):  # a chunk: c/<row>/<col>
                partial = tmp
                break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial is not None, "the extraction was not caught while writing (finished too fast?)"
    assert not final.exists()  # nothing that looks like a finished store
    assert partial.exists()  # the killed writer's temporary, as it was left

    snakemake(tmp_path, "--unlock")
    assert "extract_activations" in planned(tmp_path)  # Snakemake knows the store is missing
    snakemake(tmp_path)
    assert not partial.exists()  # the rerun removed what the killed writer left
    assert not [p for p in (tmp_path / "results").rglob("*.tmp")]
    assert_same_outputs(reference, tmp_path)
    grid = pl.read_parquet(tmp_path / "results" / "tables" / "grid.parquet")
    assert set(grid["family"]) == {"sae", "hidden"} and grid.height == 2


# --------------------------------------------------------------------------- atomic writes


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_removes_only_its_own_stale_temporaries(tmp_path):
    (tmp_path / ".out.json.abcd1234.tmp").mkdir()  # left by a killed writer of out.json
    (tmp_path / ".out.json.x.abcd1234.tmp").mkdir()  # another output's temporary
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.json.x.abcd1234.tmp", "out.json"]


# Writes that are not atomic by themselves: in a workflow script they must sit inside
# `with atomic_path(...)`; saeprobe's own writers (write_json, data.write, save_pooled,
# write_table, ...) are atomic and are tested where they are defined.
RAW_METHODS = {"write_parquet", "write_csv", "write_ndjson", "write_json", "write_text", "write_bytes", "savefig",
               "save_pretrained", "save_model", "save_inference_model", "to_parquet", "to_csv", "tofile"}
RAW_FUNCTIONS = {"save", "savez", "savez_compressed", "write_table", "dump", "copy", "copyfile", "copytree", "move"}


def _raw_writes(tree: ast.AST, saeprobe_names: set[str]) -> list[int]:
    """Line numbers of raw (non-atomic) writes outside ``with atomic_path(...)`` blocks."""
    found: list[int] = []

    def visit(node: ast.AST, protected: bool) -> None:
        if isinstance(node, ast.With | ast.AsyncWith):
            protected = protected or any(
                isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "") == "atomic_path"
                for item in node.items)
        if isinstance(node, ast.Call) and not protected:
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax"):
                    found.append(node.lineno)
            elif isinstance(func, ast.Attribute):
                receiver = func.value.id if isinstance(func.value, ast.Name) else None
                if receiver not in saeprobe_names and (func.attr in RAW_METHODS or func.attr in RAW_FUNCTIONS):
                    found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, protected)

    visit(tree, False)
    return found


def test_every_script_writes_its_outputs_atomically():
    """No workflow script writes a file except inside ``with atomic_path(...)`` or through
    saeprobe's atomic writers (names imported from saeprobe, e.g. write_json, data.write)."""
    scripts = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
    assert scripts
    problems = []
    for script in scripts:
        tree = ast.parse(script.read_text())
        saeprobe_names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                          and (node.module or "").startswith("saeprobe") for alias in node.names}
        problems += [f"{script.name}:{line}" for line in _raw_writes(tree, saeprobe_names)]
    assert not problems, f"files written outside atomic_path: {problems}"


def test_the_atomic_write_check_catches_a_raw_write():
    code = "import numpy as np\nnp.savez(snakemake.output[0], x=1)\nwith atomic_path(p) as t:\n    np.savez(t, x=1)\n"
    assert _raw_writes(ast.parse(code), set()) == [2]
    code = "from saeprobe import data\ndata.write(f, n, snakemake.output[0])\ndf.write_parquet(snakemake.output[1])\n"
    assert _raw_writes(ast.parse(code), {"data"}) == [3]

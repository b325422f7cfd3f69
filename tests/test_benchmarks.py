"""The benchmark harness runs and produces its table (not how fast anything is: no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.benchmark

TINY_GEMMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 512}


def bench(tmp_path, *args: str) -> tuple[str, dict]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path), "--name", "t", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (tmp_path / "t.md").read_text()
    assert table.strip() == proc.stdout.strip()  # what is printed is what is written
    return table, json.loads((tmp_path / "t.json").read_text())


def test_quick_run_prints_every_section(tmp_path):
    table, res = bench(tmp_path, "--device", "cpu", "--models", "stories260k")
    for heading in ("## Extraction: stories260k", "## SAE encoding: stories260k", "## Peak memory", "## Probe on wide sparse",
                    "## Workflow DAG", "## Targets"):
        assert heading in table, heading
    for variant in ("| saeprobe |", "| bare |", "| naive |"):
        assert variant in table
    ext = res["models"]["stories260k"]["extraction"]
    tokens = res["models"]["stories260k"]["tokens"]
    assert all(ext[v]["tokens"] == tokens and ext[v]["tokens_per_s"] > 0 for v in ("saeprobe", "bare", "naive"))
    assert ext["saeprobe"]["padded_tokens"] <= ext["naive"]["padded_tokens"]  # length-sorted batches pad less
    flops = res["models"]["stories260k"]["flops"]
    assert flops["ceiling_tokens_per_s"] == pytest.approx(flops["matmul_flops_per_s"] / (2 * flops["params_to_deepest_layer"]))
    enc = res["models"]["stories260k"]["encoding"]["topk-256"]
    assert enc["l0"] == pytest.approx(16)  # the config's k
    assert enc["dense_fp32_bytes_per_token"] == 4 * 256 and 0 < enc["code_bytes_per_token"] < 4 * 256
    assert "## Writer throughput" in table and "H200 forward, estimated" in table
    assert res["writer"]["writer_gb_per_s"] > 0 and res["writer"]["h200_gb_per_s"] == pytest.approx(
        0.5 * 989e12 / (2 * 2.6e9) * 3 * 2304 * 2 / 1e9)
    work = enc["decode_work"]
    assert work["after"]["decodes_per_chunk"] == work["after_legacy"]["decodes_per_chunk"] == 1.0
    assert work["before"]["decodes_per_chunk"] >= 1.0 and work["before"]["chunk_rows"] == 16384
    assert 0.5 < enc["bf16"]["jaccard"] <= 1.0 and enc["bf16"]["rel_error"] < 0.5
    assert "## Encoding decode work and bf16 agreement: stories260k" in table
    assert {r["stage"] for r in res["memory"]["runs"]} == {"forward", "extract", "encode"}
    assert [r["tokens"] for r in res["memory"]["runs"] if r["stage"] == "extract"][1] == \
        8 * [r["tokens"] for r in res["memory"]["runs"] if r["stage"] == "extract"][0]
    assert res["probe"]["solver"] == "newton-cg" and res["dag"]["jobs"] > 50


def test_gemma_cuda_path_runs_shrunk_on_cpu(tmp_path):
    # The --device cuda path (random Gemma 2 architecture, JumpReLU SAEs calibrated to an L0,
    # bf16, profiler tables), on a shrunk config on the CPU.
    table, res = bench(tmp_path, "--device", "cpu", "--setup", "gemma", "--overrides", json.dumps(TINY_GEMMA),
                       "--layers", "1,2", "--sae-widths", "128,256", "--sae-l0", "8", "--max-length", "64",
                       "--dtype", "bfloat16", "--sections", "extraction,encoding", "--profile")
    model = res["models"]["gemma-2-2b-random"]
    assert model["compute_dtype"] == "bfloat16" and model["layers"] == [1, 2]
    assert set(model["encoding"]) == {"jumprelu-128", "jumprelu-256"}
    assert all(2 <= e["l0"] <= 32 for e in model["encoding"].values())  # calibrated near the asked L0
    assert "torch.profiler: extraction" in table and "torch.profiler: encode_store" in table
    assert model["flops"]["params_to_deepest_layer"] > 0


def test_startup_reports_each_script_and_its_jobs(tmp_path):
    # benchmarks/startup.py: a script's module-level imports in a fresh interpreter, against a baseline
    # checkout (here this one), times the jobs a dry run plans.
    from tests.helpers import TEST_CONFIGS, config_workdir, planned

    out = tmp_path / "startup.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--scripts", "pool,sae_table", "--repeats", "1",
           "--no-reference", "--baseline", str(ROOT), "--config", str(TEST_CONFIGS / "minimal.yaml"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert list(res["rows"]) == ["pool", "sae_table"]
    assert {v: r["heavy"] for v, r in res["rows"]["pool"].items()} == {"this": ["zarr"], "baseline": ["zarr"]}
    jobs = planned(config_workdir(tmp_path), configfile=TEST_CONFIGS / "minimal.yaml")
    assert res["job_counts"] == jobs
    assert "| pool | zarr |" in proc.stdout and f"| {jobs['pool']} |" in proc.stdout

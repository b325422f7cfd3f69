"""benchmarks/gpu_smoke.py runs its checks (shrunk, on the CPU) and its checks can fail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT

pytestmark = pytest.mark.benchmark
SMOKE = ROOT / "benchmarks" / "gpu_smoke.py"


def smoke(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, str(SMOKE), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=900)
    return proc, json.loads(out.read_text())


def test_checks_pass_shrunk_on_the_cpu(tmp_path):
    proc, res = smoke(tmp_path, "--device", "cpu", "--tiny", "--checks", "cuda_torch,hooks,padding,extraction,jumprelu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert res["cuda_torch"]["status"] == "SKIP"
    for name in ("hooks", "padding", "extraction", "jumprelu"):
        assert res[name]["status"] == "PASS", (name, res[name])
    assert set(res["hooks"]["max_rel_error"]) == {"0", "1"}
    ext = res["extraction"]
    assert ext["tokens"] > 0 and ext["tokens_per_s"] > 0 and ext["bare_tokens_per_s"] > 0 and 0 < ext["mfu"] < 1
    assert res["jumprelu"]["w1024"]["jaccard"] == 1.0 and 30 < res["jumprelu"]["w1024"]["l0"] < 130
    assert "| hooks | PASS |" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_the_first_check_fails_and_says_why(tmp_path):
    proc, res = smoke(tmp_path, "--device", "cuda", "--checks", "cuda_torch")
    assert proc.returncode == 1
    assert res["cuda_torch"]["status"] == "FAIL"
    assert "CPU-only build" in res["cuda_torch"]["why"] or "no CUDA device" in res["cuda_torch"]["why"]


def test_the_hook_check_fails_on_the_wrong_hook_point():
    """The last block's hidden_states[L+1] is after the final norm: comparing there must fail."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_smoke

    device = torch.device("cpu")
    size = {**gpu_smoke.TINY, "layers": [gpu_smoke.TINY["overrides"]["num_hidden_layers"] - 1]}
    ctx = {"size": size, "dtype": torch.float32, "model": gpu_smoke.random_gemma(device, torch.float32, size["overrides"])}
    assert gpu_smoke.check_hooks(device, ctx)["status"] == "FAIL"
    assert gpu_smoke.check_hooks(device, {**ctx, "size": gpu_smoke.TINY})["status"] == "PASS"

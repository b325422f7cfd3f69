"""Job sizes from the model's size (saeprobe.sizing): parameters from configs alone, host memory that
covers what a job holds, and the GPU rules' resources in the paper's DAG."""

import re
import subprocess
import sys

import pytest
import torch

from saeprobe import randinit, sizing
from tests.conftest import ROOT
from tests.helpers import STORIES

GEMMA_2B = {"hub": "google/gemma-2-2b", "dtype": "bfloat16"}
GEMMA_9B = {"hub": "google/gemma-2-9b", "dtype": "bfloat16"}


def test_gemma_parameter_counts_from_their_configs_alone():
    """Gemma Team 2024, Table 1: 2.6B and 9.2B parameters (embeddings included, tied to the LM head)."""
    n2 = sizing.model_parameters(GEMMA_2B, "g2")
    n9 = sizing.model_parameters(GEMMA_9B, "g9")
    assert 2.6e9 < n2 < 2.62e9 and 9.2e9 < n9 < 9.25e9
    # The causal LM's head is tied to the embedding: no extra parameters.
    assert sizing.model_parameters(GEMMA_9B, "g9", "causal_lm") == n9
    assert sizing.model_parameters({"hub": "google/gemma-2-9b-it", "dtype": "bfloat16"}, "it", "causal_lm") == n9
    # The random gemma-2-2b preset is built from the same shipped architecture.
    assert sizing.parameter_count(randinit.gemma_2_2b_config()) == n2


def test_gemma_memory_covers_the_weights_a_job_holds():
    for spec, billions in ((GEMMA_2B, 2.61), (GEMMA_9B, 9.24)):
        weights_mb = billions * 1e9 * 2 / 2**20  # bfloat16
        gpu = sizing.model_mem_mb(spec, "g", "cuda")
        cpu = sizing.model_mem_mb(spec, "g", "cpu")
        assert gpu >= sizing.BASE_MB + weights_mb * 0.99  # weights pass through the host once, tensor by tensor
        assert cpu >= sizing.BASE_MB + 2 * weights_mb * 0.99  # the model lives there, plus a converted copy
    # 9B in bfloat16 (18.5 GB) is more than the 8000 MB the rules used to ask for.
    assert sizing.model_mem_mb(GEMMA_9B, "g", "cuda") > 18_500e6 / 2**20 > 8000
    # Larger models get more time; the CPU more than a GPU.
    assert sizing.model_runtime_min(GEMMA_9B, "g", "cuda") > sizing.model_runtime_min(GEMMA_2B, "g", "cuda")
    assert sizing.model_runtime_min(GEMMA_2B, "g", "cpu") > sizing.model_runtime_min(GEMMA_2B, "g", "cuda")


def test_auto_dtype_is_sized_as_float32_on_the_cpu():
    spec = {"path": str(STORIES), "dtype": "auto"}
    n = sizing.model_parameters(spec, "s")
    assert sizing.model_mem_mb(spec, "s", "cpu") == pytest.approx(sizing.BASE_MB + 2 * n * 4 / 2**20, abs=1)
    assert sizing.model_mem_mb(spec, "s", "cuda") == pytest.approx(sizing.BASE_MB + n * 2 / 2**20, abs=1)


def test_random_models_are_sized_from_their_preset_and_unknown_models_fall_back():
    n = sizing.model_parameters({"random": {"preset": "tiny-paligemma"}}, "pg", "vision")
    with torch.device("meta"):
        assert n == sum(p.numel() for p in randinit.build("tiny-paligemma").parameters())
    unknown = {"hub": "nobody/not-cached-anywhere", "dtype": "bfloat16"}
    assert sizing.model_parameters(unknown, "u") is None
    assert sizing.model_mem_mb(unknown, "u", "cuda") == sizing.FALLBACK_MB


def test_sae_jobs_are_sized_from_the_sae():
    assert sizing.sae_width({"release": "r", "sae_id": "layer_5/width_131k/canonical"}) == 131072
    assert sizing.sae_width({"release": "r", "sae_id": "layer_5/width_65k/canonical"}) == 65536
    assert sizing.sae_width({"release": "r", "sae_id": "layer_5/width_16k/average_l0_71"}) == 16384
    assert sizing.sae_width({"release": "r", "sae_id": "layer_5/width_1m/canonical"}) == 1 << 20
    assert sizing.sae_width({"train": {"width": [1024, 4096]}}) == 4096
    train = {"train": {"width": 65536, "max_buffer_tokens": 300_000}}
    buffer_mb = 300_000 * 2304 * 4 / 2**20
    weights_mb = 2 * 2304 * 65536 * 4 / 2**20
    assert sizing.sae_mem_mb(train, 2304, "cuda", train=True) == pytest.approx(sizing.BASE_MB + buffer_mb, abs=1)
    assert sizing.sae_mem_mb(train, 2304, "cpu", train=True) == pytest.approx(
        sizing.BASE_MB + buffer_mb + 4 * weights_mb, abs=1)
    assert sizing.sae_mem_mb(train, 2304, "cpu") == pytest.approx(sizing.BASE_MB + weights_mb, abs=1)


def test_measured_host_memory_of_a_cpu_load_is_within_the_estimate(tmp_path):
    """Load a random 0.1B-parameter Gemma 2 on the CPU in a fresh process: the resident memory it
    adds stays under what sizing asks for beyond BASE_MB (2 x the weights)."""
    cfg = randinit.gemma_2_2b_config(num_hidden_layers=2, vocab_size=32000)
    folder = tmp_path / "g"
    randinit.save(randinit.PRESETS["gemma-2-2b"]({"num_hidden_layers": 2, "vocab_size": 32000}), folder)
    spec = {"path": str(folder), "dtype": "bfloat16"}
    code = f"""
import resource, torch
from saeprobe.models import load_pretrained
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = load_pretrained({spec!r}, "g", "base", torch.device("cpu"), torch.bfloat16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    grown_mb = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                  cwd=ROOT).stdout.split()[-1]) / 1024
    estimate_mb = sizing.model_mem_mb(spec, "g", "cpu") - sizing.BASE_MB
    weights_mb = sizing.parameter_count(cfg) * 2 / 2**20
    assert weights_mb * 0.9 < estimate_mb and grown_mb < estimate_mb, (grown_mb, estimate_mb, weights_mb)


def test_the_paper_dag_sizes_its_gpu_jobs_from_the_models(tmp_path):
    """`snakemake -n` on config/paper.yaml (offline: the shipped architectures): every GPU rule asks
    for a GPU, and each 9B job for more host memory than its bfloat16 weights."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/paper.yaml"], cwd=ROOT,
                         capture_output=True, text=True, check=True, env={**__import__("os").environ,
                                                                         "HF_HUB_OFFLINE": "1"}).stdout
    by_rule: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if rule and resources:
            res = dict(kv.split("=", 1) for kv in resources.group(1).split(", "))
            by_rule.setdefault(rule.group(1), []).append((wildcards.group(1) if wildcards else "", res))
    for rule in ("extract_activations", "score_behaviour", "encode_sae", "extract_image_activations"):
        assert by_rule.get(rule) and all(res["gpu"] == "1" for _, res in by_rule[rule]), rule
    nine = [int(res["mem_mb"]) for w, res in by_rule["extract_activations"] if w.startswith("model=gemma-2-9b")]
    assert nine and min(nine) > 9.24e9 * 2 / 2**20 + sizing.BASE_MB - 1
    two = [int(res["mem_mb"]) for w, res in by_rule["extract_activations"] if w.startswith("model=gemma-2-2b")]
    assert two and max(two) < min(nine)
    assert {res["mem_mb"] for _, res in by_rule["score_behaviour"]} == {str(max(nine))}  # Gemma 2 9B-IT scores

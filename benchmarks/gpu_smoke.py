"""GPU smoke test: does saeprobe run right, and fast, on this GPU? Offline, at most 5 minutes on an H200.

    python benchmarks/gpu_smoke.py                  # on the GPU node, in the CUDA environment (README)
    python benchmarks/gpu_smoke.py --device cpu --tiny   # the same checks, shrunk, on a CPU (tests)

Checks, in order (each prints PASS / FAIL / SKIP with its numbers; the exit status is 1 if any fails):

1. ``cuda_torch``: torch is a CUDA build and sees a GPU; the GPU's name, compute capability and
   whether bfloat16 is native (what ``dtype: auto`` picks).
2. ``hooks``: on a random Gemma 2 2B (the exact architecture, bfloat16, eager attention for the
   logit soft-capping), saeprobe's hooks at layers 5/12/19 (``blocks.L.hook_resid_post``) equal
   ``hidden_states[L+1]`` of a full forward pass.
3. ``padding``: a document alone gives the same activations as the same document right-padded
   in a batch with a longer one (attention masking is right on this device and kernel).
4. ``extraction``: saeprobe's extraction (``saeprobe.activations.extract`` into a Zarr store, the
   workflow's token budget) against a bare forward pass of the same batches: tokens/s of both,
   the writer thread's busy time, the CUDA peak memory and the host peak, and the MFU of each
   against the measured bfloat16 matmul rate (the goal: ≥ 0.55 of it).
5. ``jumprelu``: codes of random JumpReLU SAEs of Gemma Scope's widths (16k and 131k latents,
   d_in 2304), encoded on the device, equal a float32 CPU reference (active sets and values).
6. ``workflow``: every GPU rule of ``.test/config/full.yaml`` (extract_activations,
   extract_image_activations, train_sae, encode_sae, score_behaviour) runs with ``device: cuda``
   (``snakemake --until``, in a temporary directory); needs ``../shared/models/stories260K`` (the
   tiny models' tokenizer) and ``../shared/data/copa.parquet`` beside the repository.

Results are printed as a markdown table and written to ``--out`` (``benchmarks/results/gpu_smoke.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(1, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

GPU_RULES = ("extract_activations", "extract_image_activations", "train_sae", "encode_sae", "score_behaviour")
FULL = {"layers": [5, 12, 19], "overrides": {}, "docs": 1200, "max_len": 1024, "widths": [16384, 131072],
        "ref_vectors": 1024, "token_budget": 16384}
TINY = {"layers": [0, 1], "overrides": {"num_hidden_layers": 3, "hidden_size": 64, "intermediate_size": 128,
                                        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                                        "vocab_size": 512},
        "docs": 48, "max_len": 64, "widths": [256, 1024], "ref_vectors": 256, "token_budget": 1024}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_gemma(device: torch.device, dtype: torch.dtype, overrides: dict[str, Any]) -> torch.nn.Module:
    """Random Gemma 2 2B (or a shrunk one) built directly on ``device``: no host copy of the weights."""
    from saeprobe import randinit

    with torch.device(device):
        model = randinit.build("gemma-2-2b", {"attn_implementation": "eager", **overrides}, seed=0)
    return model.model.to(dtype).eval()  # the base model, as the workflow's AutoModel loads it


def random_docs(n: int, max_len: int, vocab: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` documents of random token ids, lengths uniform in [max_len/8, max_len], BOS first."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(2, max_len // 8), max_len + 1, size=n)
    ids = [np.concatenate([[2], rng.integers(3, vocab, size=k - 1)]).astype(np.int64) for k in lengths]
    special = [np.arange(k) == 0 for k in lengths]
    return ids, special


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| relative to the largest |b|."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


# --------------------------------------------------------------------------- checks


def check_cuda(device: torch.device, ctx: dict[str, Any]) -> dict[str, Any]:
    from saeprobe.models import native_bf16

    if device.type != "cuda":
        return {"status": "SKIP", "why": f"device {device}: not a CUDA run", "torch": torch.__version__}
    ok = torch.version.cuda is not None and torch.cuda.is_available()
    out = {"status": "PASS" if ok else "FAIL", "torch": torch.__version__, "cuda": torch.version.cuda}
    if ok:
        out.update(gpu=torch.cuda.get_device_name(device), capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                   native_bf16=native_bf16(device), memory_gb=round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1))
    return out


def check_hooks(device: torch.device, ctx: dict[str, Any]) -> dict[str, Any]:
    from saeprobe.activations import LayerCapture

    model, layers = ctx["model"], ctx["size"]["layers"]
    ids, _ = random_docs(4, 128, model.config.vocab_size, seed=1)
    x = torch.from_numpy(np.stack([d[:32] for d in ids])).to(device)
    mask = torch.ones_like(x)
    with torch.inference_mode():
        hidden = model(input_ids=x, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
        capture = LayerCapture(model, layers)
        try:
            got = capture.run(model, x, mask)
        finally:
            capture.remove()
        errors = {layer: close(got[layer], hidden[layer + 1]) for layer in layers}
    return {"status": "PASS" if max(errors.values()) == 0.0 else "FAIL", "max_rel_error": errors}


def check_padding(device: torch.device, ctx: dict[str, Any]) -> dict[str, Any]:
    from saeprobe.activations import LayerCapture

    model, layers = ctx["model"], ctx["size"]["layers"]
    rng = np.random.default_rng(2)
    short, long = (rng.integers(3, model.config.vocab_size, size=k) for k in (40, 96))
    alone = torch.from_numpy(short[None]).to(device)
    batch = torch.zeros((2, len(long)), dtype=torch.long, device=device)
    batch[0, : len(short)], batch[1] = torch.from_numpy(short), torch.from_numpy(long)
    mask = torch.zeros_like(batch)
    mask[0, : len(short)], mask[1] = 1, 1
    with torch.inference_mode():
        capture = LayerCapture(model, layers)
        try:
            one = {k: v.clone() for k, v in capture.run(model, alone, torch.ones_like(alone)).items()}
            both = capture.run(model, batch, mask)
        finally:
            capture.remove()
        errors = {layer: close(both[layer][0, : len(short)], one[layer][0]) for layer in layers}
    # Different batch shapes take different kernels: bfloat16 rounding (8 bits of mantissa) bounds it.
    bound = 2e-2 if ctx["dtype"] == torch.bfloat16 else 1e-4
    return {"status": "PASS" if max(errors.values()) <= bound else "FAIL", "max_rel_error": errors, "bound": bound}


def check_extraction(device: torch.device, ctx: dict[str, Any]) -> dict[str, Any]:
    import zarr
    from extraction import matmul_flops, params_to_layer, saeprobe_batches

    from saeprobe.activations import LayerCapture, extract

    model, size = ctx["model"], ctx["size"]
    layers, budget = size["layers"], size["token_budget"]
    ids, special = random_docs(size["docs"], size["max_len"], model.config.vocab_size, seed=3)
    n_tokens = int(sum(len(d) for d in ids))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="saeprobe-smoke-") as tmp:
        sync(device)
        t0 = time.perf_counter()
        stats = extract(model, ids, special, zarr.open_group(str(Path(tmp) / "a.zarr"), mode="w"), layers,
                        token_budget=budget, store_dtype="float16")
        sync(device)
        wall = time.perf_counter() - t0
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    batches = [(x.to(device), m.to(device)) for x, m in saeprobe_batches(ids, budget)]
    capture = LayerCapture(model, layers)  # the bare pass stops at the deepest layer too, and writes nothing
    try:
        with torch.inference_mode():
            sync(device)
            t0 = time.perf_counter()
            for x, m in batches:
                capture.run(model, x, m.long())
            sync(device)
            bare = time.perf_counter() - t0
    finally:
        capture.remove()
    peak_flops = matmul_flops(device, ctx["dtype"])
    flops_per_token = 2.0 * params_to_layer(model, max(layers))
    out = {
        "tokens": n_tokens, "tokens_per_s": n_tokens / wall, "bare_tokens_per_s": n_tokens / bare,
        "vs_bare": bare / wall, "writer": stats.get("writer"), "wall_s": wall,
        "matmul_tflops": peak_flops / 1e12, "mfu": flops_per_token * n_tokens / wall / peak_flops,
        "bare_mfu": flops_per_token * n_tokens / bare / peak_flops,
        "cuda_peak_gb": cuda_peak, "host_peak_mb": host_peak_mb(),
    }
    # Judged on the real sizes only: a tiny model's pass is all fixed per-batch and store costs.
    out["status"] = "PASS" if out["vs_bare"] >= 0.85 or not ctx["judge"] else "FAIL"
    return out


def check_jumprelu(device: torch.device, ctx: dict[str, Any]) -> dict[str, Any]:
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d_in = int(ctx["model"].config.hidden_size)
    n = ctx["size"]["ref_vectors"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=gen)
    results: dict[str, Any] = {}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 on both sides: the reference's arithmetic
    try:
        for width in ctx["size"]["widths"]:
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=width, dtype="float32", device="cpu"))
            with torch.no_grad():
                sae.W_enc.copy_(torch.randn(d_in, width, generator=gen) / np.sqrt(d_in))
                sae.W_dec.copy_(sae.W_enc.T)
                # A threshold that keeps about 64 latents per token (Gemma Scope's typical L0).
                sae.threshold.fill_(float(torch.quantile((x[:64] @ sae.W_enc).flatten()[:1_000_000], 1 - 64 / width)))
            with torch.inference_mode():
                ref = sae.encode(x)
                sync(device)
                t0 = time.perf_counter()
                got = sae.to(device).encode(x.to(device)).cpu()
                sync(device)
                seconds = time.perf_counter() - t0
            a, b = ref != 0, got != 0
            jaccard = float((a & b).sum() / (a | b).sum().clamp_min(1))
            both = a & b
            rel = float(((got - ref).abs()[both] / ref.abs()[both]).max()) if both.any() else 0.0
            results[f"w{width}"] = {"l0": float(a.sum(1).float().mean()), "jaccard": jaccard, "max_rel_value_error": rel,
                                    "vectors_per_s": n / seconds}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    ok = all(r["jaccard"] >= 0.999 and r["max_rel_value_error"] <= 1e-4 for r in results.values())
    return {"status": "PASS" if ok else "FAIL", **results}


def check_workflow(device: torch.device, ctx: dict[str, Any]) -> dict[str, Any]:
    shared = ROOT.parent / "shared"
    need = [shared / "models" / "stories260K", shared / "data" / "copa.parquet"]
    if any(not p.exists() for p in need):
        return {"status": "SKIP", "why": f"needs {', '.join(str(p) for p in need)} beside the repository"}
    with tempfile.TemporaryDirectory(prefix="saeprobe-smoke-wf-") as tmp:
        work = Path(tmp) / "run"
        work.mkdir()
        (work / ".test").symlink_to(ROOT / ".test")
        (Path(tmp) / "shared").symlink_to(shared)
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
               "--configfile", str(ROOT / ".test" / "config" / "full.yaml"), "--config", f"device={device}",
               "--cores", str(os.cpu_count() or 2), "--until", "encode_sae"]  # everything up to the SAE codes: every GPU rule
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        logs = sorted((work / "results" / "logs").glob("*/**/*.log")) if (work / "results" / "logs").exists() else []
        devices = {m.group(1) for p in logs for m in re.finditer(r"device (\S+?), .*torch threads", p.read_text())}
        ran = sorted({p.relative_to(work / "results" / "logs").parts[0] for p in logs})
    out = {"seconds": seconds, "rules_ran": ran, "devices": sorted(devices), "returncode": run.returncode}
    ok = run.returncode == 0 and set(GPU_RULES) <= set(ran) and devices == {str(device)}
    if not ok:
        out["stderr_tail"] = run.stderr[-2000:]
    out["status"] = "PASS" if ok else "FAIL"
    return out


CHECKS: dict[str, Callable[[torch.device, dict[str, Any]], dict[str, Any]]] = {
    "cuda_torch": check_cuda, "hooks": check_hooks, "padding": check_padding, "extraction": check_extraction,
    "jumprelu": check_jumprelu, "workflow": check_workflow,
}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="shrunk model, widths and documents (a CPU check that it runs)")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu_smoke.json")
    args = ap.parse_args(argv)
    from saeprobe.models import pick_device, pick_dtype

    results: dict[str, Any] = {}
    try:
        device = pick_device(args.device)
    except Exception as exc:  # noqa: BLE001 - reported as the first check's failure
        results["cuda_torch"] = {"status": "FAIL", "why": str(exc)}
        device = None
    if device is not None:
        dtype = pick_dtype("auto", device) if device.type == "cuda" else torch.float32
        size = TINY if args.tiny else FULL
        ctx = {"size": size, "dtype": dtype, "judge": not args.tiny}
        wanted = args.checks.split(",")
        if any(c in wanted for c in ("hooks", "padding", "extraction", "jumprelu")):
            ctx["model"] = random_gemma(device, dtype, size["overrides"])
        start = time.perf_counter()
        for name in wanted:
            t0 = time.perf_counter()
            try:
                results[name] = CHECKS[name](device, ctx)
            except Exception as exc:  # noqa: BLE001 - one failing check does not hide the others
                results[name] = {"status": "FAIL", "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc(limit=4)}
            results[name]["check_s"] = time.perf_counter() - t0
            print(f"{name}: {results[name]['status']} ({results[name]['check_s']:.1f} s)", file=sys.stderr, flush=True)
        results["total_s"] = time.perf_counter() - start
    print("| check | status | measured |\n|---|---|---|")
    for name, r in results.items():
        if isinstance(r, dict):
            shown = {k: v for k, v in r.items() if k not in ("status", "traceback", "stderr_tail")}
            print(f"| {name} | {r['status']} | {fmt(shown)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    failed = [n for n, r in results.items() if isinstance(r, dict) and r["status"] == "FAIL"]
    for name in failed:
        print(f"\n{name} failed:\n{results[name].get('traceback') or results[name].get('stderr_tail') or ''}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""saeprobe throughput and scale benchmark: one command, one table.

    python benchmarks/run.py                 # CPU: MiniLM + stories260K on the shared data
    python benchmarks/run.py --quick         # a smoke run (seconds to minutes; numbers mean little)
    python benchmarks/run.py --device cuda   # random Gemma 2 2B, layers 5/12/19, 16k/65k/131k JumpReLU SAEs, bf16
    make bench

Sections (``--sections``, all by default):

- ``extraction``: tokens/s of saeprobe's extraction stage, a naive MOSAIC-style loop and a bare
  forward pass (see extraction.py), the matmul FLOP ceiling and each variant's MFU;
- ``encoding``: SAE vectors/s of saeprobe's encode stage vs bare ``sae.encode``; bytes per token
  of the stored codes vs dense float32 (encoding.py);
- ``memory``: peak resident memory of extraction and encoding on 1x and 8x the documents, each
  in a fresh process (memory.py);
- ``probe``: fit_probe on 20k documents x 65k sparse features (probe.py);
- ``dag``: ``snakemake -n`` on config/paper.yaml (dag.py).

Everything measured is printed as markdown and written to ``--out`` (benchmarks/results/ by
default) as ``<name>.json`` and ``<name>.md``, with the machine's description and its load
average, since timings on a shared machine are only as good as its quietness. Runs of each
variant are interleaved and the median is reported (best and CPU time in the JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent / "src") not in sys.path:
    sys.path.insert(1, str(HERE.parent / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dag as dag_bench  # noqa: E402
import encoding  # noqa: E402
import extraction  # noqa: E402
import memory  # noqa: E402
import setups  # noqa: E402
from saeprobe.models import pick_device, pick_dtype  # noqa: E402

SECTIONS = ("extraction", "encoding", "memory", "probe", "dag")
TARGETS = {
    "extraction_vs_naive": 3.0, "extraction_vs_bare": 0.85, "codes_vs_dense": 0.01, "memory_8x_vs_1x": 1.1,
    "probe_s": 120.0, "dag_s": 30.0,
}


def child_env() -> dict[str, str]:
    """Environment for benchmark subprocesses: this checkout's saeprobe first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")]))}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine(device: torch.device) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "device": str(device), "load_avg_start": os.getloadavg(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def profile_summary(fn: Any, device: torch.device, rows: int = 15) -> str:
    """torch.profiler table of one call of ``fn`` (sorted by device time on CUDA, CPU time otherwise)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        extraction.sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


# --------------------------------------------------------------------------- sections


def bench_model(ms: setups.ModelSetup, texts: list[str], args: argparse.Namespace, device: torch.device,
                work: Path, flops_cache: dict[str, float]) -> dict[str, Any]:
    dtype = pick_dtype(args.dtype, device)
    log(f"{ms.name}: tokenizing {len(texts)} documents")
    ids, special = setups.tokens(texts, ms.tokenizer(), ms.max_length)
    n_tokens = int(sum(len(x) for x in ids))
    log(f"{ms.name}: loading ({dtype}, {device})")
    model = ms.load(device, dtype)
    res: dict[str, Any] = {"layers": ms.layers, "compute_dtype": str(dtype).removeprefix("torch."),
                           "store_dtype": ms.store_dtype, "documents": len(ids), "tokens": n_tokens,
                           "max_length": ms.max_length, "token_budget": args.token_budget, "setup": ms.describe,
                           "d_model": int(model.config.hidden_size)}
    store = work / f"{ms.name}.zarr"
    if "extraction" in args.sections or "encoding" in args.sections:
        log(f"{ms.name}: extraction, {n_tokens:,} tokens, {args.repeats} interleaved runs per variant")
        repeats = args.repeats if "extraction" in args.sections else 1
        try:
            ext = extraction.bench_extraction(model, ids, special, ms.layers, device, dtype, token_budget=args.token_budget,
                                              store_dtype=ms.store_dtype, repeats=repeats, naive_batch=args.naive_batch,
                                              keep=store, log=log)
        except OverflowError as exc:  # random weights can exceed float16's range: store float32, as a user would
            log(f"{ms.name}: {exc}; storing float32 instead")
            ms.store_dtype = res["store_dtype"] = "float32"
            ext = extraction.bench_extraction(model, ids, special, ms.layers, device, dtype, token_budget=args.token_budget,
                                              store_dtype=ms.store_dtype, repeats=repeats, naive_batch=args.naive_batch,
                                              keep=store, log=log)
        key = str(dtype)
        if key not in flops_cache:
            flops_cache[key] = extraction.matmul_flops(device, dtype, seconds=1.0 if args.quick else 3.0)
        params = extraction.params_to_layer(model, max(ms.layers))
        flop_per_token = 2.0 * params
        ceiling = flops_cache[key] / flop_per_token
        for name in ("saeprobe", "bare", "naive"):
            ext[name]["mfu"] = ext[name]["tokens_per_s"] * flop_per_token / flops_cache[key]
        res["extraction"] = ext
        res["flops"] = {"matmul_flops_per_s": flops_cache[key], "params_to_deepest_layer": params,
                        "flop_per_token": flop_per_token, "ceiling_tokens_per_s": ceiling,
                        "attention_flop_per_token_estimate": ext["attention_flops_per_token"]}
        if args.profile:
            few = ids[: max(1, len(ids) // 10)]
            res["profile_extraction"] = profile_summary(
                lambda m=model: extraction.run_saeprobe(m, few, special[: len(few)], ms.layers, work / "profile.zarr",
                                                        token_budget=args.token_budget, store_dtype=ms.store_dtype), device)
            shutil.rmtree(work / "profile.zarr", ignore_errors=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "encoding" in args.sections:
        from saeprobe.store import ActivationStore

        acts = ActivationStore(store)
        layer = ms.layers[len(ms.layers) // 2]
        sample = torch.from_numpy(acts.rows(layer, 0, min(acts.n_tokens, 4096)))
        res["encoding"] = {}
        for shape in ms.saes:
            name = f"{shape.kind}-{shape.width}"
            log(f"{ms.name}: encoding with a random {name} SAE at layer {layer}")
            sae = encoding.build_sae(shape.kind, sample.shape[1], shape.width, k=shape.k, l0=shape.l0, sample=sample,
                                     device=device)
            out = work / f"{ms.name}-{name}"
            out.mkdir(exist_ok=True)
            enc = encoding.bench_encoding(sae, store, layer, out, device, batch_size=args.sae_batch, repeats=args.repeats)
            enc.update(kind=shape.kind, layer=layer)
            log(f"{ms.name}: {name}: decode work per token and bf16 agreement")
            enc["decode_work"] = encoding.decode_work(sae, store, layer, out / "decode_work.zarr", batch_size=args.sae_batch)
            enc["bf16"] = encoding.bf16_agreement(sae, sample[: args.bf16_tokens])
            if args.profile:
                import zarr

                from saeprobe.sae import encode_store

                res.setdefault("profile_encoding", {})[name] = profile_summary(
                    lambda s=sae, o=out: encode_store(s, acts, layer, zarr.open_group(str(o / "profile.zarr"), mode="w"),
                                               heldout_docs=np.zeros(int(acts.doc_id.max()) + 1, bool),
                                               batch_size=args.sae_batch), device)
            res["encoding"][name] = enc
            shutil.rmtree(out, ignore_errors=True)
        if args.bf16_wide:
            name = f"jumprelu-{args.bf16_wide}"
            log(f"{ms.name}: bf16 agreement of a random {name} SAE (no encode_store run)")
            sae = encoding.build_sae("jumprelu", sample.shape[1], args.bf16_wide, k=64, l0=64, sample=sample, device=device)
            res["bf16_wide"] = {name: encoding.bf16_agreement(sae, sample[: args.bf16_tokens])}
    return res


def bench_memory(ms: setups.ModelSetup, texts: list[str], args: argparse.Namespace, device: torch.device,
                 work: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Extraction and encoding peaks at 1x and 8x ``--memory-docs`` documents (fresh processes)."""
    # A stride sample of the corpus: the same mix of long and short documents as the whole.
    step = max(1, len(texts) // args.memory_docs)
    ids, special = setups.tokens(texts[::step][: args.memory_docs], ms.tokenizer(), ms.max_length)
    tokens_path = work / "memory_tokens.npz"
    memory.save_tokens(tokens_path, ids, special)
    dtype = str(pick_dtype(args.dtype, device)).removeprefix("torch.")
    shape = ms.saes[-1]  # the widest
    layer = ms.layers[len(ms.layers) // 2]
    out: dict[str, Any] = {"model": ms.name, "base_documents": len(ids), "sae": f"{shape.kind}-{shape.width}", "runs": []}
    base = {"device": str(device), "threads": torch.get_num_threads(), "options": options, "model": ms.name}
    sae_dir = work / "memory_sae"
    for scale in (1, args.memory_scale):
        log(f"memory: bare forward x{scale} ({ms.name}, fresh process)")
        out["runs"].append(memory.launch({**base, "stage": "forward", "scale": scale, "tokens": str(tokens_path),
                                          "dtype": dtype, "token_budget": args.token_budget, "out": str(work / "unused")}, work))
    for scale in (1, args.memory_scale):
        log(f"memory: extraction x{scale} ({ms.name}, fresh process)")
        store = work / f"memory_store_{scale}.zarr"
        out["runs"].append(memory.launch({**base, "stage": "extract", "scale": scale, "tokens": str(tokens_path),
                                          "dtype": dtype, "token_budget": args.token_budget, "out": str(store),
                                          "store_dtype": ms.store_dtype}, work))
    from saeprobe.store import ActivationStore

    acts = ActivationStore(work / "memory_store_1.zarr")
    sample = torch.from_numpy(acts.rows(layer, 0, min(acts.n_tokens, 4096)))
    encoding.build_sae(shape.kind, sample.shape[1], shape.width, k=shape.k, l0=shape.l0, sample=sample,
                       device=device).save_model(str(sae_dir))
    for scale in (1, args.memory_scale):
        log(f"memory: encoding x{scale} ({out['sae']}, fresh process)")
        out["runs"].append(memory.launch({**base, "stage": "encode", "scale": scale, "sae": str(sae_dir), "layer": layer,
                                          "store": str(work / f"memory_store_{scale}.zarr"), "batch_size": args.sae_batch,
                                          "out": str(work / f"memory_codes_{scale}.zarr")}, work))
    for stage in ("forward", "extract", "encode"):
        one, many = [r for r in out["runs"] if r["stage"] == stage]
        out[f"{stage}_ratio"] = many["stage_peak_mb"] / one["stage_peak_mb"]
    return out


# --------------------------------------------------------------------------- report


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:,.{digits}f}"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# saeprobe benchmark ({results['name']})", "",
             f"{results['started']} · {m['cpu']} · {m['cores']} cores · torch threads {m['torch_threads']} · "
             f"device {m['device']}{' (' + m['gpu'] + ')' if 'gpu' in m else ''} · torch {m['torch']} · "
             f"load average at start {m['load_avg_start'][0]:.1f}, at end {m['load_avg_end'][0]:.1f}", ""]
    if results.get("quick"):
        lines += ["**--quick smoke run: sizes are tiny, the numbers mean nothing.**", ""]
    checks: list[tuple[str, str, str, bool | None]] = []
    for name, res in results.get("models", {}).items():
        if "extraction" in res:
            ext, fl = res["extraction"], res["flops"]
            lines += [f"## Extraction: {name} (layers {res['layers']}, {res['compute_dtype']} compute, "
                      f"{res['store_dtype']} stored, {res['documents']:,} documents, {res['tokens']:,} tokens)", "",
                      "| variant | tokens/s (median) | best | tokens per CPU-s | padded tokens | x naive | / bare | MFU |",
                      "|---|---|---|---|---|---|---|---|"]
            for v in ("saeprobe", "bare", "naive"):
                r = ext[v]
                lines.append(f"| {v} | {fmt(r['tokens_per_s'])} | {fmt(r['tokens_per_s_best'])} | "
                             f"{fmt(r['tokens_per_cpu_s'])} | {fmt(r['padded_tokens'])} | "
                             f"{r['tokens_per_s'] / ext['naive']['tokens_per_s']:.2f} | "
                             f"{r['tokens_per_s'] / ext['bare']['tokens_per_s']:.2f} | {100 * r['mfu']:.2f}% |")
            lines += ["", f"FLOP ceiling: matmul {fl['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s ({res['compute_dtype']}) / "
                      f"(2 x {fl['params_to_deepest_layer']:,} parameters of blocks 0..{max(res['layers'])}) = "
                      f"**{fmt(fl['ceiling_tokens_per_s'])} tokens/s**; attention adds about "
                      f"{fl['attention_flop_per_token_estimate'] / fl['flop_per_token']:.0%} more FLOPs per token "
                      f"at these lengths (not in the ceiling).", ""]
            naive = ext["saeprobe"]["tokens_per_s"] / ext["naive"]["tokens_per_s"]
            bare = ext["saeprobe"]["tokens_per_s"] / ext["bare"]["tokens_per_s"]
            checks.append((f"{name}: extraction vs naive loop", f">= {TARGETS['extraction_vs_naive']}x", f"{naive:.2f}x",
                           naive >= TARGETS["extraction_vs_naive"]))
            checks.append((f"{name}: extraction vs bare forward", f">= {TARGETS['extraction_vs_bare']}", f"{bare:.2f}",
                           bare >= TARGETS["extraction_vs_bare"]))
        if res.get("encoding"):
            lines += [f"## SAE encoding: {name}", "",
                      "| SAE | layer | d_sae | L0 | encode_store vectors/s | bare encode vectors/s | stage / bare | "
                      "code bytes/token | dense fp32 bytes/token | codes / dense |", "|---|---|---|---|---|---|---|---|---|---|"]
            for sname, e in res["encoding"].items():
                lines.append(f"| {sname} | {e['layer']} | {e['d_sae']:,} | {fmt(e['l0'], 1)} | "
                             f"{fmt(e['encode_store_vectors_per_s'])} | {fmt(e['bare_vectors_per_s'])} | "
                             f"{e['encode_store_vectors_per_s'] / e['bare_vectors_per_s']:.2f} | "
                             f"{e['code_bytes_per_token']:.1f} | {e['dense_fp32_bytes_per_token']:,.0f} | "
                             f"1/{1 / e['code_vs_dense']:.0f} |")
                # What the target asks per active feature: a format storing an (index, value) pair per
                # active feature cannot go below ~2-3 bytes per pair, so at small widths it is out of reach.
                per_active = e["code_bytes_per_token"] / e["l0"] if e["l0"] else float("nan")
                allowed = e["dense_fp32_bytes_per_token"] * TARGETS["codes_vs_dense"] / e["l0"] if e["l0"] else float("nan")
                checks.append((f"{name}: {sname} codes vs dense fp32", "<= 1/100",
                               f"1/{1 / e['code_vs_dense']:.0f} ({per_active:.1f} B per active feature; "
                               f"1/100 allows {allowed:.1f})", e["code_vs_dense"] <= TARGETS["codes_vs_dense"]))
            lines.append("")
        for key in ("profile_extraction",):
            if key in res:
                lines += [f"### torch.profiler: extraction ({name})", "", "```", res[key], "```", ""]
        for sname, table in res.get("profile_encoding", {}).items():
            lines += [f"### torch.profiler: encode_store ({name}, {sname})", "", "```", table, "```", ""]
    if "writer" in results:
        w = results["writer"]
        lines += ["## Writer throughput (Gemma-2B-shaped stream)", "",
                  f"{w['layers']} layers x d_model {w['d_model']} float16, {w['tokens']:,} tokens ({w['gb']:.2f} GB), "
                  f"synthetic N(0, s_j²) rows; {w['cpu_threads']} CPU threads.", "",
                  "| writer | GB/s to disk | GB/s in memory (compression only) |", "|---|---|---|",
                  f"| saeprobe (4,096-row chunks, 4 per append, one thread per layer) | {w['writer_gb_per_s']:.3f} | "
                  f"{w['writer_memory_gb_per_s']:.3f} |",
                  f"| before (16,384-row chunks, 1 per append, one thread) | {w['before_gb_per_s']:.3f} | "
                  f"{w['before_memory_gb_per_s']:.3f} |", "",
                  "| producer | tokens/s | GB/s of activations |", "|---|---|---|",
                  f"| H200 forward, estimated ({w['assumption']}) | {fmt(w['h200_tokens_per_s'])} | {w['h200_gb_per_s']:.3f} |"]
        for name, res in results.get("models", {}).items():
            if "extraction" in res:
                tps = res["extraction"]["bare"]["tokens_per_s"]
                per_token = len(res["layers"]) * res["d_model"] * (2 if res["store_dtype"] == "float16" else 4)
                lines.append(f"| {name} bare forward on this machine (measured; {len(res['layers'])} x {res['d_model']} "
                             f"{res['store_dtype']}) | {fmt(tps)} | {tps * per_token / 1e9:.4f} |")
                checks.append((f"writer vs {name} bare forward (this machine)", ">= 1x",
                               f"{w['writer_gb_per_s'] / (tps * per_token / 1e9):.1f}x",
                               w["writer_gb_per_s"] >= tps * per_token / 1e9))
        checks.append(("writer vs H200 forward (estimate)", ">= 1x", f"{w['writer_gb_per_s'] / w['h200_gb_per_s']:.2f}x "
                       f"on {w['cpu_threads']} CPU threads", w["writer_gb_per_s"] >= w["h200_gb_per_s"]))
        lines.append("")
    for name, res in results.get("models", {}).items():
        rows = [(s, e) for s, e in res.get("encoding", {}).items() if "decode_work" in e]
        if rows:
            lines += [f"## Encoding decode work and bf16 agreement: {name}", "",
                      "| SAE | batch tokens | read | chunk rows | decodes per chunk | bytes decompressed per token |",
                      "|---|---|---|---|---|---|"]
            labels = {"before": "before (document blocks, store.rows)", "after_legacy": "encode_store now, same store",
                      "after": "encode_store now, store as written now"}
            for sname, e in rows:
                d = e["decode_work"]
                for key, label in labels.items():
                    lines.append(f"| {sname} | {d['batch_tokens']:,} | {label} | {d[key]['chunk_rows']:,} | "
                                 f"{d[key]['decodes_per_chunk']:.2f} | {fmt(d[key]['bytes_per_token'])} |")
                ok = all(abs(d[k]["decodes_per_chunk"] - 1) < 1e-9 for k in ("after", "after_legacy"))
                checks.append((f"{name}: {sname} encode decodes per chunk", "= 1",
                               f"{d['after']['decodes_per_chunk']:.2f} (16,384-row chunks: {d['after_legacy']['decodes_per_chunk']:.2f}, "
                               f"before {d['before']['decodes_per_chunk']:.2f})", ok))
            lines += ["", "| SAE | tokens | active-set Jaccard (mean per token) | relative value error | L0 fp32 | L0 bf16 |",
                      "|---|---|---|---|---|---|"]
            agree = [(s, e["bf16"]) for s, e in rows] + list(res.get("bf16_wide", {}).items())
            for sname, b in agree:
                lines.append(f"| {sname} | {b['tokens']:,} | {b['jaccard']:.4f} | {b['rel_error']:.4f} | "
                             f"{b['l0_fp32']:.1f} | {b['l0_bf16']:.1f} |")
            lines += ["", "bf16 encode = a bfloat16 copy of the random SAE applied to the activations cast to bfloat16, on "
                      "this machine; codes compared with the float32 encode. Probe macro F1 is not measured here.", ""]
    if "memory" in results:
        mem = results["memory"]
        lines += [f"## Peak memory ({mem['model']}, SAE {mem['sae']}; base {mem['base_documents']} documents)", "",
                  "| stage | documents | tokens | stage peak RSS MB | process peak MB | RSS before MB | CUDA peak MB | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in mem["runs"]:
            lines.append(f"| {r['stage']} | x{r['scale']} | {r['tokens']:,} | {r['stage_peak_mb']:,.0f} | "
                         f"{r['process_peak_mb']:,.0f} | {r['rss_before_mb']:,.0f} | {fmt(r.get('cuda_peak_mb'))} | "
                         f"{r['wall_s']:.1f} |")
        lines.append("")
        lines += [f"The bare forward pass over the same batches grows x{mem['forward_ratio']:.2f} from x1 to "
                  f"x{results['memory_scale']}: on CPU glibc's heap fragments with every new batch shape and keeps the "
                  "freed pages. Extraction hands them back whenever its resident set passes the watermark of its first "
                  "batches (`saeprobe.heap.HeapGuard`), which is what keeps its own peak flat.", ""]
        for stage in ("extract", "encode"):
            ratio = mem[f"{stage}_ratio"]
            note = f" (bare forward: {mem['forward_ratio']:.2f})" if stage == "extract" else ""
            checks.append((f"peak memory of {stage}, x{results['memory_scale']} vs x1", f"<= {TARGETS['memory_8x_vs_1x']}",
                           f"{ratio:.2f}{note}", ratio <= TARGETS["memory_8x_vs_1x"]))
    if "probe" in results:
        p = results["probe"]
        lines += ["## Probe on wide sparse features", "",
                  f"fit_probe ({p['solver']}, Cs {p['Cs']}, {p['cv_folds']}-fold CV on train, refit, test) on "
                  f"{p['docs']:,} documents x {p['width']:,} features, {p['mean_active']:.1f} active per document, "
                  f"{p['threads']} threads: **{p['wall_s']:.1f} s wall**, {p['cpu_s']:.1f} CPU-s, peak RSS "
                  f"{p['peak_rss_mb']:,.0f} MB; C={p['C']:g}, CV macro F1 {p['cv_macro_f1']:.3f}, test {p['test_macro_f1']:.3f}.", ""]
        checks.append(("probe, 20k docs x 65k sparse features", f"< {TARGETS['probe_s']:.0f} s", f"{p['wall_s']:.1f} s",
                       p["wall_s"] < TARGETS["probe_s"] if not results.get("quick") else None))
    if "dag" in results:
        d = results["dag"]
        if "datasets" in d:
            what = (f"a generated paper-sized grid ({d['models']} models x 3 layers x 2 SAE widths x {d['datasets']} "
                    "datasets x 6 poolings x 2 binarizations)")
        else:
            what = f"the paper's configuration (`{d['config']}`)"
        lines += ["## Workflow DAG", "",
                  f"`snakemake -n` on {what}: **{d['jobs']:,} jobs planned in {d['wall_s']:.1f} s wall**, "
                  f"{d['cpu_s']:.1f} CPU-s (on a busy machine the wall time includes waiting for a core; the CPU "
                  "time is what a quiet one would take).", ""]
        checks.append(("snakemake -n, paper configuration" if "datasets" not in d else "snakemake -n, paper-sized grid",
                       f"< {TARGETS['dag_s']:.0f} s", f"{d['wall_s']:.1f} s wall, {d['cpu_s']:.1f} CPU-s",
                       d["wall_s"] < TARGETS["dag_s"] if not results.get("quick") else None))
    if checks:
        lines += ["## Targets", "", "| what | target | measured | met |", "|---|---|---|---|"]
        for what, target, got, ok in checks:
            lines.append(f"| {what} | {target} | {got} | {'yes' if ok else ('no' if ok is not None else 'n/a (quick)')} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes everywhere (checks that it works)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--setup", choices=["auto", "cpu", "gemma"], default="auto", help="auto = gemma on CUDA, cpu otherwise")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--models", help="cpu setup: comma-separated subset of minilm,stories260k")
    ap.add_argument("--datasets", default="jailbreak_classification,trec", help="shared datasets forming the corpus")
    ap.add_argument("--max-docs", type=int, default=2800, help="documents of the corpus used (default 2800: all of "
                    "jailbreak_classification and the first 1494 of trec, long and short texts)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per variant (median reported)")
    ap.add_argument("--dtype", default="auto", help="compute dtype (auto = bfloat16 where native, as the workflow)")
    ap.add_argument("--token-budget", type=int, default=None, help="padded tokens per batch (default: the config "
                    "default 16384, on every device)")
    ap.add_argument("--writer-tokens", type=int, default=131072, help="tokens of the Gemma-2B-shaped writer stream")
    ap.add_argument("--bf16-tokens", type=int, default=4096, help="tokens of the bf16-vs-fp32 encode agreement")
    ap.add_argument("--bf16-wide", type=int, default=65536, help="also measure bf16 agreement of a JumpReLU SAE this "
                    "wide (0 = no)")
    ap.add_argument("--naive-batch", type=int, default=32, help="documents per batch of the naive loop")
    ap.add_argument("--sae-batch", type=int, default=4096, help="tokens per encoding batch (the config default)")
    ap.add_argument("--overrides", type=json.loads, default={}, help="gemma setup: JSON of Gemma2Config fields to override")
    ap.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], help="gemma setup: layers (default 5,12,19)")
    ap.add_argument("--sae-widths", type=lambda s: [int(x) for x in s.split(",")], help="gemma setup: JumpReLU widths")
    ap.add_argument("--sae-l0", type=int, default=64, help="gemma setup: JumpReLU target L0")
    ap.add_argument("--max-length", type=int, help="gemma setup: max tokens per document (default 1024)")
    ap.add_argument("--paper-width", type=int, default=16384, help="cpu setup: also encode MiniLM with a JumpReLU SAE "
                    "of this width, L0 64 (Gemma Scope's 16k); 0 = no")
    ap.add_argument("--memory-docs", type=int, default=1000,
                    help="base documents of the memory runs (then x8): a stride sample of the corpus, long and short texts alike")
    ap.add_argument("--memory-scale", type=int, default=8)
    ap.add_argument("--probe-docs", type=int, default=20000)
    ap.add_argument("--probe-width", type=int, default=65536)
    ap.add_argument("--dag-datasets", type=int, default=0,
                    help="plan a generated grid with this many hub datasets instead of config/paper.yaml (0)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--profile", action="store_true", help="add torch.profiler tables of extraction and encoding")
    ap.add_argument("--out", type=Path, help="folder for <name>.json and <name>.md (default benchmarks/results, "
                    "benchmarks/out with --quick)")
    ap.add_argument("--name", help="result file name (default: <setup>-<device>[-quick])")
    args = ap.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)} (choose from {', '.join(SECTIONS)})")
    if args.out is None:
        args.out = HERE / ("out" if args.quick else "results")
    if args.quick:
        args.max_docs, args.repeats = min(args.max_docs, 48), 1
        args.memory_docs, args.probe_docs, args.probe_width, args.dag_datasets = 12, 1000, 4096, 1
        args.writer_tokens, args.bf16_tokens, args.bf16_wide = 32768, 1024, min(args.bf16_wide, 8192)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    setup = args.setup if args.setup != "auto" else ("gemma" if device.type == "cuda" else "cpu")
    if args.token_budget is None:
        args.token_budget = 16384  # the workflow's default on every device
    options = {"setup": setup, "models": args.models.split(",") if args.models else None, "overrides": args.overrides,
               "layers": args.layers, "sae_widths": args.sae_widths, "sae_l0": args.sae_l0, "max_length": args.max_length,
               "paper_width": args.paper_width or None}
    name = args.name or f"{setup}{'' if setup == device.type else '-' + device.type}{'-quick' if args.quick else ''}"
    results: dict[str, Any] = {"name": name, "started": dt.datetime.now().isoformat(timespec="seconds"),
                               "machine": machine(device), "quick": args.quick, "options": options,
                               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "models": {}, "memory_scale": args.memory_scale}
    model_setups = setups.from_options(options)
    texts = setups.corpus(args.datasets.split(","), args.max_docs)
    work = Path(tempfile.mkdtemp(prefix="saeprobe-bench-"))
    try:
        flops_cache: dict[str, float] = {}
        if {"extraction", "encoding"} & set(args.sections):
            for ms in model_setups:
                results["models"][ms.name] = bench_model(ms, texts, args, device, work, flops_cache)
        if "extraction" in args.sections:
            log(f"writer: {args.writer_tokens:,} tokens of a Gemma-2B-shaped stream (3 x 2304 float16)")
            results["writer"] = extraction.bench_writer(tokens=args.writer_tokens, repeats=args.repeats)
        if "memory" in args.sections:
            results["memory"] = bench_memory(model_setups[0], texts, args, device, work, options)
        if "probe" in args.sections:
            log(f"probe: {args.probe_docs:,} documents x {args.probe_width:,} sparse features")
            threads = 2 if device.type != "cuda" else (os.cpu_count() or 2)
            # A fresh process: its peak memory and thread pools are the probe's own.
            cmd = [sys.executable, str(HERE / "probe.py"), "--json", "--docs", str(args.probe_docs),
                   "--width", str(args.probe_width), "--threads", str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
            if proc.returncode != 0:
                raise RuntimeError(f"probe benchmark failed:\n{proc.stderr[-4000:]}")
            results["probe"] = json.loads(proc.stdout.strip().splitlines()[-1])
        if "dag" in args.sections:
            if args.dag_datasets:
                log(f"dag: snakemake -n on a generated paper-sized grid with {args.dag_datasets} datasets")
                res = dag_bench.run(args.dag_datasets)
            else:
                log(f"dag: snakemake -n on {dag_bench.PAPER.relative_to(dag_bench.ROOT)}")
                res = dag_bench.run_paper()
            res.pop("output_tail", None)
            results["dag"] = res
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_avg_end"] = os.getloadavg()
    report = render(results)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / f"{name}.md").write_text(report + "\n")
    log(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.md')}")
    return results


if __name__ == "__main__":
    main()

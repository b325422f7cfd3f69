"""Snakemake adapter: one forward pass, residual stream to a ragged Zarr store (saeprobe.activations)."""
import platform
import time

import torch
import transformers
import zarr

import saeprobe
from saeprobe import tokenize
from saeprobe.activations import extract
from saeprobe.io import atomic_path, setup_logging
from saeprobe.models import load_model, pick_device, pick_dtype

log = setup_logging(snakemake.log[0])
name, spec = snakemake.wildcards.model, snakemake.config["models"][snakemake.wildcards.model]
torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.config["device"])
dtype = pick_dtype(spec["dtype"], device)
model = load_model(spec, name, device, dtype)

ids, special, tok_meta = tokenize.read(snakemake.input.tokens)

convention = spec["layer_convention"]
start = time.perf_counter()
with atomic_path(snakemake.output[0], directory=True) as tmp:
    group = zarr.open_group(str(tmp), mode="w")
    stats = extract(model, ids, special, group, spec["layers"], convention=convention,
                    token_budget=spec["token_budget"], store_dtype=spec["store_dtype"])
    hook = "blocks.{layer}.hook_resid_post" if convention == "block_output" else "hidden_states[{layer}] (block input)"
    group.attrs.update({
        "model": name, "model_class": type(model).__name__, "source": {k: spec.get(k) for k in ("path", "hub", "package", "revision")},
        "layers": spec["layers"], "layer_convention": convention, "hook_point": hook,
        "compute_dtype": str(dtype).removeprefix("torch."), "store_dtype": spec["store_dtype"], "device": str(device),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "d_model": int(model.config.hidden_size), "max_length": tok_meta["max_length"], "tokenizer": tok_meta,
        "n_docs": stats["n_docs"], "n_tokens": stats["n_tokens"], "max_abs_activation": {str(k): v for k, v in stats["max_abs"].items()},
        "versions": {"saeprobe": saeprobe.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "zarr": zarr.__version__, "python": platform.python_version()},
    })
elapsed = time.perf_counter() - start
log.info("%d documents, %d tokens, layers %s on %s/%s: %.1f s (%.0f tokens/s)", stats["n_docs"], stats["n_tokens"],
         spec["layers"], device, dtype, elapsed, stats["n_tokens"] / max(elapsed, 1e-9))

"""Snakemake adapter: language-model residual stream at image-token positions to a ragged Zarr store (saeprobe.vision)."""
import json
import platform
import time

import torch
import transformers
import zarr

import saeprobe
from saeprobe import data, vision
from saeprobe.io import atomic_path, setup_logging
from saeprobe.models import pick_device, pick_dtype

log = setup_logging(snakemake.log[0])
name, spec = snakemake.wildcards.model, snakemake.config["models"][snakemake.wildcards.model]
torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.config["device"])
dtype = pick_dtype(spec["dtype"], device)
model, processor = vision.load(spec, name, device, dtype)
frame, _ = data.read(snakemake.input.data)
if "image" not in frame.columns:
    raise ValueError(f"{snakemake.input.data}: no 'image' column (not written by prepare_images)")

convention = spec["layer_convention"]
start = time.perf_counter()
with atomic_path(snakemake.output[0], directory=True) as tmp:
    group = zarr.open_group(str(tmp), mode="w")
    stats = vision.extract(model, processor, frame["image"].to_list(), frame["text"].to_list(), group, spec["layers"],
                           convention=convention, token_budget=spec["token_budget"], store_dtype=spec["store_dtype"])
    hook = ("language_model.blocks.{layer}.hook_resid_post" if convention == "block_output"
            else "language_model.hidden_states[{layer}] (block input)")
    lm_config = vision.language_model(model).config
    tok = processor.tokenizer
    group.attrs.update({
        "model": name, "model_class": type(model).__name__, "source": {k: spec.get(k) for k in ("path", "hub", "package", "random", "revision")},
        "layers": spec["layers"], "layer_convention": convention, "hook_point": hook,
        "positions": "image tokens only (image_seq_length rows per image)",
        "image_seq_length": stats["image_seq_length"], "image_token_id": int(processor.image_token_id),
        "prompts": sorted(set(frame["text"].to_list())), "seq_length": stats["seq_length"],
        "compute_dtype": str(dtype).removeprefix("torch."), "store_dtype": spec["store_dtype"], "device": str(device),
        "attn_implementation": getattr(lm_config, "_attn_implementation", None),
        "d_model": int(lm_config.hidden_size), "max_length": stats["seq_length"],
        "tokenizer": {"class": type(tok).__name__, "name_or_path": tok.name_or_path, "vocab_size": len(tok)},
        "image_processor": json.loads(processor.image_processor.to_json_string()),
        "n_docs": stats["n_docs"], "n_tokens": stats["n_tokens"], "max_abs_activation": {str(k): v for k, v in stats["max_abs"].items()},
        "versions": {"saeprobe": saeprobe.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "zarr": zarr.__version__, "python": platform.python_version()},
    })
elapsed = time.perf_counter() - start
log.info("%d images, %d image tokens (%d per image), layers %s on %s/%s: %.1f s (%.1f images/s)", stats["n_docs"],
         stats["n_tokens"], stats["image_seq_length"], spec["layers"], device, dtype, elapsed,
         stats["n_docs"] / max(elapsed, 1e-9))

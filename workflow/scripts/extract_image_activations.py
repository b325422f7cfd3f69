"""Snakemake adapter: language-model residual stream at image-token positions to a ragged Zarr store (saeprobe.vision)."""
import json
import time

import zarr

from saeprobe import vision
from saeprobe.activations import hook_point
from saeprobe.io import atomic_path
from saeprobe.job import provenance, setup
from saeprobe.tokenize import tokenizer_fingerprint

name, spec, runtime = snakemake.wildcards.model, snakemake.params.settings, snakemake.params.runtime
job = setup(snakemake, dtype=spec["dtype"])
model, processor = vision.load(spec, name, job.device, job.dtype)
images, prompts = vision.read_prepared(snakemake.input.data)

start = time.perf_counter()
with atomic_path(snakemake.output[0], directory=True) as tmp:
    group = zarr.open_group(str(tmp), mode="w")
    stats = vision.extract(model, processor, images, prompts, group, spec["layers"], convention=spec["layer_convention"],
                           token_budget=runtime["token_budget"], store_dtype=spec["store_dtype"])
    tok = processor.tokenizer
    group.attrs.update(provenance(
        name, spec, model, vision.language_model(model).config, device=job.device, dtype=job.dtype,
        hook_point=hook_point(spec["layer_convention"], "language_model"),
        positions="image tokens only (image_seq_length rows per image)", max_length=stats["seq_length"],
        tokenizer={"class": type(tok).__name__, "fingerprint": tokenizer_fingerprint(tok)}, stats=stats,
        image={"image_seq_length": stats["image_seq_length"], "image_token_id": int(processor.image_token_id),
               "prompts": sorted(set(prompts)), "image_processor": json.loads(processor.image_processor.to_json_string())}))
elapsed = time.perf_counter() - start
job.log.info("%d images, %d image tokens (%d per image), layers %s on %s/%s: %.1f s (%.1f images/s)", stats["n_docs"],
             stats["n_tokens"], stats["image_seq_length"], spec["layers"], job.device, job.dtype, elapsed,
             stats["n_docs"] / max(elapsed, 1e-9))
w = stats["writer"]  # not in the store's attrs: those record nothing that depends on time
job.log.info("writer threads busy %.1f s of %.1f s (busiest array; per array: %s)%s", w["busy_max_s"], w["wall_s"],
             w["busy_s"], "; the forward pass waited on the writer" if w["busy_max_s"] > 0.9 * w["wall_s"] else "")

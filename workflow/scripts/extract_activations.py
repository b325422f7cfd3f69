"""Snakemake adapter: one forward pass, residual stream to a ragged Zarr store (saeprobe.activations)."""
import time

import zarr

from saeprobe import tokenize
from saeprobe.activations import extract, hook_point
from saeprobe.io import atomic_path
from saeprobe.job import provenance, setup
from saeprobe.models import load_pretrained

name, spec, runtime = snakemake.wildcards.model, snakemake.params.settings, snakemake.params.runtime
job = setup(snakemake, dtype=spec["dtype"])
model = load_pretrained(spec, name, "base", job.device, job.dtype)
ids, special, tok_meta = tokenize.read(snakemake.input.tokens)

start = time.perf_counter()
with atomic_path(snakemake.output[0], directory=True) as tmp:
    group = zarr.open_group(str(tmp), mode="w")
    stats = extract(model, ids, special, group, spec["layers"], convention=spec["layer_convention"],
                    token_budget=runtime["token_budget"], store_dtype=spec["store_dtype"])
    group.attrs.update(provenance(
        name, spec, model, model.config, device=job.device, dtype=job.dtype,
        hook_point=hook_point(spec["layer_convention"]), positions="every real (non-pad) token; special tokens flagged",
        max_length=tok_meta["max_length"], tokenizer={"class": tok_meta["tokenizer"], "fingerprint": tok_meta["fingerprint"]},
        stats=stats))
elapsed = time.perf_counter() - start
job.log.info("%d documents, %d tokens, layers %s on %s/%s: %.1f s (%.0f tokens/s)", stats["n_docs"], stats["n_tokens"],
             spec["layers"], job.device, job.dtype, elapsed, stats["n_tokens"] / max(elapsed, 1e-9))
w = stats["writer"]  # not in the store's attrs: those record nothing that depends on time
job.log.info("writer threads busy %.1f s of %.1f s (busiest array; per array: %s)%s", w["busy_max_s"], w["wall_s"],
             w["busy_s"], "; the forward pass waited on the writer" if w["busy_max_s"] > 0.9 * w["wall_s"] else "")

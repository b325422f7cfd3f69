"""Snakemake adapter: convert a GGUF model once into a Hugging Face folder (saeprobe.gguf)."""
import time

from saeprobe import gguf
from saeprobe.io import atomic_path, setup_logging

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.model
start = time.perf_counter()
with atomic_path(snakemake.output[0], directory=True) as tmp:
    info = gguf.convert(snakemake.params.source, name, tmp)
log.info("models.%s: %s GGUF '%s' (%s, %.1f MB, sha256 %s) -> %s, %.1fM parameters in %s, in %.1f s", name,
         info["architecture"], info["gguf_file"], info.get("quantization"), info["gguf_bytes"] / 2**20,
         info["gguf_sha256"][:12], snakemake.output[0], info["parameters"] / 1e6, info["dtype"],
         time.perf_counter() - start)

"""Snakemake adapter: build a randomly initialised model from a preset (saeprobe.randinit)."""
from saeprobe import randinit
from saeprobe.io import atomic_path, setup_logging

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
model = randinit.build(spec["preset"], spec["overrides"], spec["seed"])
with atomic_path(snakemake.output[0], directory=True) as tmp:
    randinit.save(model, tmp, spec.get("tokenizer"))
n_params = sum(p.numel() for p in model.parameters())
log.info("random %s model (%s): %.2fM parameters, seed %d", spec["preset"], type(model).__name__, n_params / 1e6,
         spec["seed"])

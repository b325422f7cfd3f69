"""Snakemake adapter: encode an activation store with an SAE into sparse codes (saeprobe.sae)."""
import time

import zarr

from saeprobe import data
from saeprobe.io import atomic_path
from saeprobe.job import setup
from saeprobe.sae import encode_store, load_sae
from saeprobe.store import ActivationStore

sae_name, layer = snakemake.wildcards.sae, int(snakemake.wildcards.layer)
spec, runtime = snakemake.params.sae, snakemake.params.runtime
job = setup(snakemake)
store = ActivationStore(snakemake.input.activations)
# The loader checks the weights, the width and the hook point against what the store holds.
sae = load_sae(spec, layer, job.device, sae_name, trained_dir=snakemake.input.sae or None,
               d_model=int(store.attrs["d_model"]), layer_convention=store.attrs["layer_convention"],
               hook_check=snakemake.params.hook_check)
frame, _ = data.read(snakemake.input.data)
heldout = frame["split"].to_numpy() != "train"

start = time.perf_counter()
with atomic_path(snakemake.output[0], directory=True) as tmp:
    group = zarr.open_group(str(tmp), mode="w")
    stats = encode_store(sae, store, layer, group, heldout_docs=heldout, batch_size=runtime["batch_size"],
                         dtype=spec["encode_dtype"])
    group.attrs.update({"sae": sae_name, "layer": layer, "architecture": sae.cfg.architecture(),
                        "activations": store.attrs.get("hook_point", "").format(layer=layer)})
elapsed = time.perf_counter() - start
q, h = stats["quality"], stats["quality_heldout"]
job.log.info("encoded in %s", stats["encode_dtype"])
job.log.info("%d tokens in %.1f s (%.0f vectors/s); L0 %.1f; explained variance %.3f (held-out %.3f); dead fraction %.3f",
             q["n_tokens"], elapsed, store.n_tokens / max(elapsed, 1e-9), q["l0"], q["explained_variance"],
             h.get("explained_variance", float("nan")), q["dead_fraction"])

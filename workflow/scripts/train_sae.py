"""Snakemake adapter: train an SAE (any saeprobe.sae.ARCHITECTURES) with SAELens on train-split activations."""
from saeprobe import data
from saeprobe.io import atomic_path, write_json
from saeprobe.job import setup
from saeprobe.sae import collect_vectors, resid_hook_name, train_sae
from saeprobe.store import ActivationStore

sae_name, layer = snakemake.wildcards.sae, int(snakemake.wildcards.layer)
cfg, seed, datasets = snakemake.params.train, snakemake.params.seed, snakemake.params.datasets
job = setup(snakemake)

stores = [ActivationStore(p) for p in snakemake.input.activations]
is_train = [data.read(p)[0]["split"].to_numpy() == "train" for p in snakemake.input.data]
x = collect_vectors(stores, is_train, layer, cfg["max_buffer_tokens"], seed)
job.log.info("SAE %s layer %d: %d training vectors (d=%d) from train splits of %s", sae_name, layer, len(x), x.shape[1],
             datasets)
with atomic_path(snakemake.output[0], directory=True) as tmp:
    report = train_sae(
        x, tmp, cfg, seed=seed, device=str(job.device),
        metadata={"sae": sae_name, "layer": layer, "model": stores[0].attrs["model"],
                  "hook_point": stores[0].attrs["hook_point"].format(layer=layer), "train_datasets": datasets},
        hook_name=resid_hook_name(layer, stores[0].attrs["layer_convention"]),
    )
    write_json(tmp / "training_log.json", report)
q = report["heldout"]
job.log.info("%s SAE, held-out: explained variance %.3f, L0 %.1f, dead fraction %.3f", report["architecture"], q["explained_variance"], q["l0"],
             q["dead_fraction"])

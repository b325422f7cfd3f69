"""Snakemake adapter: an SAE's held-out quality — reconstruction and, for causal LMs, the spliced loss
(saeprobe.sae_quality)."""
from pathlib import Path

import numpy as np

from saeprobe import data, tokenize
from saeprobe.errors import ModelLoadError
from saeprobe.io import read_json, write_json
from saeprobe.job import setup
from saeprobe.sae import K_ARCHITECTURES, THRESHOLD_SAVED, collect_vectors, load_sae
from saeprobe.sae_quality import reconstruction, spliced_loss
from saeprobe.store import ActivationStore

sae_name, layer = snakemake.wildcards.sae, int(snakemake.wildcards.layer)
p = snakemake.params
settings, spec, model_spec = p.settings, p.sae, p.model
job = setup(snakemake, dtype=model_spec["dtype"])
trained = "train" in spec
stores = [ActivationStore(path) for path in snakemake.input.activations]
# The loader checks the weights, the width and the hook point against what the stores hold.
sae = load_sae(spec, layer, job.device, sae_name, trained_dir=snakemake.input.sae if trained else None,
               d_model=int(stores[0].attrs["d_model"]), layer_convention=stores[0].attrs["layer_convention"],
               hook_check=p.hook_check)
splits = [data.read(path)[0]["split"].to_numpy() for path in snakemake.input.data]
heldout = [s != "train" for s in splits]
x = collect_vectors(stores, heldout, layer, settings["max_tokens"], p.seed)
quality = reconstruction(sae, x, settings["dense_threshold"])
job.log.info("%s layer %d on %d held-out tokens of %s: L0 %.1f, explained variance %.3f, dead %.3f, dense %.3f",
             sae_name, layer, quality["n_tokens"], p.datasets, quality["l0"], quality["explained_variance"],
             quality["dead_fraction"], quality["dense_fraction"])
loss = {"ce_clean": None, "ce_spliced": None, "ce_zero": None, "loss_recovered": None, "kl_div": None, "n_loss_tokens": 0}
if settings["loss_tokens"] and model_spec["kind"] == "text" and snakemake.input.tokens:
    from saeprobe.models import load_pretrained

    try:
        model = load_pretrained(model_spec, spec["model"], "causal_lm", job.device, job.dtype)
    except ModelLoadError as exc:
        job.log.info("no spliced loss: %s", exc)
        model = None
    if model is not None:
        docs = []
        for tokens, prepared in zip(snakemake.input.tokens, snakemake.input.loss_data, strict=True):
            ids, special, _ = tokenize.read(tokens)
            split = data.read(prepared)[0]["split"].to_numpy()
            docs += [(ids[i], special[i]) for i in np.flatnonzero(split != "train")]
        order = np.random.default_rng(p.seed).permutation(len(docs))
        loss = spliced_loss(model, sae, [docs[i] for i in order], layer, model_spec["layer_convention"],
                            max_tokens=settings["loss_tokens"], token_budget=p.runtime["token_budget"])
        job.log.info("spliced loss on %d held-out tokens of %s: CE clean %.3f, spliced %.3f, zero-ablated %.3f; loss recovered %.3f, "
                     "KL %.4f", loss["n_loss_tokens"], p.loss_datasets, loss["ce_clean"], loss["ce_spliced"], loss["ce_zero"],
                     loss["loss_recovered"], loss["kl_div"])
train = spec.get("train")
training_log = read_json(Path(snakemake.input.sae) / "training_log.json") if trained else {}
arch = train["architecture"] if train else str(sae.cfg.architecture())
report = {
    "sae": sae_name, "model": spec["model"], "layer": layer, "architecture": arch, "width": int(sae.cfg.d_sae),
    "k": float(train["k"]) if train and arch in K_ARCHITECTURES else None,
    "sparsity_key": training_log.get("sparsity_key"), "sparsity": training_log.get("sparsity"),
    "saved_l0_over_k": quality["l0"] / float(train["k"]) if train and arch in THRESHOLD_SAVED else None,
    "datasets": p.datasets, "loss_datasets": p.loss_datasets if loss["n_loss_tokens"] else [], "quality": {**quality, **loss}, "training_heldout": training_log.get("heldout"),
}
write_json(snakemake.output[0], report)

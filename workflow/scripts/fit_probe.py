"""Snakemake adapter: fit one linear probe with CV-selected C (saeprobe.probes)."""
from saeprobe import data
from saeprobe.config import parse_binarize
from saeprobe.io import setup_logging, write_json
from saeprobe.pooling import binarize, load_pooled
from saeprobe.probes import fit_probe, save_coef

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
frame, label_names = data.read(snakemake.input.data)
threshold = parse_binarize(w.binarize)
x = binarize(load_pooled(snakemake.input.features), threshold)
if x.shape[0] != frame.height:
    raise ValueError(f"{snakemake.input.features}: {x.shape[0]} rows but the dataset has {frame.height} documents")
result, coef, intercept = fit_probe(x, frame["label"].to_numpy(), frame["split"].to_numpy(),
                                    n_classes=len(label_names), seed=snakemake.params.seed, **snakemake.params.probe)
result.update(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=w.pooling,
              binarize=w.binarize, threshold=threshold, label_names=label_names, seed=snakemake.params.seed)
save_coef(snakemake.output.coef, coef, intercept, label_names)
write_json(snakemake.output.result, result)
for split_name in ("validation", "test"):
    missing = (result.get(split_name) or {}).get("missing_classes")
    if missing:
        log.warning("the %s split has no rows of classes %s: its macro F1 averages over all %d classes, these count 0",
                    split_name, [label_names[i] for i in missing], len(label_names))
log.info("C=%g cv macro F1 %.3f; test macro F1 %.3f, accuracy %.3f", result["C"], result["cv_macro_f1"],
         result["test"]["macro_f1"], result["test"]["accuracy"])

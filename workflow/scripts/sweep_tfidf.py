"""Snakemake adapter: data-regime sweeps (size, class imbalance, label noise) of the TF-IDF baseline on one dataset
(saeprobe.sweep)."""
from saeprobe import data
from saeprobe.cell_tables import frame, write_parquet
from saeprobe.errors import DataError
from saeprobe.io import setup_logging
from saeprobe.sweep import sweep_tfidf
from saeprobe.sweep_tables import SWEEP_SCHEMA

log = setup_logging(snakemake.log[0])
p = snakemake.params
dataset, label_names = data.read(snakemake.input.data)
cell = dict(model=None, dataset=snakemake.wildcards.dataset, source="tfidf", layer=None, pooling=None, binarize=None)
# The cell in the report too: a cell whose every draw was skipped has no row to carry it.
report = {"sizes": p.sizes, "repeats": p.repeats, "imbalance": p.imbalance, "label_noise": p.label_noise, "seed": p.seed,
          "label_names": label_names, "cell": cell}
try:
    rows = sweep_tfidf(dataset["text"].to_list(), dataset["label"].to_numpy(), dataset["split"].to_numpy(),
                       n_classes=len(label_names), tfidf=p.tfidf, sizes=p.sizes, repeats=p.repeats, probe=p.probe,
                       seed=p.seed, imbalance=p.imbalance, label_noise=p.label_noise, report=report,
                       groups=data.groups_of(dataset))
except DataError as exc:
    raise DataError(f"TF-IDF sweep on {snakemake.input.data}: {exc}") from None
write_parquet(frame(rows, cell, SWEEP_SCHEMA), snakemake.output[0], report)
log.info("%d sweep rows written, %d draws skipped (cannot be cross-validated)", len(rows), report["n_skipped_draws"])

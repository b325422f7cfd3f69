"""Snakemake adapter: training-set size sweep of one feature cell or of the TF-IDF baseline (saeprobe.transfer)."""
from saeprobe import data as sdata
from saeprobe.errors import DataError
from saeprobe.io import setup_logging
from saeprobe.transfer import load_cell, sweep_features, sweep_tfidf
from saeprobe.transfer_tables import SWEEP_SCHEMA, frame, write_parquet

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
p = snakemake.params
kw = dict(sizes=p.sizes, repeats=p.repeats, probe=p.probe, seed=p.seed)
try:
    if snakemake.rule == "sweep_tfidf":
        data, label_names = sdata.read(snakemake.input.data)
        rows = sweep_tfidf(data["text"].to_list(), data["label"].to_numpy(), data["split"].to_numpy(),
                           n_classes=len(label_names), tfidf=p.tfidf, **kw)
        cell = dict(model=None, dataset=w.dataset, source="tfidf", layer=None, pooling=None, binarize=None)
    else:
        x, data, label_names = load_cell(snakemake.input.features, snakemake.input.data, w.binarize)
        rows = sweep_features(x, data["label"].to_numpy(), data["split"].to_numpy(), n_classes=len(label_names), **kw)
        cell = dict(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=w.pooling,
                    binarize=w.binarize)
except DataError as exc:
    raise DataError(f"sweep on {', '.join(map(str, snakemake.input))}: {exc}") from None
write_parquet(frame(rows, cell, SWEEP_SCHEMA), snakemake.output[0],
              {"sizes": p.sizes, "repeats": p.repeats, "seed": p.seed, "label_names": label_names})
log.info("%d sweep rows written", len(rows))

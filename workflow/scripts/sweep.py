"""Snakemake adapter: data-regime sweeps (size, class imbalance, label noise) of the cells of one feature store
(saeprobe.sweep)."""
from saeprobe import data
from saeprobe.cell_tables import frame, write_parquet
from saeprobe.errors import DataError
from saeprobe.io import atomic_path, setup_logging
from saeprobe.layout import cell_file
from saeprobe.pooling import load_cell
from saeprobe.sweep import sweep_features
from saeprobe.sweep_tables import SWEEP_SCHEMA

log = setup_logging(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
dataset, label_names = data.read(snakemake.input.data)
with atomic_path(snakemake.output[0], directory=True) as out:
    for pooling, binarize in p.cells:
        x = load_cell(snakemake.input.features, pooling, binarize, dataset.height)
        cell = dict(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=pooling,
                    binarize=binarize)
        # The cell in the report too: a cell whose every draw was skipped has no row to carry it.
        report = {"sizes": p.sizes, "repeats": p.repeats, "imbalance": p.imbalance, "label_noise": p.label_noise,
                  "seed": p.seed, "label_names": label_names, "cell": cell}
        try:
            rows = sweep_features(x, dataset["label"].to_numpy(), dataset["split"].to_numpy(),
                                  n_classes=len(label_names), sizes=p.sizes, repeats=p.repeats, probe=p.probe,
                                  seed=p.seed, imbalance=p.imbalance, label_noise=p.label_noise, report=report,
                                  groups=data.groups_of(dataset))
        except DataError as exc:
            raise DataError(f"sweep on {snakemake.input.features} {pooling}__{binarize}: {exc}") from None
        write_parquet(frame(rows, cell, SWEEP_SCHEMA), cell_file(str(out), pooling, binarize, "parquet"), report)
        log.info("%s__%s: %d sweep rows written, %d draws skipped (cannot be cross-validated)", pooling, binarize,
                 len(rows), report["n_skipped_draws"])

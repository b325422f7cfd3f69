"""Snakemake adapter: one cross-lingual transfer matrix (saeprobe.transfer.transfer_matrix)."""
from saeprobe.errors import DataError
from saeprobe.io import setup_logging
from saeprobe.transfer import load_cell, transfer_matrix
from saeprobe.transfer_tables import TRANSFER_SCHEMA, frame, write_parquet

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
x, data, label_names = load_cell(snakemake.input.features, snakemake.input.data, w.binarize)
try:
    rows, report = transfer_matrix(x, data["label"].to_numpy(), data["split"].to_numpy(), data["lang"].to_list(),
                                   n_classes=len(label_names), probe=snakemake.params.probe, seed=snakemake.params.seed)
except DataError as exc:
    raise DataError(f"transfer on {snakemake.input.features} ({snakemake.input.data}): {exc}") from None
cell = dict(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=w.pooling, binarize=w.binarize)
report.update(label_names=label_names, seed=snakemake.params.seed)
write_parquet(frame(rows, cell, TRANSFER_SCHEMA), snakemake.output[0], report)
log.info("%d train x %d test languages (%d train languages skipped: %s)", report["n_train_langs"],
         report["n_test_langs"], len(report["skipped_train_langs"]), report["skipped_train_langs"])

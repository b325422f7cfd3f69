"""Snakemake adapter: the cross-lingual transfer matrices of one feature store (saeprobe.transfer)."""
from saeprobe import data
from saeprobe.cell_tables import frame, write_parquet
from saeprobe.errors import DataError
from saeprobe.io import atomic_path, setup_logging
from saeprobe.layout import cell_file
from saeprobe.pooling import load_cell
from saeprobe.transfer import transfer_matrix
from saeprobe.transfer_tables import TRANSFER_SCHEMA

log = setup_logging(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
dataset, label_names = data.read(snakemake.input.data)
with atomic_path(snakemake.output[0], directory=True) as out:
    for pooling, binarize in p.cells:
        x = load_cell(snakemake.input.features, pooling, binarize, dataset.height)
        try:
            rows, report = transfer_matrix(x, dataset["label"].to_numpy(), dataset["split"].to_numpy(),
                                           dataset["lang"].to_list(), n_classes=len(label_names), probe=p.probe,
                                           seed=p.seed, groups=data.groups_of(dataset))
        except DataError as exc:
            raise DataError(f"transfer on {snakemake.input.features} {pooling}__{binarize} "
                            f"({snakemake.input.data}): {exc}") from None
        cell = dict(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=pooling,
                    binarize=binarize)
        report.update(label_names=label_names, seed=p.seed)
        write_parquet(frame(rows, cell, TRANSFER_SCHEMA), cell_file(str(out), pooling, binarize, "parquet"), report)
        log.info("%s__%s: %d train x %d test languages (%d train languages skipped: %s)", pooling, binarize,
                 report["n_train_langs"], report["n_test_langs"], len(report["skipped_train_langs"]),
                 report["skipped_train_langs"])

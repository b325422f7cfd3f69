"""Snakemake adapter: pool one feature store every way its stages need, in one pass (saeprobe.pooling)."""
from saeprobe.grid import HIDDEN
from saeprobe.io import atomic_path, setup_logging
from saeprobe.layout import cell_file
from saeprobe.pooling import pool_store_all, save_pooled
from saeprobe.store import ActivationStore, CodeStore

log = setup_logging(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
if w.source == HIDDEN:
    store, layer = ActivationStore(snakemake.input[0]), int(w.layer)
else:
    store, layer = CodeStore(snakemake.input[0]), None
matrices, stats = pool_store_all(store, p.poolings, exclude_special=p.exclude_special, layer=layer)
with atomic_path(snakemake.output[0], directory=True) as tmp:
    for pooling, matrix in matrices.items():
        save_pooled(cell_file(str(tmp), pooling), matrix)
        if stats[pooling]["n_empty_rows"]:
            log.warning("%s: %d of %d documents have an all-zero pooled row (no pooled token, or no feature fired)",
                        pooling, stats[pooling]["n_empty_rows"], stats[pooling]["n_docs"])
        log.info("pooled %s over %d documents: shape %s", pooling, stats[pooling]["n_docs"], matrix.shape)

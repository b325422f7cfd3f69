"""Snakemake adapter: pool token features per document (saeprobe.pooling)."""
from saeprobe.config import HIDDEN
from saeprobe.io import setup_logging
from saeprobe.pooling import pool_store, save_pooled
from saeprobe.store import ActivationStore, CodeStore

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
if w.source == HIDDEN:
    store, layer = ActivationStore(snakemake.input[0]), int(w.layer)
else:
    store, layer = CodeStore(snakemake.input[0]), None
matrix, stats = pool_store(store, w.pooling, exclude_special=snakemake.params.exclude_special, layer=layer)
save_pooled(snakemake.output[0], matrix)
if stats["n_empty_rows"]:
    log.warning("%d of %d documents have an all-zero pooled row (no pooled token, or no feature fired)",
                stats["n_empty_rows"], stats["n_docs"])
log.info("pooled %s over %d documents: shape %s", w.pooling, stats["n_docs"], matrix.shape)

"""Snakemake adapter: tokenize a prepared dataset for one model (saeprobe.tokenize)."""
import json

import pyarrow.parquet as pq

from saeprobe import data
from saeprobe.io import atomic_path, setup_logging
from saeprobe.models import load_tokenizer
from saeprobe.tokenize import tokenize, tokenizer_fingerprint

log = setup_logging(snakemake.log[0])
model = snakemake.wildcards.model
tokenizer = load_tokenizer(snakemake.params.source, model)
frame, _ = data.read(snakemake.input.data)
tokens = tokenize(frame["text"].to_list(), tokenizer, snakemake.params.max_length)
meta = {"tokenizer": type(tokenizer).__name__, "fingerprint": tokenizer_fingerprint(tokenizer),
        "max_length": snakemake.params.max_length}
table = tokens.to_arrow().replace_schema_metadata({b"saeprobe.tokenizer": json.dumps(meta).encode()})
with atomic_path(snakemake.output[0]) as tmp:
    pq.write_table(table, tmp)
log.info("%d documents, %d tokens (mean %.1f, max %d), %d truncated", tokens.height, int(tokens["n_tokens"].sum()),
         tokens["n_tokens"].mean(), tokens["n_tokens"].max(), int(tokens["truncated"].sum()))

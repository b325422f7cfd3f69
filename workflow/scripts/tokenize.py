"""Snakemake adapter: tokenize a prepared dataset for one model (saeprobe.tokenize)."""
from saeprobe import data, tokenize
from saeprobe.io import setup_logging
from saeprobe.models import load_tokenizer

log = setup_logging(snakemake.log[0])
max_length = snakemake.params.max_length
tokenizer = load_tokenizer(snakemake.params.source, snakemake.wildcards.model)
frame, _ = data.read(snakemake.input.data)
tokens = tokenize.tokenize(frame["text"].to_list(), tokenizer, max_length)
tokenize.write(tokens, tokenize.metadata(tokenizer, max_length), snakemake.output[0])
log.info("%d documents, %d tokens (mean %.1f, max %d), %d truncated", tokens.height, int(tokens["n_tokens"].sum()),
         tokens["n_tokens"].mean(), tokens["n_tokens"].max(), int(tokens["truncated"].sum()))

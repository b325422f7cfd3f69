"""Snakemake adapter: top SAE features of the best probes with their most activating contexts
(saeprobe.top_features)."""
import json

import polars as pl
import pyarrow.parquet as pq

from saeprobe import top_features as tf
from saeprobe import layout
from saeprobe.grid import ProbeCell, binarize_name
from saeprobe.data import LABEL_NAMES_KEY
from saeprobe.errors import DataError
from saeprobe.io import atomic_path, read_parquet, reading, setup_logging
from saeprobe.models import load_tokenizer
from saeprobe.probes import load_coef
from saeprobe.store import CodeStore

log = setup_logging(snakemake.log[0])
p = snakemake.params
settings = p.report
grid = read_parquet(snakemake.input.grid)
probes = tf.best_sae_probes(grid, p.datasets)
log.info("%d best SAE probes (one per dataset and SAE, chosen on CV macro F1)", probes.height)
inputs = {name: set(map(str, snakemake.input[name])) for name in ("probes", "codes", "data", "tokens")}


def declared(kind, path):
    """``path`` if it is one of this job's declared inputs of ``kind`` (else the plan and the layout disagree)."""
    if path not in inputs[kind]:
        raise RuntimeError(f"top_features: {path} is not among the declared {kind} inputs (saeprobe.grid.Plan)")
    return path


decoders = {}
rows = []
for probe in probes.iter_rows(named=True):
    cell = ProbeCell(probe["model"], probe["dataset"], probe["source"], probe["layer"], probe["pooling"],
                     binarize_name(probe["binarize"]))
    declared("probes", layout.unit_path(layout.PROBES, cell))
    coef_path = cell.file_in(layout.PROBES, "coef.npz")
    coef, _, label_names = load_coef(coef_path)
    data_path = declared("data", layout.path(layout.DATA, dataset=cell.dataset))
    with reading(data_path):
        stored_names = json.loads((pq.read_schema(data_path).metadata or {}).get(LABEL_NAMES_KEY, b"[]"))
        docs = pl.read_parquet(data_path, columns=["doc_id", "label", "split"])
    if stored_names and stored_names != label_names:
        raise DataError(f"{coef_path}: label names {label_names} differ from {data_path}'s {stored_names}")
    store = CodeStore(declared("codes", layout.path(layout.CODES, model=cell.model, dataset=cell.dataset,
                                                    sae=cell.source, layer=cell.layer)))
    tokens_path = decode = None
    if p.kinds[cell.dataset] == "text":
        tokens_path = declared("tokens", layout.path(layout.TOKENS, model=cell.model, dataset=cell.dataset))
        if cell.model not in decoders:
            decoders[cell.model] = tf.tokenizer_decoder(load_tokenizer(p.sources[cell.model], cell.model))
        decode = decoders[cell.model]
    sae = p.saes.get(cell.source, {})
    np_id = tf.neuronpedia_id(sae.get("release"), sae.get("sae_id", "").format(layer=cell.layer))
    new = tf.feature_rows(probe, coef, label_names, store, top_n=settings["top_features"], contexts=settings["contexts"],
                          context_tokens=settings["context_tokens"], exclude_special=p.exclude_special, docs=docs,
                          tokens_path=tokens_path, decode=decode, np_id=np_id)
    log.info("%s / %s: %s layer %d %s__%s -> %d features listed%s", cell.dataset, cell.source, cell.model, cell.layer,
             cell.pooling, cell.binarize, len(new), f" (Neuronpedia: {np_id})" if np_id else "")
    rows += new

df = tf.to_frame(rows)
note = ("Per dataset and SAE, the probe with the best CV macro F1 (never chosen on test). Per class, the features with "
        f"the largest probe weights (MaxAbs-scaled feature space; binary probes: positive weights -> the second class, "
        f"negative -> the first), each with its {settings['contexts']} most activating documents (strongest token, "
        f"«marked», {settings['context_tokens']} tokens either side). 'fires in class / elsewhere' = share of documents "
        "of the class / of the other classes in which the feature is active at least once.")
with atomic_path(snakemake.output.parquet) as tmp:
    df.write_parquet(tmp)
with atomic_path(snakemake.output.md) as tmp:
    tmp.write_text(tf.markdown(df))
with atomic_path(snakemake.output.html) as tmp:
    tmp.write_text(tf.html_page(df, note=note))
log.info("%d feature rows written", df.height)

"""Snakemake adapter: TF-IDF bag-of-words baseline on the same splits (saeprobe.probes)."""
from saeprobe import data, predictions
from saeprobe.io import setup_logging, write_json
from saeprobe.probes import fit_tfidf

log = setup_logging(snakemake.log[0])
frame, label_names = data.read(snakemake.input[0])
tfidf = {k: v for k, v in snakemake.params.tfidf.items() if k != "enabled"}
y, split, doc_id = data.label_arrays(frame)
result = fit_tfidf(frame["text"].to_list(), y, split, n_classes=len(label_names), seed=snakemake.params.seed, groups=data.groups_of(frame), **tfidf,
                   **snakemake.params.probe)
result.update(model=None, dataset=snakemake.wildcards.dataset, source="tfidf", layer=None, pooling=None,
              binarize=None, label_names=label_names, tfidf=tfidf, seed=snakemake.params.seed)
arrays = predictions.finish(result, y, split, doc_id, len(label_names), **snakemake.params.bootstrap,
                            seed=snakemake.params.seed)
predictions.save(snakemake.output.predictions, arrays)
write_json(snakemake.output.result, result)
log.info("TF-IDF: C=%g cv macro F1 %.3f; test macro F1 %.3f", result["C"], result["cv_macro_f1"], result["test"]["macro_f1"])

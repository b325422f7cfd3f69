"""Snakemake adapter: the strong baselines of the cells of one feature store (saeprobe.baselines)."""
from saeprobe import data, predictions
from saeprobe.baselines import fit_baseline
from saeprobe.grid import parse_binarize
from saeprobe.io import atomic_path, setup_logging, write_json
from saeprobe.layout import cell_file
from saeprobe.pooling import load_cell

log = setup_logging(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
frame, label_names = data.read(snakemake.input.data)
y, split, doc_id = data.label_arrays(frame)
with atomic_path(snakemake.output[0], directory=True) as out:
    for pooling, binarize in p.cells:
        x = load_cell(snakemake.input.features, pooling, binarize, frame.height)
        for method in p.methods:
            result = fit_baseline(method, x, y, split, n_classes=len(label_names), seed=p.seed, cv_folds=p.cv_folds,
                                  groups=data.groups_of(frame))
            arrays = predictions.finish(result, y, split, doc_id, len(label_names), **p.bootstrap, seed=p.seed)
            predictions.save(cell_file(str(out), pooling, binarize, f"{method}.predictions.npz"), arrays)
            result.update(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=pooling,
                          binarize=binarize, threshold=parse_binarize(binarize), label_names=label_names, seed=p.seed)
            write_json(cell_file(str(out), pooling, binarize, f"{method}.json"), result)
            test = result["test"]
            log.info("%s__%s %s %s: cv macro F1 %.3f; test macro F1 %.3f [%.3f, %.3f]", pooling, binarize, method,
                     result["params"], result["cv_macro_f1"], test["macro_f1"], *test["macro_f1_ci"])

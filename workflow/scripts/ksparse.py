"""Snakemake adapter: k-sparse probes of the cells of one feature store, every ranking and k (saeprobe.ksparse)."""
from saeprobe import data, predictions
from saeprobe.grid import parse_binarize
from saeprobe.io import atomic_path, setup_logging, write_json
from saeprobe.ksparse import fit_ksparse
from saeprobe.layout import cell_file
from saeprobe.pooling import load_cell

log = setup_logging(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
frame, label_names = data.read(snakemake.input.data)
y, split, doc_id = data.label_arrays(frame)
groups = data.groups_of(frame)  # group_column: every k's CV folds keep each group whole
with atomic_path(snakemake.output[0], directory=True) as out:
    for pooling, binarize in p.cells:
        x = load_cell(snakemake.input.features, pooling, binarize, frame.height)
        for ranking in p.rankings:
            probes = fit_ksparse(x, y, split, ranking=ranking, ks=p.ks, n_classes=len(label_names), probe=p.probe,
                                 seed=p.seed, groups=groups)
            arrays = {}
            for probe in probes:
                arrays.update(predictions.finish(probe, y, split, doc_id, len(label_names), **p.bootstrap, seed=p.seed,
                                                 prefix=f"k{probe['k']}."))
                log.info("%s__%s %s k=%d: cv macro F1 %.3f; test macro F1 %.3f [%.3f, %.3f]", pooling, binarize, ranking,
                         probe["k"], probe["cv_macro_f1"], probe["test"]["macro_f1"], *probe["test"]["macro_f1_ci"])
            predictions.save(cell_file(str(out), pooling, binarize, f"{ranking}.predictions.npz"), arrays)
            write_json(cell_file(str(out), pooling, binarize, f"{ranking}.json"),
                       dict(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=pooling,
                            binarize=binarize, threshold=parse_binarize(binarize), ranking=ranking,
                            label_names=label_names, seed=p.seed, probes=probes))

"""Snakemake adapter: fit the linear probes of one feature store, C chosen by CV per cell (saeprobe.probes)."""
import numpy as np

from saeprobe import data, predictions
from saeprobe.grid import parse_binarize
from saeprobe.io import atomic_path, setup_logging, write_json
from saeprobe.layout import cell_file
from saeprobe.pooling import load_cell
from saeprobe.cell_tables import frame as frame_of
from saeprobe.cell_tables import write_parquet
from saeprobe.probes import fit_on_splits, fit_probe, save_coef
from saeprobe.tables import SPLIT_SCHEMA

log = setup_logging(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
frame, label_names = data.read(snakemake.input.data)
y, split, doc_id = data.label_arrays(frame)
groups = data.groups_of(frame)
if p.split_seeds:  # probe.split_seeds: the same cells on each re-drawn split (text datasets; image ones have none)
    redrawn = data.read_splits(snakemake.input.splits) if snakemake.input.splits else None
    splits = {s: redrawn[data.split_column(s)].to_numpy() for s in p.split_seeds} if redrawn is not None else {}
    for s in [s for s, drawn in splits.items() if np.array_equal(drawn, split)]:  # e.g. the run's own seed
        log.warning("split seed %d draws the dataset's own split again: left out (the own split is counted once)", s)
        del splits[s]
with atomic_path(snakemake.output[0], directory=True) as out:
    for pooling, binarize in p.cells:
        x = load_cell(snakemake.input.features, pooling, binarize, frame.height)
        result, coef, intercept = fit_probe(x, y, split, n_classes=len(label_names), seed=p.seed, groups=groups,
                                            **p.probe)
        arrays = predictions.finish(result, y, split, doc_id, len(label_names), **p.bootstrap, seed=p.seed)
        predictions.save(cell_file(str(out), pooling, binarize, "predictions.npz"), arrays)
        if p.split_seeds and redrawn is not None:  # the dataset's own split (split_seed null) and the re-drawn ones
            rows = fit_on_splits(x, y, splits, own=result, n_classes=len(label_names), seed=p.seed, groups=groups,
                                 **p.probe)
            cell = dict(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=pooling,
                        binarize=binarize)
            write_parquet(frame_of(rows, cell, SPLIT_SCHEMA), cell_file(str(out), pooling, binarize, "splits.parquet"))
        result.update(model=w.model, dataset=w.dataset, source=w.source, layer=int(w.layer), pooling=pooling,
                      binarize=binarize, threshold=parse_binarize(binarize), label_names=label_names, seed=p.seed)
        save_coef(cell_file(str(out), pooling, binarize, "coef.npz"), coef, intercept, label_names)
        write_json(cell_file(str(out), pooling, binarize, "json"), result)
        for split_name in ("validation", "test"):
            missing = (result.get(split_name) or {}).get("missing_classes")
            if missing:
                log.warning("%s__%s: the %s split has no rows of classes %s: its macro F1 averages over all %d "
                            "classes, these count 0", pooling, binarize, split_name,
                            [label_names[i] for i in missing], len(label_names))
        test = result["test"]
        log.info("%s__%s: C=%g cv macro F1 %.3f; test macro F1 %.3f [%.3f, %.3f], accuracy %.3f (majority class: "
                 "macro F1 %.3f, accuracy %.3f)", pooling, binarize, result["C"], result["cv_macro_f1"], test["macro_f1"],
                 *test["macro_f1_ci"], test["accuracy"], test["majority_macro_f1"], test["majority_accuracy"])

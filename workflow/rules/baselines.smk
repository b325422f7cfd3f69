# Strong baselines (saeprobe.baselines): one job per feature store fits every baseline of every
# cell of `baselines:` on it, hyper-parameters by CV on the train split; the tables rule
# gathers them into grid.* (column `probe`) and compares them with the SAE probes.
rule baselines:
    input:
        features=sl.POOLED,
        data=sl.DATA,
    output:
        directory(sl.BASELINES),
    params:
        cells=unit_cells("baselines"),
        methods=lambda w: sg.baseline_methods(config, w.source),
        cv_folds=config["probe"]["cv_folds"],
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        ENV
    log:
        sl.log("baselines", sl.UNIT),
    benchmark:
        sl.benchmark("baselines", sl.UNIT)
    script:
        "../scripts/baselines.py"

rule extract_activations:
    input:
        tokens="results/tokens/{model}/{dataset}.parquet",
        model=model_files,
    output:
        directory("results/activations/{model}/{dataset}.zarr"),
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        settings=lambda w: extraction_settings(w.model),
        rerun_on_weights=lambda w: weights_fingerprint(w.model),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=360,
    conda:
        ENV
    log:
        "results/logs/extract_activations/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_activations/{model}/{dataset}.tsv"
    script:
        "../scripts/extract_activations.py"

rule extract_activations:
    input:
        "results/tokens/{model}/{dataset}.parquet",
    output:
        directory("results/activations/{model}/{dataset}.zarr"),
    params:
        settings=lambda w: extraction_settings(w.model),
    threads: workflow.cores
    resources:
        gpu=GPU,
        mem_mb=8000,
    conda:
        ENV
    log:
        "results/logs/extract_activations/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_activations/{model}/{dataset}.tsv"
    script:
        "../scripts/extract_activations.py"

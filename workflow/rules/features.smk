rule pool:
    input:
        pooled_source,
    output:
        "results/pooled/{model}/{dataset}/{source}/layer_{layer}/{pooling}.npz",
    params:
        exclude_special=config["features"]["exclude_special_tokens"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    log:
        "results/logs/pool/{model}/{dataset}/{source}/layer_{layer}/{pooling}.log",
    benchmark:
        "results/benchmarks/pool/{model}/{dataset}/{source}/layer_{layer}/{pooling}.tsv"
    script:
        "../scripts/pool.py"

rule prepare_dataset:
    input:
        lambda w: config["datasets"][w.dataset].get("path", []),
    output:
        "results/data/{dataset}.parquet",
    params:
        spec=lambda w: config["datasets"][w.dataset],
        seed=config["seed"],
    conda:
        ENV
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    script:
        "../scripts/prepare_dataset.py"


rule tokenize:
    input:
        "results/data/{dataset}.parquet",
    output:
        "results/tokens/{model}/{dataset}.parquet",
    params:
        source=lambda w: model_source(w.model),
        max_length=lambda w: config["models"][w.model]["max_length"],
    conda:
        ENV
    log:
        "results/logs/tokenize/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/tokenize/{model}/{dataset}.tsv"
    script:
        "../scripts/tokenize.py"

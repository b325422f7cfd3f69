rule prepare_dataset:
    input:
        lambda w: config["datasets"][w.dataset].get("path", []),
    output:
        "results/data/{dataset}.parquet",
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        spec=lambda w: dataset_settings(w.dataset),
        seed=config["seed"],
    resources:
        runtime=30,
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
        data="results/data/{dataset}.parquet",
        model=model_files,
    output:
        "results/tokens/{model}/{dataset}.parquet",
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        source=lambda w: model_source(w.model),
        max_length=lambda w: config["models"][w.model]["max_length"],
        rerun_on_weights=lambda w: weights_fingerprint(w.model),
    resources:
        runtime=60,
    conda:
        ENV
    log:
        "results/logs/tokenize/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/tokenize/{model}/{dataset}.tsv"
    script:
        "../scripts/tokenize.py"


rule init_random_model:
    output:
        directory("results/models/{model}"),
    wildcard_constraints:
        model=RANDOM_MODELS,
    params:
        spec=lambda w: config["models"][w.model]["random"],
        rerun_on_tokenizer=lambda w: random_tokenizer_fingerprint(w.model),
    resources:
        runtime=30,
    conda:
        ENV
    log:
        "results/logs/init_random_model/{model}.log",
    benchmark:
        "results/benchmarks/init_random_model/{model}.tsv"
    script:
        "../scripts/init_random_model.py"

rule fit_probe:
    input:
        features="results/pooled/{model}/{dataset}/{source}/layer_{layer}/{pooling}.npz",
        data="results/data/{dataset}.parquet",
    output:
        result="results/probes/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.json",
        coef="results/probes/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.coef.npz",
    params:
        probe=config["probe"],
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        "results/logs/fit_probe/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.log",
    benchmark:
        "results/benchmarks/fit_probe/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.tsv"
    script:
        "../scripts/fit_probe.py"


rule fit_tfidf:
    input:
        "results/data/{dataset}.parquet",
    output:
        "results/probes/tfidf/{dataset}.json",
    params:
        tfidf=config["tfidf"],
        probe=config["probe"],
        seed=config["seed"],
    resources:
        runtime=60,
    conda:
        ENV
    log:
        "results/logs/fit_tfidf/{dataset}.log",
    benchmark:
        "results/benchmarks/fit_tfidf/{dataset}.tsv"
    script:
        "../scripts/fit_tfidf.py"

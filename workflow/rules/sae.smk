rule train_sae:
    input:
        activations=lambda w: expand(
            "results/activations/{model}/{dataset}.zarr",
            model=model_of(w.sae),
            dataset=sc.sae_train_datasets(config, w.sae),
        ),
        data=lambda w: expand("results/data/{dataset}.parquet", dataset=sc.sae_train_datasets(config, w.sae)),
    output:
        directory("results/saes/{sae}/layer_{layer}"),
    params:
        train=lambda w: config["saes"][w.sae]["train"],
        seed=config["seed"],
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=360,
    conda:
        ENV
    log:
        "results/logs/train_sae/{sae}/layer_{layer}.log",
    benchmark:
        "results/benchmarks/train_sae/{sae}/layer_{layer}.tsv"
    script:
        "../scripts/train_sae.py"


rule encode_sae:
    input:
        activations="results/activations/{model}/{dataset}.zarr",
        data="results/data/{dataset}.parquet",
        sae=sae_inputs,
    output:
        directory("results/features/{model}/{dataset}/{sae}/layer_{layer}.zarr"),
    params:
        sae=lambda w: sae_settings(w.sae),
        rerun_on_weights=lambda w: sae_weights_fingerprint(w.sae, w.layer),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=180,
    conda:
        ENV
    log:
        "results/logs/encode_sae/{model}/{dataset}/{sae}/layer_{layer}.log",
    benchmark:
        "results/benchmarks/encode_sae/{model}/{dataset}/{sae}/layer_{layer}.tsv"
    script:
        "../scripts/encode_sae.py"

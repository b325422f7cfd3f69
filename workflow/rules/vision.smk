# Visual classification: images through a vision-language model's language-model residual stream.
# prepare_images -> extract_image_activations write the same files as prepare_dataset ->
# extract_activations do for text, so train_sae, encode_sae, pool and fit_probe run unchanged.


rule prepare_images:
    input:
        lambda w: config["datasets"][w.dataset].get("path", []),
    output:
        "results/data/{dataset}.parquet",
    wildcard_constraints:
        dataset=IMAGE_DATASETS,
    params:
        spec=lambda w: dataset_settings(w.dataset),
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    log:
        "results/logs/prepare_images/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_images/{dataset}.tsv"
    script:
        "../scripts/prepare_images.py"


rule extract_image_activations:
    input:
        data="results/data/{dataset}.parquet",
        model=model_files,
    output:
        directory("results/activations/{model}/{dataset}.zarr"),
    wildcard_constraints:
        dataset=IMAGE_DATASETS,
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
        "results/logs/extract_image_activations/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_image_activations/{model}/{dataset}.tsv"
    script:
        "../scripts/extract_image_activations.py"

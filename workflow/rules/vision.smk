# Visual classification: images through a vision-language model's language-model residual stream.
# prepare_images -> extract_image_activations write the same files as prepare_dataset ->
# extract_activations do for text, so train_sae, encode_sae, pool and fit_probe run unchanged.


rule prepare_images:
    input:
        lambda w: config["datasets"][w.dataset].get("path", []),
    output:
        sl.DATA,
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
        sl.log("prepare_images", "{dataset}"),
    benchmark:
        sl.benchmark("prepare_images", "{dataset}")
    script:
        "../scripts/prepare_images.py"


rule extract_image_activations:
    input:
        data=sl.DATA,
        model=model_files,
    output:
        directory(sl.ACTIVATIONS),
    wildcard_constraints:
        dataset=IMAGE_DATASETS,
    params:
        settings=lambda w: extraction_settings(w.model),
        rerun_on_weights=lambda w: weights_fingerprint(w.model),
        runtime=runtime(device=config["device"], token_budget=lambda w: config["models"][w.model]["token_budget"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=model_mem_mb("vision"),
        runtime=model_runtime("vision"),
    conda:
        ENV
    log:
        sl.log("extract_image_activations", "{model}/{dataset}"),
    benchmark:
        sl.benchmark("extract_image_activations", "{model}/{dataset}")
    script:
        "../scripts/extract_image_activations.py"

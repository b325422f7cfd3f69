rule train_sae:
    input:
        activations=lambda w: expand(
            sl.ACTIVATIONS,
            model=model_of(w.sae),
            dataset=sg.sae_train_datasets(config, w.sae),
        ),
        data=lambda w: expand(sl.DATA, dataset=sg.sae_train_datasets(config, w.sae)),
    output:
        directory(sl.SAE),
    params:
        train=lambda w: config["saes"][w.sae]["train"],
        seed=config["seed"],
        datasets=lambda w: sg.sae_train_datasets(config, w.sae),
        runtime=runtime(device=config["device"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=360,
    conda:
        ENV
    log:
        sl.log("train_sae", "{sae}/layer_{layer}"),
    benchmark:
        sl.benchmark("train_sae", "{sae}/layer_{layer}")
    script:
        "../scripts/train_sae.py"


rule encode_sae:
    input:
        activations=sl.ACTIVATIONS,
        data=sl.DATA,
        sae=sae_inputs,
    output:
        directory(sl.CODES),
    params:
        sae=lambda w: sae_settings(w.sae),
        rerun_on_weights=lambda w: sae_weights_fingerprint(w.sae, w.layer),
        runtime=runtime(device=config["device"], batch_size=lambda w: config["saes"][w.sae]["batch_size"],
                        encode_dtype=lambda w: config["saes"][w.sae]["encode_dtype"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=180,
    conda:
        ENV
    log:
        sl.log("encode_sae", "{model}/{dataset}/{sae}/layer_{layer}"),
    benchmark:
        sl.benchmark("encode_sae", "{model}/{dataset}/{sae}/layer_{layer}")
    script:
        "../scripts/encode_sae.py"

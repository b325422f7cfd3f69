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
        train=lambda w: sg.train_settings(config, w.sae),
        seed=config["seed"],
        datasets=lambda w: sg.sae_train_datasets(config, w.sae),
        runtime=runtime(device=config["device"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=sae_mem_mb(train=True),
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
        sae=lambda w: sg.encode_settings(config, w.sae),
        hook_check=lambda w: config["saes"][w.sae]["hook_check"],
        rerun_on_weights=lambda w: sae_weights_fingerprint(w.sae, w.layer),
        runtime=runtime(device=config["device"], batch_size=lambda w: config["saes"][w.sae]["batch_size"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=sae_mem_mb(train=False),
        runtime=180,
    conda:
        ENV
    log:
        sl.log("encode_sae", "{model}/{dataset}/{sae}/layer_{layer}"),
    benchmark:
        sl.benchmark("encode_sae", "{model}/{dataset}/{sae}/layer_{layer}")
    script:
        "../scripts/encode_sae.py"


rule sae_quality:
    input:
        unpack(quality_inputs),
    output:
        sl.SAE_QUALITY,
    params:
        sae=lambda w: sg.encode_settings(config, w.sae),
        hook_check=lambda w: config["saes"][w.sae]["hook_check"],
        model=lambda w: config["models"][model_of(w.sae)],
        datasets=lambda w: sg.sae_quality_datasets(config, w.sae),
        loss_datasets=lambda w: sg.sae_loss_datasets(config, w.sae),
        settings=config["sae_quality"],
        seed=config["seed"],
        rerun_on_weights=lambda w: {"sae": sae_weights_fingerprint(w.sae, w.layer),
                                    "model": weights_fingerprint(model_of(w.sae))},
        runtime=runtime(device=config["device"], token_budget=lambda w: config["models"][model_of(w.sae)]["token_budget"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=model_mem_mb("base", lambda w: model_of(w.sae)),  # the language model, for the spliced loss
        runtime=model_runtime("base", lambda w: model_of(w.sae)),
    conda:
        ENV
    log:
        sl.log("sae_quality", "{sae}/layer_{layer}"),
    benchmark:
        sl.benchmark("sae_quality", "{sae}/layer_{layer}")
    script:
        "../scripts/sae_quality.py"


rule sae_table:
    input:
        unpack(PLAN.sae_table_inputs),
    output:
        sl.tables("saes"),
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        quality=PLAN.sae_quality_inputs,
    resources:
        runtime=15,
    conda:
        ENV
    log:
        sl.log("sae_table"),
    benchmark:
        sl.benchmark("sae_table")
    script:
        "../scripts/sae_table.py"

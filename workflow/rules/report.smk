# Figures, top SAE features, and what the Snakemake report (`make report`) shows. Which
# figures, pages and top-feature cells exist is decided from the config alone (saeprobe.grid.Plan),
# so every output is known when the DAG is built; rules whose list is empty are simply never
# asked for. Captions live in workflow/report/ (paths below are relative to this file); the
# report's front page is workflow/report/workflow.rst.
FIGURE_SUBCATEGORY = {"grid": "Probe grid", "transfer": "Cross-lingual transfer", "sweep": "Data size and regimes",
                      "behaviour": "Behaviour", "ksparse": "k-sparse probing", "binarize_vs_ksparse": "k-sparse probing",
                      "saes": "Which SAE"}
FIGURE_CAPTIONS = {name: "transfer" if table == "transfer" else name for name, table in PLAN.figures.items()}


rule figures:
    input:
        **{table: sl.path(sl.TABLE, name=table, ext="parquet") for table in dict.fromkeys(PLAN.figures.values())},
    output:
        # The PNG is shown in the report with its caption; the SVG is for papers.
        [report(sl.path(sl.FIGURE, name=name, ext="png"), caption=f"../report/{FIGURE_CAPTIONS[name]}.rst",
                category="Figures", subcategory=FIGURE_SUBCATEGORY[table], labels={"figure": name})
         for name, table in PLAN.figures.items()],
        [sl.path(sl.FIGURE, name=name, ext="svg") for name in PLAN.figures],
    params:
        names=list(PLAN.figures),
    resources:
        mem_mb=2000,
    conda:
        ENV
    log:
        sl.log("figures"),
    benchmark:
        sl.benchmark("figures")
    script:
        "../scripts/figures.py"


rule top_features:
    input:
        # Which probe is best is known only once grid.parquet exists: every SAE unit's files are inputs.
        **PLAN.top_feature_inputs(),
    output:
        parquet=sl.path(sl.TOP_FEATURES, ext="parquet"),
        md=sl.path(sl.TOP_FEATURES, ext="md"),
        html=report(sl.path(sl.TOP_FEATURES, ext="html"), caption="../report/top_features.rst",
                    category="Top SAE features"),
    params:
        report=config["report"],
        exclude_special=config["features"]["exclude_special_tokens"],
        datasets=sg.grid_datasets(config),
        kinds={d: sg.dataset_kind(config, d) for d in sg.grid_datasets(config)},
        sources={m: model_source(m) for m in sorted({c.model for c in PLAN.top_feature_cells})},
        # Its tokenizers (a lambda: evaluated for this job only, not at every parse).
        rerun_on_weights=lambda w: {m: weights_fingerprint(m) for m in sorted({c.model for c in PLAN.top_feature_cells})},
        saes={s: {k: config["saes"][s][k] for k in ("release", "sae_id") if k in config["saes"][s]}
              for s in sorted({c.source for c in PLAN.top_feature_cells})},
    resources:
        mem_mb=4000,
    conda:
        ENV
    log:
        sl.log("top_features"),
    benchmark:
        sl.benchmark("top_features")
    script:
        "../scripts/top_features.py"


rule report_tables:
    input:
        **PLAN.report_pages,
        # CSV downloads offered in the report beside the pages.
        **{f"{name}_csv": report(path, caption=f"../report/{name}_csv.rst", category="Tables",
                                 subcategory="Downloads (CSV)") for name, path in PLAN.report_downloads.items()},
    output:
        **{name: report(sl.path(sl.REPORT_PAGE, name=name), caption=f"../report/table_{name}.rst", category="Tables",
                        subcategory="Summary tables") for name in PLAN.report_pages},
    params:
        names=list(PLAN.report_pages),
    conda:
        ENV
    log:
        sl.log("report_tables"),
    benchmark:
        sl.benchmark("report_tables")
    script:
        "../scripts/report_tables.py"

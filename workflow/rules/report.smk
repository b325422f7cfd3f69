# Tables, figures, top SAE features, and what `snakemake --report results/report.html` shows.
# Which figures exist is decided from the config alone (saeprobe.report.figure_plan), so every
# output is known when the DAG is built. Captions live in workflow/report/ (paths below are
# relative to this file); the report's front page is workflow/report/workflow.rst.
import saeprobe.report as sr


rule tables:
    input:
        sc.probe_targets(config),
    output:
        TABLES,
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        probes=sc.probe_targets(config),
    resources:
        runtime=15,
    conda:
        ENV
    log:
        "results/logs/tables.log",
    benchmark:
        "results/benchmarks/tables/tables.tsv"
    script:
        "../scripts/tables.py"


# --------------------------------------------------------------------------- figures

FIGURES = sr.figure_plan(config)
FIGURE_SUBCATEGORY = {"grid": "Probe grid", "transfer": "Cross-lingual transfer", "sweep": "Training-set size",
                      "behaviour": "Behaviour"}
FIGURE_CAPTIONS = {name: "transfer" if table == "transfer" else name for name, table in FIGURES.items()}


if FIGURES:
    TARGETS += expand("results/figures/{name}.{ext}", name=list(FIGURES), ext=["png", "svg"])

    rule figures:
        input:
            **{table: sr.TABLE_PATHS[table] for table in dict.fromkeys(FIGURES.values())},
        output:
            # The PNG is shown in the report with its caption; the SVG is for papers.
            [report(f"results/figures/{name}.png", caption=f"../report/{FIGURE_CAPTIONS[name]}.rst", category="Figures",
                    subcategory=FIGURE_SUBCATEGORY[table], labels={"figure": name}) for name, table in FIGURES.items()],
            [f"results/figures/{name}.svg" for name in FIGURES],
        params:
            names=list(FIGURES),
        resources:
            mem_mb=2000,
        conda:
            ENV
        log:
            "results/logs/figures.log",
        benchmark:
            "results/benchmarks/figures/figures.tsv"
        script:
            "../scripts/figures.py"


# --------------------------------------------------------------------------- top SAE features

TOP_CELLS = sr.top_feature_cells(config)


TOP_FEATURES = expand("results/tables/top_features.{ext}", ext=["parquet", "md", "html"])

if TOP_CELLS:
    TARGETS += TOP_FEATURES

    rule top_features:
        input:
            # Which probe is best is known only once grid.parquet exists: every SAE cell's files are inputs.
            **sr.top_feature_inputs(config),
        output:
            parquet="results/tables/top_features.parquet",
            md="results/tables/top_features.md",
            html=report("results/tables/top_features.html", caption="../report/top_features.rst",
                        category="Top SAE features"),
        params:
            report=config["report"],
            exclude_special=config["features"]["exclude_special_tokens"],
            datasets=sc.grid_datasets(config),
            kinds={d: sc.dataset_kind(config, d) for d in sc.grid_datasets(config)},
            sources={m: model_source(m) for m in sorted({c.model for c in TOP_CELLS})},
            # Its tokenizers (a lambda: evaluated for this job only, not at every parse).
            rerun_on_weights=lambda w: {m: weights_fingerprint(m) for m in sorted({c.model for c in TOP_CELLS})},
            saes={s: {k: config["saes"][s][k] for k in ("release", "sae_id") if k in config["saes"][s]}
                  for s in sorted({c.source for c in TOP_CELLS})},
        resources:
            mem_mb=4000,
        conda:
            ENV
        log:
            "results/logs/top_features.log",
        benchmark:
            "results/benchmarks/top_features/top_features.tsv"
        script:
            "../scripts/top_features.py"


# --------------------------------------------------------------------------- tables as report pages

REPORT_TABLES = {"best": "results/tables/best.parquet"}
if config.get("behaviour"):
    REPORT_TABLES["behaviour"] = "results/tables/behaviour.parquet"
if sc.transfer_targets(config):
    REPORT_TABLES["transfer"] = "results/tables/transfer.parquet"
# CSV downloads offered in the report beside the pages (flagged inputs of report_tables).
REPORT_DOWNLOADS = {"grid": "results/tables/grid.csv"}
if sc.sweep_targets(config):
    REPORT_DOWNLOADS["sweep"] = "results/tables/sweep.csv"

TARGETS += [f"results/report/{name}.html" for name in REPORT_TABLES]


rule report_tables:
    input:
        **REPORT_TABLES,
        **{f"{name}_csv": report(path, caption=f"../report/{name}_csv.rst", category="Tables",
                                 subcategory="Downloads (CSV)") for name, path in REPORT_DOWNLOADS.items()},
    output:
        **{name: report(f"results/report/{name}.html", caption=f"../report/table_{name}.rst", category="Tables",
                        subcategory="Summary tables") for name in REPORT_TABLES},
    params:
        names=list(REPORT_TABLES),
    conda:
        ENV
    log:
        "results/logs/report_tables.log",
    benchmark:
        "results/benchmarks/report_tables/report_tables.tsv"
    script:
        "../scripts/report_tables.py"

"""Figures: each figure function draws synthetic tables of the documented schemas into PNG + SVG;
selection inside figures is on CV; the set of figures follows the config; output is reproducible."""

from __future__ import annotations

import copy
from itertools import product
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from saeprobe import config as sc
from saeprobe import grid as sg
from saeprobe import figures
from saeprobe.tables import GRID_COLUMNS


def synthetic_grid(seed: int = 0, widths: tuple[int, ...] = (64, 1024)) -> pl.DataFrame:
    """A grid.parquet-like frame: 2 datasets x 2 models x SAE widths x layers x poolings x binarize,
    hidden states, and TF-IDF."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds, model in product(["jailbreak", "trec"], ["m1", "m2"]):
        for width, layer, pooling, binarize in product(widths, [1, 3], ["mean", "top20"], ["raw", "gt1"]):
            rows.append(dict(dataset=ds, model=model, family="sae", source=f"{model}_sae{width}", layer=layer,
                             pooling=pooling, binarize=binarize, n_features=width))
        for layer, pooling in product([1, 3], ["mean", "last"]):
            rows.append(dict(dataset=ds, model=model, family="hidden", source="hidden", layer=layer, pooling=pooling,
                             binarize="raw", n_features=32))
    for ds in ["jailbreak", "trec"]:
        rows.append(dict(dataset=ds, model=None, family="tfidf", source="tfidf", layer=None, pooling=None,
                         binarize=None, n_features=500))
    df = pl.DataFrame(rows)
    n = df.height
    df = df.with_columns(
        C=pl.lit(1.0), cv_macro_f1=pl.Series(rng.uniform(0.5, 0.95, n)), cv_macro_f1_std=pl.lit(0.01),
        test_macro_f1=pl.Series(rng.uniform(0.5, 0.95, n)), test_accuracy=pl.Series(rng.uniform(0.5, 0.95, n)),
        test_auroc=pl.lit(None, pl.Float64), validation_macro_f1=pl.lit(None, pl.Float64), n_train=pl.lit(60),
        n_test=pl.lit(30), mean_active_features=pl.lit(5.0), test_missing_classes=pl.lit(0),
        probe=pl.lit("logreg"), binarize=pl.col("binarize").replace_strict({"raw": None, "gt1": 1.0}, default=None,
                                                                             return_dtype=pl.Float64),
    )
    df = df.with_columns(test_macro_f1_lo=pl.col("test_macro_f1") - 0.05, test_macro_f1_hi=pl.col("test_macro_f1") + 0.04)
    return df.with_columns(pl.lit(None).alias(c) for c in GRID_COLUMNS if c not in df.columns).select(GRID_COLUMNS)


def synthetic_ksparse() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for ds, (family, source), ranking, layer, k in product(["jailbreak", "trec"], [("sae", "m1_sae"), ("hidden", "hidden")],
                                                           ["mean_diff", "l1"], [1, 3], [1, 2, 5, 10, 50]):
        f1 = float(min(0.95, 0.5 + 0.08 * np.log(k) + rng.uniform(0, 0.05)))
        rows.append(dict(dataset=ds, model="m1", family=family, source=source, layer=layer, pooling="mean", binarize=None,
                         ranking=ranking, k=k, cv_macro_f1=f1 + rng.uniform(-0.02, 0.02), cv_macro_f1_se=0.005,
                         test_macro_f1=f1,
                         test_macro_f1_lo=f1 - 0.04, test_macro_f1_hi=min(1.0, f1 + 0.03)))
    return pl.DataFrame(rows, schema_overrides={"binarize": pl.Float64})


def synthetic_versus() -> pl.DataFrame:
    rows = []
    for ds, ranking, k in product(["jailbreak", "trec"], ["mean_diff", "l1"], [1, 2, 5, 10, 50]):
        rows.append(dict(dataset=ds, model="m1", source="m1_sae", layer=1, pooling="top20", threshold=1.0, ranking=ranking,
                         k=k, matched=k == 10, binarized_cv_macro_f1=0.8, binarized_cv_macro_f1_se=0.01,
                         binarized_n_features=64, binarized_mean_active_features=8.0, binarized_test_macro_f1=0.82,
                         binarized_test_macro_f1_lo=0.78, binarized_test_macro_f1_hi=0.86,
                         ksparse_test_macro_f1=0.55 + 0.06 * np.log(k), difference=0.1, ci_lo=0.02, ci_hi=0.2))
    return pl.DataFrame(rows)


@pytest.mark.parametrize("name", ["ksparse", "binarize_vs_ksparse"])
def test_ksparse_figures(tmp_path, name):
    tables = {"ksparse": synthetic_ksparse(), "binarize_vs_ksparse": synthetic_versus()}
    fig = figures.make(name, tables)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == (4 if name == "ksparse" else 2)
    _check_written(fig, tmp_path / name)
    empty = figures.make(name, {k: v.clear() for k, v in tables.items()})
    assert "no rows" in empty.axes[0].texts[0].get_text()


def synthetic_transfer() -> pl.DataFrame:
    rows = []
    rng = np.random.default_rng(1)
    for ds, langs in (("tweets", ["en", "de", "fr"]), ("offensive", ["en", "de"])):
        for (model, source, family), layer in product([("m1", "m1_sae", "sae"), ("m1", "hidden", "hidden")], [1, 3]):
            for a, b in product(langs, langs):
                rows.append(dict(model=model, dataset=ds, source=source, family=family, layer=layer, pooling="mean",
                                 binarize="raw", train_lang=a, test_lang=b, macro_f1=float(rng.uniform(0.3, 0.9)),
                                 accuracy=float(rng.uniform(0.3, 0.9)), n_train=50, n_test=20, C=1.0, cv_macro_f1=0.7))
    return pl.DataFrame(rows)


def synthetic_sweep(repeats: int = 3) -> pl.DataFrame:
    rows = []
    rng = np.random.default_rng(2)
    for ds in ["jailbreak", "trec"]:
        for model, source, family in (("m1", "m1_sae", "sae"), ("m1", "hidden", "hidden"), (None, "tfidf", "tfidf")):
            for size, rep in product([16, 32, 64, None], range(repeats)):
                layer = None if family == "tfidf" else 1
                rows.append(dict(model=model, dataset=ds, source=source, family=family, layer=layer,
                                 pooling=None if family == "tfidf" else "top20",
                                 binarize=None if family == "tfidf" else ("gt1" if family == "sae" else "raw"),
                                 n_per_class=size, repeat=rep, n_train=2 * (size or 100),
                                 test_macro_f1=float(rng.uniform(0.4, 0.9)), test_accuracy=0.7, C=1.0))
    return pl.DataFrame(rows, schema_overrides={"n_per_class": pl.Int64, "layer": pl.Int64, "model": pl.String,
                                                "pooling": pl.String, "binarize": pl.String})


def synthetic_regimes(repeats: int = 3) -> pl.DataFrame:
    """A sweep table with size, imbalance (binary 'jailbreak' only) and label-noise rows."""
    size = synthetic_sweep(repeats).with_columns(regime=pl.lit("size"), value=pl.col("n_per_class").cast(pl.Float64))
    rows = []
    rng = np.random.default_rng(3)
    for ds in ["jailbreak", "trec"]:
        for model, source, family in (("m1", "m1_sae", "sae"), ("m1", "hidden", "hidden"), (None, "tfidf", "tfidf")):
            for regime, values in (("imbalance", [0.05, 0.5, 0.95]), ("label_noise", [0.0, 0.2, 0.4])):
                if regime == "imbalance" and ds == "trec":
                    continue  # multiclass: skipped by the sweep
                for value, rep in product(values, range(repeats)):
                    layer = None if family == "tfidf" else 1
                    rows.append(dict(model=model, dataset=ds, source=source, family=family, layer=layer,
                                     pooling=None if family == "tfidf" else "top20",
                                     binarize=None if family == "tfidf" else ("gt1" if family == "sae" else "raw"),
                                     n_per_class=None, repeat=rep, n_train=60 if regime == "imbalance" else 200,
                                     test_macro_f1=float(rng.uniform(0.4, 0.9)), test_accuracy=0.7, C=1.0,
                                     regime=regime, value=value))
    other = pl.DataFrame(rows, schema_overrides={"n_per_class": pl.Int64, "layer": pl.Int64, "model": pl.String,
                                                 "pooling": pl.String, "binarize": pl.String})
    return pl.concat([size, other.select(size.columns)])


def synthetic_behaviour() -> pl.DataFrame:
    rows = []
    for ds, acc in (("piqa_s", 0.55), ("boolq_s", 0.6)):
        for probe_model, family, cv, test in (("m1", "sae", 0.7, 0.65), ("m1", "sae", 0.6, 0.9), ("m1", "hidden", 0.62, 0.6),
                                              ("m2", "sae", 0.58, 0.57)):
            rows.append(dict(dataset=ds, scorer_model="s", scorer_accuracy=acc, majority_rate=max(acc, 1 - acc),
                             probe_model=probe_model, family=family, source="x" if family == "sae" else "hidden",
                             layer=1, pooling="mean", binarize="raw", cv_macro_f1=cv, cv_macro_f1_se=0.01,
                             test_macro_f1=test,
                             test_accuracy=test))
    return pl.DataFrame(rows)


def _check_written(fig, stem: Path) -> None:
    png, svg = figures.save(fig, stem)
    assert png.stat().st_size > 5000, png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 5000


@pytest.mark.parametrize("name", ["f1_by_layer", "f1_by_width", "pooling_binarize"])
def test_grid_figures_write_png_and_svg(tmp_path, name):
    fig = figures.make(name, {"grid": synthetic_grid()})
    assert fig.axes and len([ax for ax in fig.axes if ax.get_visible()]) >= 2  # one panel per dataset (+colorbar)
    _check_written(fig, tmp_path / name)


def test_width_figure_with_a_single_width(tmp_path):
    fig = figures.f1_by_width(synthetic_grid(widths=(2048,)))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2k"]
    _check_written(fig, tmp_path / "w")


def test_layer_figure_plots_the_cv_best_configuration(tmp_path):
    g = synthetic_grid().filter(pl.col("dataset") == "jailbreak")
    # Make one SAE cell at layer 1 of m1 best on CV with a known test score, and another best on test.
    g = g.with_columns(
        pl.when((pl.col("source") == "m1_sae64") & (pl.col("layer") == 1) & (pl.col("pooling") == "mean")
                & pl.col("binarize").is_null()).then(0.99).otherwise(pl.col("cv_macro_f1")).alias("cv_macro_f1"),
        pl.when((pl.col("source") == "m1_sae64") & (pl.col("layer") == 1) & (pl.col("pooling") == "mean")
                & pl.col("binarize").is_null()).then(0.123).otherwise(pl.col("test_macro_f1")).alias("test_macro_f1"),
    ).with_columns(
        pl.when((pl.col("source") == "m1_sae1024") & (pl.col("layer") == 1) & (pl.col("pooling") == "top20"))
        .then(0.999).otherwise(pl.col("test_macro_f1")).alias("test_macro_f1"),
    )
    fig = figures.f1_by_layer(g)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    sae = lines["m1 · SAE"]
    assert list(sae.get_xdata()) == [1, 3]
    assert sae.get_ydata()[0] == pytest.approx(0.123)  # the CV-best row's test score, not the test-best 0.999
    assert "TF-IDF baseline" in lines


def test_transfer_figure_one_panel_per_configuration(tmp_path):
    t = synthetic_transfer()
    fig = figures.transfer_matrices(t, "tweets")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == 4  # (sae, hidden) x layers 1, 3
    # Annotated cells: 3 x 3 languages per panel.
    assert sum(1 for txt in panels[0].texts if txt.get_text().startswith("0.")) == 9
    _check_written(fig, tmp_path / "transfer_tweets")
    _check_written(figures.transfer_matrices(t, "nothing"), tmp_path / "empty")  # placeholder, still a figure


@pytest.mark.parametrize("repeats", [1, 3])
def test_data_size_figure(tmp_path, repeats):
    sweep = synthetic_sweep(repeats)
    fig = figures.data_size(sweep)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "64", "all"]
    labels = {line.get_label() for line in ax.get_lines()}
    assert labels == {"m1 · m1_sae", "m1 · hidden", "TF-IDF"}
    # The plotted mean is the mean over repeats.
    sae = next(line for line in ax.get_lines() if line.get_label() == "m1 · m1_sae")
    expected = sweep.filter((pl.col("dataset") == "jailbreak") & (pl.col("source") == "m1_sae")
                            & (pl.col("n_per_class") == 16))["test_macro_f1"].mean()
    assert sae.get_ydata()[0] == pytest.approx(expected)
    _check_written(fig, tmp_path / "data_size")


@pytest.mark.parametrize("repeats", [1, 3])
def test_regimes_figure(tmp_path, repeats):
    sweep = synthetic_regimes(repeats)
    fig = figures.make("regimes", {"sweep": sweep})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["jailbreak · imbalance", "jailbreak · label noise", "", "trec · label noise"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.05", "0.5", "0.95"]
    assert "N = 60" in ax.get_xlabel()
    assert "binary datasets only" in fig.axes[2].texts[0].get_text()  # trec is multiclass
    curves = {c.get_label(): c for c in ax.containers}  # one errorbar container per curve
    assert set(curves) == {"m1 · m1_sae", "m1 · hidden", "TF-IDF"}
    part = sweep.filter((pl.col("dataset") == "jailbreak") & (pl.col("source") == "m1_sae")
                        & (pl.col("regime") == "imbalance") & (pl.col("value") == 0.05))["test_macro_f1"]
    assert curves["m1 · m1_sae"].lines[0].get_ydata()[0] == pytest.approx(part.mean())
    segment = curves["m1 · m1_sae"].lines[2][0].get_segments()[0]  # error bars: ± std over repeats
    assert segment[1][1] - segment[0][1] == pytest.approx(2 * (part.std() if repeats > 1 else 0.0))
    noise = fig.axes[1]
    assert [t.get_text() for t in noise.get_xticklabels()] == ["0", "0.2", "0.4"]
    _check_written(fig, tmp_path / "regimes")
    # data_size draws the size regime only; its "all" point is not mixed with the regime rows.
    size = figures.make("data_size", {"sweep": sweep})
    sae = next(line for line in size.axes[0].get_lines() if line.get_label() == "m1 · m1_sae")
    expected = sweep.filter((pl.col("dataset") == "jailbreak") & (pl.col("source") == "m1_sae")
                            & (pl.col("regime") == "size") & pl.col("n_per_class").is_null())["test_macro_f1"].mean()
    assert sae.get_ydata()[-1] == pytest.approx(expected)
    empty = figures.make("regimes", {"sweep": sweep.filter(pl.col("regime") == "size")})
    assert "no class-imbalance or label-noise rows" in empty.axes[0].texts[0].get_text()


def test_behaviour_bars_use_cv_best_probe(tmp_path):
    fig = figures.behaviour_bars(synthetic_behaviour())
    ax = fig.axes[0]
    heights = [round(p.get_height(), 3) for p in ax.patches]
    assert 0.65 in heights and 0.9 not in heights  # m1 SAE: CV-best (0.7 CV) has test 0.65
    assert 0.55 in heights and 0.6 in heights  # scorer accuracies / majority rates shown
    _check_written(fig, tmp_path / "behaviour")


def test_save_is_reproducible(tmp_path):
    a = figures.save(figures.f1_by_layer(synthetic_grid()), tmp_path / "a")
    b = figures.save(figures.f1_by_layer(synthetic_grid()), tmp_path / "b")
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()


def test_empty_tables_give_placeholder_figures(tmp_path):
    empty = synthetic_grid().filter(pl.col("family") == "tfidf")
    for name in ("f1_by_layer", "f1_by_width", "pooling_binarize"):
        fig = figures.make(name, {"grid": empty})
        assert "no " in fig.axes[0].texts[0].get_text()
        _check_written(fig, tmp_path / name)


BASE = {
    "datasets": {"a": {"path": "a.parquet", "lang_column": "lang"}, "b": {"path": "b.parquet"}},
    "models": {"m": {"path": "m", "layers": [0, 1]}},
    "saes": {"s": {"model": "m", "path": "sae"}},
}


def test_figure_plan_follows_config():
    cfg = sc.validate(copy.deepcopy(BASE))
    sae_figures = {"sae_frontier": "saes", "sae_reconstruction": "saes"}  # sae_quality is on by default
    assert sg.figure_plan(cfg) == {"f1_by_layer": "grid", "f1_by_width": "grid", "pooling_binarize": "grid", **sae_figures}
    no_quality = copy.deepcopy(BASE)
    no_quality["sae_quality"] = {"enabled": False}
    assert not set(sae_figures) & set(sg.figure_plan(sc.validate(no_quality)))
    more = copy.deepcopy(BASE)
    more["transfer"] = {"datasets": ["a"]}
    more["sweep"] = {"datasets": ["b"]}
    more["behaviour"] = {"q": {"path": "q.parquet", "model": "m"}}
    plan = sg.figure_plan(sc.validate(more))
    assert plan["transfer_a"] == "transfer" and plan["data_size"] == "sweep" and plan["behaviour"] == "behaviour"
    assert "regimes" not in plan  # no imbalance or label-noise values
    for key in ("imbalance", "label_noise"):
        regimes = copy.deepcopy(more)
        regimes["sweep"][key] = [0.25]
        assert sg.figure_plan(sc.validate(regimes))["regimes"] == "sweep"
    inputs = sg.Plan(cfg).top_feature_inputs()
    assert inputs["probes"] == [f"results/probes/m/{d}/s/layer_{L}" for d in "ab" for L in (0, 1)]
    assert inputs["tokens"] == ["results/tokens/m/a.parquet", "results/tokens/m/b.parquet"] and inputs["models"] == []
    no_sae = copy.deepcopy(BASE)
    no_sae["saes"] = {}
    assert sg.figure_plan(sc.validate(no_sae)) == {"f1_by_layer": "grid"}


def test_unknown_figure_name():
    with pytest.raises(KeyError, match="unknown figure"):
        figures.make("nope", {})


def test_sort_helpers():
    assert sorted(["top50", "last", "top5", "mean"], key=figures.pooling_key) == ["mean", "last", "top5", "top50"]
    assert sorted(["gt1", "raw", "gt0.5"], key=figures.binarize_key) == ["raw", "gt0.5", "gt1"]
    assert [figures.width_label(w) for w in (300, 2048, 16384, 1 << 20)] == ["300", "2k", "16k", "1M"]


# --------------------------------------------------------------------------- SAE frontier (issue 21 T16)


def synthetic_saes(datasets: tuple[str, ...] = ("trec",)) -> pl.DataFrame:
    """A tables/saes frame: two sweep entries of the same architecture, width and layer (wiki_topk, news_topk,
    k 16 and 32, different training sets), a plain entry of that kind (no sweep suffix), a width sweep at two
    layers, and a second model. Returns it with the entry and width every row comes from (columns _entry)."""
    from saeprobe.sae_quality import SAES_SCHEMA

    rows = []
    specs = [("wiki_topk", "m1", 4, 1024, [16, 32]), ("news_topk", "m1", 4, 1024, [16, 32]),
             ("plain_topk", "m1", 4, 1024, None), ("wide_topk", "m1", 4, 4096, [32]),
             ("wide_topk", "m1", 2, 4096, [32]), ("wide_topk", "m1", 2, 1024, [32]),
             ("a_rather_long_entry_name_for_another_model_sae", "another_model_with_a_long_name", 7, 2048, [8, 64])]
    rng = np.random.default_rng(1)
    for ds in datasets:
        for entry, model, layer, width, ks in specs:
            for k in ks or [16]:
                name = f"{entry}_w{width}_k{k}" if ks else entry
                f1 = float(rng.uniform(0.55, 0.9))
                rows.append(dict(sae=name, model=model, layer=layer, architecture="topk", width=width, k=k,
                                 sparsity_key="k", sparsity=float(k), l0=float(k) * rng.uniform(0.9, 1.1),
                                 explained_variance=float(rng.uniform(0.5, 0.9)), dataset=ds, grid_test_macro_f1=f1,
                                 grid_test_macro_f1_lo=f1 - 0.05, grid_test_macro_f1_hi=f1 + 0.04,
                                 ksparse_test_macro_f1=f1 - 0.1, _entry=entry))
    frame = pl.DataFrame(rows)
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in SAES_SCHEMA.items()] + [pl.col("_entry")])


def test_sae_entry_removes_only_the_suffix_its_own_sweep_gave():
    assert figures.sae_entry({"sae": "wiki_topk_w1024_k16", "width": 1024, "sparsity_key": "k", "sparsity": 16.0}) == "wiki_topk"
    assert figures.sae_entry({"sae": "j_w64_l0c0p5", "width": 64, "sparsity_key": "l0_coefficient", "sparsity": 0.5}) == "j"
    # A suffix that is not the row's own width / sparsity is part of the entry's name; so is a plain name.
    assert figures.sae_entry({"sae": "x_w1024_k16", "width": 2048, "sparsity_key": "k", "sparsity": 16.0}) == "x_w1024_k16"
    assert figures.sae_entry({"sae": "x_w1024_k16", "width": 1024, "sparsity_key": "k", "sparsity": 32.0}) == "x_w1024_k16"
    assert figures.sae_entry({"sae": "gemmascope", "width": 16384, "sparsity_key": None, "sparsity": None}) == "gemmascope"
    # The suffix is the one the config's sweep expansion generates (one owner of the naming).
    expanded = {"saes": {"e": {"model": "m", "train": {"architecture": "topk", "width": [64, 128], "k": [4, 8]}}}}
    sc.expand_sae_sweeps(expanded)
    for name, spec in expanded["saes"].items():
        row = {"sae": name, "width": spec["train"]["width"], "sparsity_key": "k", "sparsity": float(spec["train"]["k"])}
        assert figures.sae_entry(row) == "e", name


@pytest.mark.parametrize("name", ["sae_frontier", "sae_reconstruction"])
def test_sae_figures_draw_one_line_per_entry_width_and_layer(name):
    saes = synthetic_saes()
    fig = figures.make(name, {"saes": saes.drop("_entry")})
    ax = fig.axes[0]
    column = "grid_test_macro_f1" if name == "sae_frontier" else "explained_variance"
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    # wiki_topk and news_topk (both topk, 1k, L4, k 16 and 32) are two lines, plain_topk a third: 7 sweeps in all
    assert len(solid) == saes.select("_entry", "width", "layer").n_unique() == 7
    drawn = sorted((sorted(zip(line.get_xdata(), line.get_ydata(), strict=True)), line.get_label()) for line in solid)
    expected = sorted((sorted(zip(part["l0"], part[column], strict=True)),
                       figures._sae_line_label({**part.row(0, named=True), "entry": part["_entry"][0]}))
                      for _, part in saes.group_by(["_entry", "width", "layer"]))
    assert drawn == expected
    for line in solid:
        assert list(line.get_xdata()) == sorted(line.get_xdata())  # through each sweep in L0 order
    assert len({line.get_label() for line in solid}) == len(solid)  # each line named apart in the legend


def _assert_inside(fig) -> None:
    """Everything drawn (legend included) lies inside the figure, as saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    assert fig.legends
    for legend in fig.legends:
        extent = legend.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and box.y0 - 1 <= extent.y0, (extent, box)
    tight = fig.get_tightbbox(renderer)  # inches
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01, tight
    assert tight.x1 <= fig.get_figwidth() + 0.01 and tight.y1 <= fig.get_figheight() + 0.01, (tight, fig.get_size_inches())


@pytest.mark.parametrize("datasets", [("trec",), ("jailbreak", "trec", "tweets")])
def test_sae_frontier_legend_fits_inside_the_figure(tmp_path, datasets):
    saes = synthetic_saes(datasets).drop("_entry")
    fig = figures.make("sae_frontier", {"saes": saes})
    _check_written(fig, tmp_path / "frontier")
    _assert_inside(fig)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    lines = {line.get_label() for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert sorted(labels) == sorted(lines | {"all-feature probe", "k-sparse probe"})  # every line once, and the styles
    for ax in fig.axes:
        if ax.get_visible():  # the legend takes room of its own, not the panels'
            assert ax.get_window_extent().height / fig.dpi > 0.6 * figures.PANEL[1]


def test_every_figure_legend_fits_inside_the_figure():
    """A one-panel grid figure (6 inches wide) whose model names are long: the legend was cut at both edges."""
    grid = synthetic_grid().filter(pl.col("dataset") == "trec").with_columns(
        model=pl.col("model").replace({"m1": "a-model-with-a-rather-long-name-1", "m2": "a-model-with-a-rather-long-name-2"}))
    _assert_inside(figures.make("f1_by_layer", {"grid": grid}))

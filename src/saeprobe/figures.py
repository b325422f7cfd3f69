"""Figures of a run: F1 by layer and by SAE width, pooling × binarization, transfer, data size, behaviour.

Every figure function takes a results table (polars) and returns a matplotlib
:class:`~matplotlib.figure.Figure` built with the object-oriented API on the Agg canvas (no
``pyplot``, no global state); :func:`save` writes it as ``<stem>.png`` and ``<stem>.svg``,
atomically and byte-for-byte reproducibly (fixed SVG hash salt, no date stamp).

Input tables (:data:`saeprobe.layout.TABLE`), by figure:

- ``grid.parquet`` (:data:`saeprobe.tables.GRID_COLUMNS`): :func:`f1_by_layer`,
  :func:`f1_by_width`, :func:`pooling_binarize`;
- ``transfer.parquet`` (model, dataset, source, family, layer, pooling, binarize, train_lang,
  test_lang, macro_f1, ...): :func:`transfer_matrices`;
- ``sweep.parquet`` (model, dataset, source, family, layer, pooling, binarize, n_per_class,
  repeat, test_macro_f1, ...): :func:`data_size`;
- ``saes.parquet`` (:data:`saeprobe.sae_quality.SAES_SCHEMA`): :func:`sae_frontier`,
  :func:`sae_reconstruction`;
- ``behaviour.parquet`` (dataset, scorer_model, scorer_accuracy, majority_rate, probe_model,
  family, source, layer, pooling, binarize, cv_macro_f1, test_macro_f1, ...): :func:`behaviour_bars`.

Whenever a figure shows "the best configuration", it is chosen on the CV macro F1 of the train
split by the one-standard-error rule (:func:`saeprobe.tables.cv_choice`: the simplest
configuration within one standard error of the best), never on the test score; the test macro
F1 of that configuration is what is plotted (:func:`saeprobe.tables.cv_choice`).

Which figures a run makes is decided from the configuration alone
(:func:`saeprobe.grid.figure_plan`, light to import), so Snakemake knows the outputs when it
builds the DAG. A figure whose table turns out to have no
usable rows is still written, as a panel saying so.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from saeprobe.config import SPARSITY_TAG, sweep_suffix
from saeprobe.io import atomic_path
from saeprobe.tables import cv_choice

matplotlib.use("Agg")

FAMILY_LABEL = {"sae": "SAE", "hidden": "hidden states", "tfidf": "TF-IDF"}
PANEL = (4.6, 3.5)  # inches per facet
STYLE = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "saeprobe",
    "figure.dpi": 100,
}
COLORS = [matplotlib.colormaps["tab10"](i) for i in range(10)]


# --------------------------------------------------------------------------- drawing by name


def make(name: str, tables: dict[str, pl.DataFrame]) -> Figure:
    """Draw figure ``name`` (a key of :func:`saeprobe.grid.figure_plan`) from the loaded ``tables``.

    Raises:
        KeyError: unknown figure name, or its table missing from ``tables``.
    """
    if name.startswith("transfer_"):
        return transfer_matrices(tables["transfer"], name.removeprefix("transfer_"))
    makers: dict[str, tuple[str, Callable[[pl.DataFrame], Figure]]] = {
        "f1_by_layer": ("grid", f1_by_layer), "f1_by_width": ("grid", f1_by_width),
        "pooling_binarize": ("grid", pooling_binarize), "data_size": ("sweep", lambda t: data_size(size_rows(t))),
        "regimes": ("sweep", regimes), "behaviour": ("behaviour", behaviour_bars), "ksparse": ("ksparse", ksparse_curves),
        "binarize_vs_ksparse": ("binarize_vs_ksparse", binarize_vs_ksparse),
        "sae_frontier": ("saes", sae_frontier), "sae_reconstruction": ("saes", sae_reconstruction),
    }
    if name not in makers:
        raise KeyError(f"unknown figure {name!r} (known: {', '.join(makers)}, transfer_<dataset>)")
    table, fn = makers[name]
    df = tables[table]
    if table == "grid" and "probe" in df.columns:  # the grid figures show the linear probes; baselines: best.*, summary
        df = df.filter(pl.col("probe") == "logreg")
    return fn(df)


def save(fig: Figure, stem: str | Path) -> tuple[Path, Path]:
    """Write ``fig`` to ``<stem>.png`` (150 dpi) and ``<stem>.svg`` atomically; return both paths."""
    stem = Path(stem)
    paths = stem.with_suffix(".png"), stem.with_suffix(".svg")
    with matplotlib.rc_context({"svg.hashsalt": "saeprobe"}):
        with atomic_path(paths[0]) as tmp:
            fig.savefig(tmp, dpi=150, format="png", metadata={"Software": None})
        with atomic_path(paths[1]) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
    return paths


# --------------------------------------------------------------------------- helpers


def pooling_key(name: str | None) -> tuple[int, int]:
    """Sort order of pooling names: mean, max, sum, last, then top<N> by N."""
    fixed = {"mean": 0, "max": 1, "sum": 2, "last": 3}
    if name in fixed:
        return fixed[name], 0
    match = re.fullmatch(r"top(\d+)", name or "")
    return (4, int(match.group(1))) if match else (5, 0)


def binarize_key(name: str | None) -> float:
    """Sort order of binarization names: raw first, then thresholds ascending."""
    if name in (None, "raw"):
        return -math.inf
    try:
        return float(str(name).removeprefix("gt"))
    except ValueError:
        return math.inf


def binarize_label(name: str | None) -> str:
    return "raw" if name in (None, "raw") else f"> {str(name).removeprefix('gt')}"


def width_label(n: float) -> str:
    """1024 -> '1k', 16384 -> '16k', 1048576 -> '1M', 300 -> '300'."""
    n = int(n)
    for unit, size in (("M", 1 << 20), ("k", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,}"


def _figure(n_panels: int, ncols: int = 3, panel: tuple[float, float] = PANEL,
            extra_height: float = 0.6) -> tuple[Figure, list[Any]]:
    """A figure with ``n_panels`` axes in a grid of at most ``ncols`` columns (unused axes hidden)."""
    n = max(n_panels, 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(6.0, panel[0] * ncols), panel[1] * nrows + extra_height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a figure function inside the module's rc style (fonts, spines)."""

    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn  # type: ignore[attr-defined]
    return wrapper


def _suptitle(fig: Figure, title: str) -> None:
    """The figure title, wrapped to the figure's width (about 11 characters per inch)."""
    fig.suptitle(textwrap.fill(title, width=max(30, int(fig.get_figwidth() * 11))))


def _empty(title: str, message: str) -> Figure:
    fig, (ax,) = _figure(1)
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    _suptitle(fig, title)
    return fig


def _f1_panel(ax: Any, title: str, xlabel: str, values: Sequence[float]) -> None:
    """Label a panel whose y axis is test macro F1, with limits fitted to ``values`` (0..1)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test macro F1")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        ax.set_ylim(0, 1)
        return
    lo, hi = min(finite), max(finite)
    pad = max(0.03, 0.1 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) if hi + pad < 1 else 1.005)


def _legend_below(fig: Figure, axes: list[Any], extra: Sequence[Any] = ()) -> None:
    """One legend for the whole figure, below the panels, from the union of the axes' handles
    (then the labelled ``extra`` handles, e.g. a key to line styles).

    The legend is fitted to the figure, never cut at its edges: at most 4 columns, fewer while it
    is wider than the figure, and a figure still too narrow for one column is widened. The
    figure grows by the legend's rows beyond the first, so the panels keep their height.
    """
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    for handle in extra:
        seen.setdefault(handle.get_label(), handle)
    if not seen:
        return
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    room = 0.97 * fig.bbox.width
    for ncols in range(min(4, len(seen)), 0, -1):
        legend = fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center", ncols=ncols,
                            frameon=False)
        extent = legend.get_window_extent(renderer)
        if extent.width <= room or ncols == 1:
            break
        legend.remove()
    if extent.width > room:
        fig.set_figwidth((extent.width / 0.97 + 1) / fig.dpi)
    rows = math.ceil(len(seen) / ncols)
    fig.set_figheight(fig.get_figheight() + extent.height / fig.dpi * (rows - 1) / rows)


def _yerr(df: pl.DataFrame, column: str = "test_macro_f1") -> np.ndarray | None:
    """(2, n) error-bar lengths from the ``<column>_lo`` / ``_hi`` interval columns (None without them)."""
    lo, hi = f"{column}_lo", f"{column}_hi"
    if lo not in df.columns or hi not in df.columns or df[lo].is_null().all():
        return None
    value = df[column].to_numpy().astype(float)
    err = np.vstack([value - df[lo].fill_null(np.nan).to_numpy(), df[hi].fill_null(np.nan).to_numpy() - value])
    return np.clip(err, 0, None)  # a point outside its interval (e.g. edited tables) draws a one-sided bar


def _errorbars(ax: Any, x: Any, df: pl.DataFrame, color: Any, column: str = "test_macro_f1") -> None:
    """Unlabelled bootstrap-interval bars of ``df``'s ``column`` at ``x`` (nothing without its ``_lo`` / ``_hi`` columns)."""
    yerr = _yerr(df, column)
    if yerr is not None:
        ax.errorbar(x, df[column], yerr=yerr, fmt="none", ecolor=color, capsize=2.5, elinewidth=0.9, alpha=0.8)


def _interval_values(df: pl.DataFrame, column: str = "test_macro_f1") -> list[float]:
    """The interval ends of ``df`` (for fitting a panel's y limits), empty without interval columns."""
    return [v for c in (f"{column}_lo", f"{column}_hi") if c in df.columns for v in df[c].drop_nulls().to_list()]


def _family_rank() -> pl.Expr:
    """Sort key: SAE, hidden states, TF-IDF, anything else."""
    return pl.col("family").replace_strict({"sae": 0, "hidden": 1, "tfidf": 2}, default=3, return_dtype=pl.Int8)


def _color_map(labels: Sequence[str]) -> dict[str, Any]:
    return {label: COLORS[i % len(COLORS)] for i, label in enumerate(dict.fromkeys(labels))}


# --------------------------------------------------------------------------- grid figures


@_styled
def f1_by_layer(grid: pl.DataFrame) -> Figure:
    """Test macro F1 of the CV-best configuration per (dataset, model, family) at each layer.

    One panel per dataset; one line per model and family (SAE solid, hidden states dashed);
    the TF-IDF baseline of the dataset as a grey horizontal line.
    """
    title = "Test macro F1 by layer (CV-selected configuration per layer)"
    feats = grid.filter(pl.col("family").is_in(["sae", "hidden"]) & pl.col("layer").is_not_null())
    if feats.is_empty():
        return _empty(title, "no SAE or hidden-state probes in grid.parquet")
    best = cv_choice(feats, ["dataset", "model", "family", "layer"]).sort(["model", _family_rank(), "layer"])
    datasets = feats["dataset"].unique(maintain_order=True).to_list()
    colors = _color_map(sorted(best["model"].unique().to_list()))
    fig, axes = _figure(len(datasets))
    for ax, ds in zip(axes, datasets, strict=True):
        sub = best.filter(pl.col("dataset") == ds)
        values = sub["test_macro_f1"].to_list()
        for (model, family), line in sub.group_by(["model", "family"], maintain_order=True):
            ax.plot(line["layer"], line["test_macro_f1"], marker="o" if family == "sae" else "s",
                    linestyle="-" if family == "sae" else "--", color=colors[model],
                    label=f"{model} · {FAMILY_LABEL[family]}")
            _errorbars(ax, line["layer"], line, colors[model])
            values += _interval_values(line)
        tfidf = grid.filter((pl.col("dataset") == ds) & (pl.col("family") == "tfidf"))["test_macro_f1"].drop_nulls()
        if len(tfidf):
            ax.axhline(tfidf[0], color="0.45", linestyle=":", linewidth=1.2, label="TF-IDF baseline")
            values.append(tfidf[0])
        layers = sorted(sub["layer"].unique().to_list())
        ax.set_xticks(layers)
        _f1_panel(ax, ds, "layer (block output)", values)
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig


@_styled
def f1_by_width(grid: pl.DataFrame) -> Figure:
    """Test macro F1 against SAE width (``n_features`` = d_sae, log scale), one panel per dataset.

    Per (dataset, model, width) the CV-best SAE configuration over sources, layers, poolings
    and binarizations; each point is labelled with the chosen source and layer. A single width
    gives single points.
    """
    title = "Test macro F1 by SAE width (CV-selected configuration per width)"
    sae = grid.filter((pl.col("family") == "sae") & pl.col("n_features").is_not_null())
    if sae.is_empty():
        return _empty(title, "no SAE probes in grid.parquet")
    best = cv_choice(sae, ["dataset", "model", "n_features"]).sort(["model", "n_features"])
    datasets = sae["dataset"].unique(maintain_order=True).to_list()
    colors = _color_map(sorted(best["model"].unique().to_list()))
    fig, axes = _figure(len(datasets))
    for ax, ds in zip(axes, datasets, strict=True):
        sub = best.filter(pl.col("dataset") == ds)
        for (model,), line in sub.group_by(["model"], maintain_order=True):
            ax.plot(line["n_features"], line["test_macro_f1"], marker="o", color=colors[model], label=model)
            for row in line.iter_rows(named=True):
                ax.annotate(f"{row['source']} L{row['layer']}", (row["n_features"], row["test_macro_f1"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color=colors[model])
        widths = sorted(sub["n_features"].unique().to_list())
        ax.set_xscale("log")
        ax.set_xlim(widths[0] / 2, widths[-1] * 2)
        ax.set_xticks(widths, [width_label(w) for w in widths])
        ax.minorticks_off()
        _f1_panel(ax, ds, "SAE width (features, log scale)", sub["test_macro_f1"].to_list())
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig


@_styled
def pooling_binarize(grid: pl.DataFrame) -> Figure:
    """Heatmap of mean test macro F1 of SAE probes, pooling (rows) × binarization (columns).

    One panel per dataset; each cell averages over models, SAE sources and layers (the count
    of probes averaged is printed under the value). Descriptive, not a selection.
    """
    title = "SAE probes: mean test macro F1 by pooling and binarization"
    sae = grid.filter((pl.col("family") == "sae") & pl.col("pooling").is_not_null())
    if sae.is_empty():
        return _empty(title, "no SAE probes in grid.parquet")
    cells = sae.group_by(["dataset", "pooling", "binarize"], maintain_order=True).agg(
        pl.col("test_macro_f1").mean().alias("f1"), pl.len().alias("n"))
    datasets = cells["dataset"].unique(maintain_order=True).to_list()
    vmin, vmax = float(cells["f1"].min() or 0.0), float(cells["f1"].max() or 1.0)
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    n_pool = cells["pooling"].n_unique()
    fig, axes = _figure(len(datasets), panel=(max(3.6, 1.2 * cells["binarize"].n_unique() + 2.0),
                                              max(2.6, 0.45 * n_pool + 1.4)))
    image = None
    for ax, ds in zip(axes, datasets, strict=True):
        sub = cells.filter(pl.col("dataset") == ds)
        pools = sorted(sub["pooling"].unique().to_list(), key=pooling_key)
        bins = sorted(sub["binarize"].unique().to_list(), key=binarize_key)
        mat = np.full((len(pools), len(bins)), np.nan)
        count = np.zeros_like(mat, dtype=int)
        for row in sub.iter_rows(named=True):
            i, j = pools.index(row["pooling"]), bins.index(row["binarize"])
            mat[i, j] = np.nan if row["f1"] is None else row["f1"]
            count[i, j] = row["n"]
        image = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(pools)):
            for j in range(len(bins)):
                text = "–" if np.isnan(mat[i, j]) else f"{mat[i, j]:.3f}\n(n={count[i, j]})"
                shade = (mat[i, j] - vmin) / (vmax - vmin) if np.isfinite(mat[i, j]) else 1.0
                ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color="white" if shade < 0.6 else "black")
        ax.set_xticks(range(len(bins)), [binarize_label(b) for b in bins])
        ax.set_yticks(range(len(pools)), pools)
        ax.set_xlabel("binarization (feature > t)")
        ax.set_ylabel("pooling")
        ax.set_title(ds)
        ax.spines[:].set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="mean test macro F1")
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------- transfer


def _panel_label(row: dict[str, Any]) -> str:
    parts = [str(row.get("model")), str(row.get("source")), f"L{row.get('layer')}", str(row.get("pooling"))]
    if row.get("binarize") not in (None, "raw"):
        parts.append(binarize_label(row["binarize"]))
    return " · ".join(parts)


@_styled
def transfer_matrices(transfer: pl.DataFrame, dataset: str) -> Figure:
    """Cross-lingual transfer matrices of one dataset: test macro F1, train language (rows) ×
    test language (columns), one annotated panel per (model, source, layer, pooling, binarization).

    The diagonal (train and test in the same language) is outlined. Colour scale 0..1, shared.
    """
    title = f"{dataset}: cross-lingual transfer (test macro F1; rows = train language, columns = test language)"
    sub = transfer.filter(pl.col("dataset") == dataset)
    if sub.is_empty():
        return _empty(title, f"no rows for dataset '{dataset}' in transfer.parquet")
    keys = ["model", "source", "layer", "pooling", "binarize"]
    panels = sub.with_columns(_family_rank().alias("_fam")).sort(["_fam", *keys], nulls_last=True, maintain_order=True)
    groups = list(panels.group_by(keys, maintain_order=True))
    langs_train = sorted(sub["train_lang"].unique().to_list())
    langs_test = sorted(sub["test_lang"].unique().to_list())
    side = max(2.8, 0.55 * max(len(langs_train), len(langs_test)) + 1.6)
    fig, axes = _figure(len(groups), ncols=4, panel=(side + 0.3, side))
    image = None
    for ax, (_, panel) in zip(axes, groups, strict=True):
        mat = np.full((len(langs_train), len(langs_test)), np.nan)
        for row in panel.iter_rows(named=True):
            mat[langs_train.index(row["train_lang"]), langs_test.index(row["test_lang"])] = row["macro_f1"]
        image = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", vmin=0.0, vmax=1.0)
        for i, a in enumerate(langs_train):
            for j, b in enumerate(langs_test):
                value = mat[i, j]
                ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(value) and value < 0.6 else "black")
                if a == b:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=1.5,
                                                              edgecolor="crimson"))
        ax.set_xticks(range(len(langs_test)), langs_test)
        ax.set_yticks(range(len(langs_train)), langs_train)
        ax.set_xlabel("test language")
        ax.set_ylabel("train language")
        ax.set_title(_panel_label(panel.row(0, named=True)), fontsize=8.5)
        ax.spines[:].set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="test macro F1")
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------- data size


def _with_curve_labels(agg: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``agg`` with a ``label`` per curve: model and source, plus whichever of layer, pooling and
    binarization differ between the curves of one source."""
    per_source = agg.group_by(["dataset", "model", "source"]).agg(
        pl.col(k).n_unique() for k in ("layer", "pooling", "binarize"))
    vary = {k for k in ("layer", "pooling", "binarize") if per_source.height and per_source[k].max() > 1}
    return agg.with_columns(pl.struct(keys).map_elements(lambda r: _curve_label(r, vary), return_dtype=pl.String)
                            .alias("label"))


def _curve_label(row: dict[str, Any], vary: set[str]) -> str:
    if row["family"] == "tfidf":
        return "TF-IDF"
    parts = [str(row["model"]), str(row["source"]) if row["family"] == "sae" else "hidden"]
    if "layer" in vary:
        parts.append(f"L{row['layer']}")
    if "pooling" in vary:
        parts.append(str(row["pooling"]))
    if "binarize" in vary and row["binarize"] not in (None, "raw"):
        parts.append(binarize_label(row["binarize"]))
    return " · ".join(parts)


@_styled
def data_size(sweep: pl.DataFrame) -> Figure:
    """Mean ± std (over repeats) test macro F1 against training examples per class (log x).

    One panel per dataset, one line per feature source (TF-IDF included). ``n_per_class`` null
    (the whole train split) is drawn at a nominal position right of the largest size, labelled
    "all".
    """
    title = "Test macro F1 by training-set size (mean ± std over subsamples)"
    if sweep.is_empty():
        return _empty(title, "sweep.parquet has no rows")
    keys = ["dataset", "family", "model", "source", "layer", "pooling", "binarize"]
    agg = sweep.group_by([*keys, "n_per_class"], maintain_order=True).agg(
        pl.col("test_macro_f1").mean().alias("mean"), pl.col("test_macro_f1").std().fill_null(0.0).alias("std"),
        pl.len().alias("repeats"))
    sizes = sorted(v for v in agg["n_per_class"].unique().to_list() if v is not None)
    all_x = (sizes[-1] * 2) if sizes else 1
    agg = agg.with_columns(pl.col("n_per_class").fill_null(all_x).alias("x"))
    agg = agg.with_columns(_family_rank().alias("_fam")).sort(["dataset", "_fam", "model", "source", "layer", "pooling",
                                                             "binarize", "x"], nulls_last=True, maintain_order=True)
    agg = _with_curve_labels(agg, keys)
    colors = _color_map(agg["label"].to_list())
    datasets = sweep["dataset"].unique(maintain_order=True).to_list()
    fig, axes = _figure(len(datasets))
    ticks = [*sizes, all_x] if agg["n_per_class"].is_null().any() else sizes
    tick_labels = [str(s) for s in sizes] + (["all"] if len(ticks) > len(sizes) else [])
    for ax, ds in zip(axes, datasets, strict=True):
        sub = agg.filter(pl.col("dataset") == ds)
        for (label,), line in sub.group_by(["label"], maintain_order=True):
            x, m, s = line["x"].to_numpy(), line["mean"].to_numpy(), line["std"].to_numpy()
            family = line["family"][0]
            ax.plot(x, m, marker="o", markersize=3.5, color=colors[label], label=label,
                    linestyle={"sae": "-", "hidden": "--"}.get(family, ":"))
            ax.fill_between(x, m - s, m + s, color=colors[label], alpha=0.18, linewidth=0)
        ax.set_xscale("log")
        ax.set_xticks(ticks, tick_labels)
        ax.minorticks_off()
        _f1_panel(ax, ds, "training examples per class (log scale)",
                  list((sub["mean"] - sub["std"]).to_list()) + list((sub["mean"] + sub["std"]).to_list()))
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig


REGIME_AXES = {"imbalance": "fraction of positive (label 1) train examples", "label_noise": "fraction of train labels flipped"}


def size_rows(sweep: pl.DataFrame) -> pl.DataFrame:
    """The size regime's rows of a sweep table (all rows of a table without a ``regime`` column)."""
    if "regime" not in sweep.columns:
        return sweep
    return sweep.filter(pl.col("regime").is_null() | (pl.col("regime") == "size"))


@_styled
def regimes(sweep: pl.DataFrame) -> Figure:
    """Mean ± std (over repeats, error bars) test macro F1 against the positive-class fraction
    (class imbalance, subsample of N rows) and against the fraction of train labels flipped
    (label noise).

    One panel row per dataset, one column per regime present (imbalance, label noise), one line
    per feature source as in :func:`data_size` (SAE solid, hidden states dashed, TF-IDF dotted).
    A dataset without rows of a regime (imbalance on a multiclass dataset) gets a panel saying so.
    """
    title = "Test macro F1 under class imbalance and label noise (mean ± std over draws)"
    if "regime" not in sweep.columns:
        return _empty(title, "sweep.parquet has no regime column")
    rows = sweep.filter(pl.col("regime").is_in(list(REGIME_AXES)))
    if rows.is_empty():
        return _empty(title, "sweep.parquet has no class-imbalance or label-noise rows")
    keys = ["dataset", "family", "model", "source", "layer", "pooling", "binarize"]
    agg = rows.group_by([*keys, "regime", "value"], maintain_order=True).agg(
        pl.col("test_macro_f1").mean().alias("mean"), pl.col("test_macro_f1").std().fill_null(0.0).alias("std"),
        pl.col("n_train").max().alias("n_train"))
    agg = agg.with_columns(_family_rank().alias("_fam")).sort(["dataset", "_fam", "model", "source", "layer", "pooling",
                                                             "binarize", "value"], nulls_last=True, maintain_order=True)
    agg = _with_curve_labels(agg, keys)
    colors = _color_map(agg["label"].to_list())
    present = [r for r in REGIME_AXES if r in set(agg["regime"].to_list())]
    datasets = rows["dataset"].unique(maintain_order=True).to_list()
    fig, axes = _figure(len(datasets) * len(present), ncols=len(present))
    for i, ds in enumerate(datasets):
        for j, regime in enumerate(present):
            ax = axes[i * len(present) + j]
            sub = agg.filter((pl.col("dataset") == ds) & (pl.col("regime") == regime))
            if sub.is_empty():
                ax.set_axis_off()
                why = "binary datasets only" if regime == "imbalance" else "no rows"
                ax.text(0.5, 0.5, f"{ds}: no {regime.replace('_', ' ')} rows ({why})", ha="center", va="center",
                        wrap=True, transform=ax.transAxes)
                continue
            for (label,), line in sub.group_by(["label"], maintain_order=True):
                family = line["family"][0]
                ax.errorbar(line["value"].to_numpy(), line["mean"].to_numpy(), yerr=line["std"].to_numpy(), marker="o",
                            markersize=3.5, capsize=2.5, color=colors[label], label=label,
                            linestyle={"sae": "-", "hidden": "--"}.get(family, ":"))
            values = sorted(sub["value"].unique().to_list())
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
            xlabel = REGIME_AXES[regime] + (f" (N = {int(sub['n_train'].max())})" if regime == "imbalance" else "")
            _f1_panel(ax, f"{ds} · {regime.replace('_', ' ')}", xlabel,
                      list((sub["mean"] - sub["std"]).to_list()) + list((sub["mean"] + sub["std"]).to_list()))
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------- behaviour


@_styled
def behaviour_bars(behaviour: pl.DataFrame) -> Figure:
    """Per behaviour set: the scored model's accuracy and the majority-class rate of its
    correct/incorrect labels, next to the test macro F1 of the CV-best probe per (probe model,
    family) predicting those labels."""
    title = "Behaviour probes: does a probe predict whether the scored model answered correctly?"
    if behaviour.is_empty():
        return _empty(title, "behaviour.parquet has no rows")
    best = cv_choice(behaviour, ["dataset", "probe_model", "family"])
    datasets = best["dataset"].unique(maintain_order=True).to_list()
    probes = (best.with_columns(_family_rank().alias("_fam"))
              .sort([pl.col("family") == "tfidf", "probe_model", "_fam"], nulls_last=True)
              .select("probe_model", "family").unique(maintain_order=True).rows())
    bars = [("scorer accuracy", None), ("majority-class rate", None)] + [
        ("TF-IDF probe (macro F1)" if f == "tfidf" else f"probe {m} · {FAMILY_LABEL.get(f, f)} (macro F1)", (m, f))
        for m, f in probes]
    colors = ["0.35", "0.75"] + [COLORS[i % len(COLORS)] for i in range(len(probes))]
    width = 0.8 / len(bars)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(9.0, 1.1 + len(datasets) * len(bars) * 0.42), 5.0), layout="constrained")
        ax = fig.subplots()
    for i, ds in enumerate(datasets):
        sub = best.filter(pl.col("dataset") == ds)
        first = sub.row(0, named=True)
        values = [first["scorer_accuracy"], first["majority_rate"]]
        for key in probes:
            hit = sub.filter((pl.col("probe_model") == key[0]) & (pl.col("family") == key[1]))
            values.append(hit["test_macro_f1"][0] if hit.height else None)
        for j, value in enumerate(values):
            if value is None or not np.isfinite(value):
                continue
            x = i + (j - (len(bars) - 1) / 2) * width
            ax.bar(x, value, width=width * 0.92, color=colors[j], label=bars[j][0] if i == 0 else None)
            ax.text(x, value + 0.01, f"{value:.2f}", ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.set_xticks(range(len(datasets)),
                  [f"{ds}\n(scored: {best.filter(pl.col('dataset') == ds)['scorer_model'][0]})" for ds in datasets])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy / test macro F1")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)), frameon=False)
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------- k-sparse probing


@_styled
def ksparse_curves(ksparse: pl.DataFrame) -> Figure:
    """Test macro F1 against k (log x) of the CV-chosen (:func:`saeprobe.tables.cv_choice`) SAE and hidden-state k-sparse probe at each k.

    One panel per (dataset, ranking); one line per model and family (SAE solid, hidden dashed),
    with the test macro F1's bootstrap interval as error bars. Input: ``ksparse.parquet``
    (:data:`saeprobe.ksparse_tables.KSPARSE_SCHEMA`).
    """
    title = "k-sparse probes: test macro F1 against k (CV-chosen configuration at each k; bars: 95% bootstrap interval)"
    if ksparse.is_empty():
        return _empty(title, "ksparse.parquet has no rows")
    best = cv_choice(ksparse, ["dataset", "ranking", "model", "family", "k"]).sort(
        ["dataset", "ranking", "model", _family_rank(), "k"])
    panels = best.select("dataset", "ranking").unique(maintain_order=True).rows()
    colors = _color_map(sorted(best["model"].unique().to_list()))
    fig, axes = _figure(len(panels))
    for ax, (ds, ranking) in zip(axes, panels, strict=True):
        sub = best.filter((pl.col("dataset") == ds) & (pl.col("ranking") == ranking))
        for (model, family), line in sub.group_by(["model", "family"], maintain_order=True):
            ax.plot(line["k"], line["test_macro_f1"], marker="o" if family == "sae" else "s", markersize=3.5,
                    linestyle="-" if family == "sae" else "--", color=colors[model], label=f"{model} · {FAMILY_LABEL[family]}")
            _errorbars(ax, line["k"], line, colors[model])
        ax.set_xscale("log")
        _f1_panel(ax, f"{ds} · {ranking}", "k (features kept, log scale)", _interval_values(sub) + sub["test_macro_f1"].to_list())
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig


@_styled
def binarize_vs_ksparse(versus: pl.DataFrame) -> Figure:
    """Binarized all-feature SAE probe (line and band: test macro F1 and its bootstrap interval) against
    k-sparse probes on the raw features of the same store and pooling (one line per ranking).

    One panel per (dataset, model): the binarized probe chosen on CV there (one-standard-error rule).
    Input: ``binarize_vs_ksparse.parquet`` (:func:`saeprobe.ksparse_tables.binarize_vs_ksparse`).
    """
    title = "Binarization against feature selection: binarized all-feature probe (band) vs k-sparse probes on raw features"
    if versus.is_empty():
        return _empty(title, "binarize_vs_ksparse.parquet has no rows")
    keys = ["dataset", "model", "source", "layer", "pooling", "threshold"]
    probes = versus.select(*keys, cv_macro_f1="binarized_cv_macro_f1", cv_macro_f1_se="binarized_cv_macro_f1_se",
                           n_features="binarized_n_features",
                           mean_active_features="binarized_mean_active_features").unique(keys, maintain_order=True)
    cells = cv_choice(probes, ["dataset", "model"]).sort(["dataset", "model"])
    fig, axes = _figure(cells.height)
    for ax, cell in zip(axes, cells.iter_rows(named=True), strict=True):
        sub = versus.filter(pl.all_horizontal(pl.col(c) == cell[c] for c in keys))
        rankings = sub["ranking"].unique(maintain_order=True).to_list()
        colors = _color_map(rankings)
        for ranking in rankings:
            line = sub.filter(pl.col("ranking") == ranking).sort("k")
            ax.plot(line["k"], line["ksparse_test_macro_f1"], marker="o", markersize=3.5, color=colors[ranking],
                    label=f"k-sparse on raw features ({ranking})")
        b = sub.row(0, named=True)
        ax.axhline(b["binarized_test_macro_f1"], color="0.2", linewidth=1.3, label="binarized, all features")
        values = sub["ksparse_test_macro_f1"].to_list() + [b["binarized_test_macro_f1"]]
        if b["binarized_test_macro_f1_lo"] is not None:
            ax.axhspan(b["binarized_test_macro_f1_lo"], b["binarized_test_macro_f1_hi"], color="0.5", alpha=0.18, linewidth=0)
            values += [b["binarized_test_macro_f1_lo"], b["binarized_test_macro_f1_hi"]]
        ax.set_xscale("log")
        _f1_panel(ax, f"{cell['dataset']} · {cell['source']} L{cell['layer']} {cell['pooling']} > {cell['threshold']:g}",
                  "k (features kept, log scale)", values)
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------- which SAE probes best


def sae_entry(row: dict[str, Any]) -> str:
    """The ``saes`` entry of the configuration that a ``tables/saes`` row's SAE comes from.

    A sweep entry expands into SAEs named ``<entry>_w<width>_<k|l0c|l1c><value>``
    (:func:`saeprobe.config.expand_sae_sweeps`, DESIGN §5): that suffix is removed when it is the
    one the row's own ``width``, ``sparsity_key`` and ``sparsity`` give. Any other name (an
    entry without lists, a pretrained SAE) is its own entry.
    """
    name, key, value, width = row["sae"], row.get("sparsity_key"), row.get("sparsity"), row.get("width")
    if key in SPARSITY_TAG and value is not None and width is not None:
        suffix = sweep_suffix(int(width), key, value)
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


LINE_KEYS = ["model", "entry", "architecture", "width", "layer"]  # one line of the SAE figures: a sparsity sweep


def _sae_line_label(row: dict[str, Any]) -> str:
    """``<entry> (<model> L<layer>, <architecture> <width>)`` (no layer part when the row has none)."""
    layer = f" L{row['layer']}" if row.get("layer") is not None else ""
    return f"{row['entry']} ({row['model']}{layer}, {row['architecture']} {width_label(row['width'])})"


def _with_entry(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with the column ``entry`` (:func:`sae_entry`)."""
    return df.with_columns(entry=pl.Series([sae_entry(r) for r in df.iter_rows(named=True)], dtype=pl.String))


def _l0_axis(ax: Any) -> None:
    """Log-scaled L0 axis with plain numbers (16, 20, 30) rather than 2 × 10¹."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.LogFormatter())
    ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))


def _frontier_lines(ax: Any, df: pl.DataFrame, y: str, colors: dict[str, Any], marker: str, style: str,
                    legend: bool = True) -> None:
    """One line per SAE sweep (:data:`LINE_KEYS`: a configuration entry's SAEs of one width, at one
    layer) of ``y`` against L0, through its sparsities sorted by L0, with the bootstrap interval of
    each point (``<y>_lo`` / ``_hi``) as an error bar. ``df`` needs the ``entry`` column
    (:func:`_with_entry`); ``legend``: label the lines for the legend."""
    for values, line in df.sort([*LINE_KEYS, "l0"], nulls_last=True).group_by(LINE_KEYS, maintain_order=True):
        line = line.filter(pl.col(y).is_not_null() & pl.col("l0").is_not_null())
        if line.is_empty():
            continue
        label = _sae_line_label(dict(zip(LINE_KEYS, values, strict=True)))
        ax.plot(line["l0"], line[y], marker=marker, linestyle=style, color=colors[label],
                label=label if legend else "_nolegend_")
        _errorbars(ax, line["l0"], line, colors[label], column=y)


@_styled
def sae_frontier(saes: pl.DataFrame) -> Figure:
    """Probe test macro F1 against held-out L0, one panel per dataset: the sparsity-quality frontier.

    One line per SAE sweep — the SAEs of one configuration entry (:func:`sae_entry`), width and
    layer — through its sparsities sorted by L0: solid = the all-feature grid probe, dashed = the
    k-sparse probe, each the CV-best over poolings / binarizations (rankings / k). Two entries
    of the same architecture, width and layer (another training set, another setting) are two
    lines. SAEBench (Karvonen et al. 2025) recommends comparing SAEs at matched L0, as most
    metrics move with sparsity.
    """
    title = "Which SAE probes best: test macro F1 against L0 (solid: all features; dashed: k-sparse)"
    df = saes.filter(pl.col("dataset").is_not_null() & pl.col("grid_test_macro_f1").is_not_null())
    if df.is_empty():
        return _empty(title, "no SAE probes in saes.parquet")
    df = _with_entry(df)
    datasets = df["dataset"].unique(maintain_order=True).to_list()
    labels = sorted({_sae_line_label(r) for r in df.iter_rows(named=True)})
    colors = _color_map(labels)
    fig, axes = _figure(len(datasets))
    for ax, ds in zip(axes, datasets, strict=True):
        sub = df.filter(pl.col("dataset") == ds)
        _frontier_lines(ax, sub, "grid_test_macro_f1", colors, "o", "-")
        _frontier_lines(ax, sub, "ksparse_test_macro_f1", colors, "s", "--", legend=False)
        _l0_axis(ax)
        columns = [f"{c}{end}" for c in ("grid_test_macro_f1", "ksparse_test_macro_f1") for end in ("", "_lo", "_hi")]
        values = [v for c in columns if c in sub.columns for v in sub[c].drop_nulls().to_list()]
        _f1_panel(ax, ds, "L0 on held-out documents (log scale)", values)
    styles = [Line2D([], [], color="black", marker="o", linestyle="-", label="all-feature probe")]
    if df["ksparse_test_macro_f1"].drop_nulls().len():
        styles.append(Line2D([], [], color="black", marker="s", linestyle="--", label="k-sparse probe"))
    _legend_below(fig, axes, styles)
    _suptitle(fig, title)
    return fig


@_styled
def sae_reconstruction(saes: pl.DataFrame) -> Figure:
    """Explained variance (left) and, for causal LMs, loss recovered (right) against held-out L0,
    one line per SAE sweep (configuration entry, width and layer, as in :func:`sae_frontier`)
    through its sparsities."""
    title = "SAE reconstruction against sparsity (held-out documents)"
    df = saes.unique(["sae", "layer"], maintain_order=True).filter(pl.col("l0").is_not_null())
    if df.is_empty():
        return _empty(title, "no SAE quality rows in saes.parquet")
    df = _with_entry(df)
    labels = sorted({_sae_line_label(r) for r in df.iter_rows(named=True)})
    colors = _color_map(labels)
    has_loss = df["loss_recovered"].drop_nulls().len() > 0
    fig, axes = _figure(2 if has_loss else 1)
    panels = [("explained_variance", "explained variance")] + ([("loss_recovered", "loss recovered")] if has_loss else [])
    for ax, (column, name) in zip(axes, panels, strict=True):
        _frontier_lines(ax, df, column, colors, "o", "-")
        _l0_axis(ax)
        ax.set_xlabel("L0 (log scale)")
        ax.set_ylabel(name)
        ax.set_title(name)
    _legend_below(fig, axes)
    _suptitle(fig, title)
    return fig

"""What the report holds, decided from the config; HTML pages of result tables for it.

:func:`figure_plan` names the figures a run makes and the table each is drawn from, from the
configuration alone, so Snakemake knows every output when it builds the DAG. This module is
imported by the Snakefile, so it imports nothing heavy at module level (no matplotlib, no
polars).

:func:`table_page` renders a polars frame as one self-contained HTML page (numbers rounded,
optionally one table per value of a column): the Snakemake report shows HTML inline but CSV
only as a download.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from saeprobe import config as sc

if TYPE_CHECKING:
    import polars as pl

TABLE_PATHS = {
    "grid": "results/tables/grid.parquet",
    "transfer": "results/tables/transfer.parquet",
    "sweep": "results/tables/sweep.parquet",
    "behaviour": "results/tables/behaviour.parquet",
}


def figure_plan(config: dict[str, Any]) -> dict[str, str]:
    """Figure name -> the table (key of :data:`TABLE_PATHS`) it is drawn from, for a validated config.

    - ``f1_by_layer`` (grid): when the grid has any SAE or hidden-state probe;
    - ``f1_by_width``, ``pooling_binarize`` (grid): when the grid has SAE probes;
    - ``transfer_<dataset>`` (transfer): per ``transfer.datasets`` entry that has feature cells;
    - ``data_size`` (sweep): when the sweep has anything to run;
    - ``behaviour`` (behaviour): when ``behaviour`` has entries.
    """
    plan: dict[str, str] = {}
    cells = sc.probe_cells(config)
    if cells:
        plan["f1_by_layer"] = "grid"
    if any(c.source != sc.HIDDEN for c in cells):
        plan["f1_by_width"] = "grid"
        plan["pooling_binarize"] = "grid"
    transfer = {c.dataset for c in sc.transfer_cells(config)}
    for ds in config.get("transfer", {}).get("datasets", []):
        if ds in transfer:
            plan[f"transfer_{ds}"] = "transfer"
    if config.get("sweep", {}).get("datasets") and sc.sweep_targets(config):
        plan["data_size"] = "sweep"
    if config.get("behaviour"):
        plan["behaviour"] = "behaviour"
    return plan


def top_feature_cells(config: dict[str, Any]) -> list[sc.ProbeCell]:
    """The SAE probe cells whose best one per (dataset, source) the top-features table opens."""
    return [c for c in sc.probe_cells(config) if c.source != sc.HIDDEN]


def top_feature_inputs(config: dict[str, Any]) -> dict[str, Any]:
    """Every file the ``top_features`` stage may open, by kind.

    Which SAE probe is best per (dataset, source) is known only once ``grid.parquet`` exists,
    so the coefficients and code stores of every SAE cell are inputs; tokens only for text
    datasets; the model folder for workflow-built (random) models, whose tokenizer lives there.
    """
    cells = top_feature_cells(config)
    text = [c for c in cells if sc.dataset_kind(config, c.dataset) == "text"]
    models = sorted({c.model for c in text})
    return {
        "grid": TABLE_PATHS["grid"],
        "coef": sorted({c.path_in("probes", "coef.npz") for c in cells}),
        "codes": sorted({f"results/features/{c.model}/{c.dataset}/{c.source}/layer_{c.layer}.zarr" for c in cells}),
        "data": sorted({f"results/data/{c.dataset}.parquet" for c in cells}),
        "tokens": sorted({f"results/tokens/{c.model}/{c.dataset}.parquet" for c in text}),
        "models": [f"results/models/{m}" for m in models if "random" in config["models"][m]],
    }

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f2f2f2; position: sticky; top: 0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; } p.note { color: #444; max-width: 70em; }
"""


def _cell(value: object, digits: int) -> tuple[str, bool]:
    if value is None:
        return "–", False
    if isinstance(value, float):
        return (f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2g}"), True
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), True
    return html.escape(str(value)), False


def table_html(df: pl.DataFrame, digits: int = 3) -> str:
    """One ``<table>`` of ``df`` (floats rounded to ``digits``, nulls as –)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.iter_rows():
        cells = []
        for value in row:
            text, numeric = _cell(value, digits)
            cells.append(f"<td class='num'>{text}</td>" if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def table_page(df: pl.DataFrame, title: str, note: str = "", group_by: str | None = None,
               drop: Sequence[str] = (), digits: int = 3) -> str:
    """A self-contained HTML page: title, note, then the table (one per ``group_by`` value)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    shown = df.drop([c for c in drop if c in df.columns])
    if shown.is_empty():
        parts.append("<p>No rows.</p>")
    elif group_by and group_by in shown.columns:
        for (key,), part in shown.group_by([group_by], maintain_order=True):
            parts.append(f"<h2>{html.escape(str(key))}</h2>")
            parts.append(table_html(part.drop(group_by), digits))
    else:
        parts.append(table_html(shown, digits))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

"""HTML pages of result tables for the Snakemake report.

What the report holds (figures, pages, top-feature cells) is planned from the config by
:class:`saeprobe.grid.Plan`. :func:`table_page` renders a polars frame as one self-contained
HTML page (numbers rounded, optionally one table per value of a column): the Snakemake report
shows HTML inline but CSV only as a download.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

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

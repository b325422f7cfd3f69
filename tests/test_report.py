"""The report: a tiny workflow (random Gemma 2, a pretrained-format JumpReLU SAE, 90 jailbreak
prompts, a tiny training-size sweep) builds its figures, top features and table pages, then
`snakemake --report` writes one HTML file that holds them; headless Chromium renders it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import saeprobe.grid as sg

from tests.helpers import jailbreak_slice, snakemake, write_config

pytestmark = pytest.mark.workflow

CHROMIUM = Path("/usr/bin/chromium")
FIGURES = ["f1_by_layer", "f1_by_width", "pooling_binarize", "data_size"]


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, tiny_gemma2, jumprelu_dir):
    workdir = tmp_path_factory.mktemp("report")
    jailbreak_slice(60, 30).write_parquet(workdir / "jailbreak_small.parquet")  # = .test/data's slice
    cfg = {  # 16 jobs: one layer, one SAE, two binarizations, one sweep cell
        "seed": 0,
        "device": "cpu",
        "datasets": {"jailbreak": {"path": str(workdir / "jailbreak_small.parquet")}},
        "models": {"tiny_gemma2": {"path": str(tiny_gemma2), "layers": [1], "max_length": 64, "token_budget": 512}},
        "saes": {"jumprelu": {"model": "tiny_gemma2", "path": str(jumprelu_dir)}},
        "features": {"poolings": ["top2"], "binarize": [None, 0.5], "hidden_poolings": ["last"]},
        "probe": {"Cs": [0.1, 1.0], "cv_folds": 3},
        "tfidf": {"enabled": False},
        "sweep": {"datasets": ["jailbreak"], "sizes": [8, None], "repeats": 2, "poolings": ["top2"],
                  "binarize": [0.5], "hidden_poolings": [], "tfidf": False},
        "report": {"top_features": 3, "contexts": 2, "context_tokens": 4},
    }
    write_config(workdir, cfg)
    snakemake(workdir)
    report = workdir / "report.html"
    snakemake(workdir, "--report", str(report))
    return workdir, report


def test_figures_and_top_features_are_built(report_run):
    workdir, _ = report_run
    res = workdir / "results"
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 5000, (name, ext)
    assert not (res / "figures" / "behaviour.png").exists()  # not configured, not planned
    top = pl.read_parquet(res / "tables" / "top_features.parquet")
    grid = pl.read_parquet(res / "tables" / "grid.parquet").filter(pl.col("family") == "sae")
    best = grid.sort("cv_macro_f1", descending=True, maintain_order=True).row(0, named=True)
    assert top["source"].unique().to_list() == ["jumprelu"]
    assert top.select("layer", "pooling", "binarize").unique().row(0) == (best["layer"], best["pooling"], best["binarize"])
    assert set(top["class_name"]) <= {"benign", "jailbreak"} and top.height <= 6
    contexts = [c for row in top["contexts"].to_list() for c in row]
    assert contexts and all("«" in c["text"] and "»" in c["text"] for c in contexts)
    assert all(c["activation"] > 0 for c in contexts)
    # The listed weights are the probe's own coefficients, with the binary sign convention.
    with np.load(res / "probes/tiny_gemma2/jailbreak/jumprelu" / f"layer_{best['layer']}"
                 / f"{best['pooling']}__{sg.binarize_name(best['binarize'])}.coef.npz") as npz:
        coef = npz["coef"][0]
    for row in top.iter_rows(named=True):
        assert row["weight"] == pytest.approx(coef[row["feature"]])
        assert (row["weight"] > 0) == (row["class_name"] == "jailbreak")
    md = (res / "tables" / "top_features.md").read_text()
    assert "## jailbreak · jumprelu" in md and "«" in md
    page = (res / "report" / "best.html").read_text()
    assert "vs_hidden_verdict" in page and "selected_on" not in page  # CV selection only; MOSAIC's is best_on_test


def test_report_holds_figures_tables_and_captions(report_run):
    _, report = report_run
    text = report.read_text()
    assert len(text) > 100_000
    for name in [*FIGURES, "top_features", "best"]:
        assert name in text, name
    assert "saeprobe: sparse-autoencoder feature probes" in text  # workflow.rst, the front page
    assert "CV macro F1" in text and "MOSAIC" in text  # captions rendered


def _chromium(html: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``html`` with the given extra arguments (a fresh, throw-away profile)."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=15000", *args,
               f"file://{html}"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def opening(report: Path, out: Path, result_suffix: str, category: str) -> Path:
    """A copy of the report that opens ``category`` and shows the result whose path ends with
    ``result_suffix`` (the report is a React app; this is what clicking would do)."""
    script = ("<script>setTimeout(function () { app.showCategory(%r); }, 300); setTimeout(function () {"
              "var k = Object.keys(results).find(function (p) { return p.endsWith(%r); });"
              "new ToggleViewManager(app).handleSelectedResult(k); }, 800);</script>" % (category, result_suffix))
    head, tail = report.read_text().rsplit("</body>", 1)  # the inlined libraries contain "</body>" too
    out.write_text(head + script + "</body>" + tail)
    return out


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")
def test_report_renders_in_headless_chromium(report_run, tmp_path):
    from PIL import Image

    _, report = report_run
    page = opening(report, tmp_path / "figure.html", "f1_by_layer.png", "Figures")
    # The rendered DOM (after the report's scripts ran) shows the menu and the figure itself.
    dom = _chromium(page, "--dump-dom").stdout
    assert "Top SAE features" in dom and "Probe grid" in dom, dom[-2000:]
    assert '<img src="data:image/png' in dom
    png = tmp_path / "report.png"
    proc = _chromium(page, f"--screenshot={png}")
    assert png.exists(), proc.stderr[-2000:]
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape[:2] == (1000, 1400)
    assert image.std() > 10  # not a blank page
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # not a uniform fill
    content = image[:, 300:]  # right of the navigation bar
    saturation = content.max(axis=2) - content.min(axis=2)
    assert (saturation > 80).sum() > 300  # the plot's coloured markers and lines, not just text
    keep = os.environ.get("SAEPROBE_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)

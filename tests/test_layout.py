"""The results layout has one owner (saeprobe.layout): rules, scripts and modules agree with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import saeprobe.layout as sl
from saeprobe.grid import Unit
from tests.conftest import ROOT, SHARED

# What each rule writes, as layout patterns. A rule whose output is typed by hand, or points at
# another pattern, fails test_every_job_output_is_its_rules_layout_pattern.
RULE_OUTPUTS = {
    "prepare_dataset": [sl.DATA], "prepare_images": [sl.DATA], "tokenize": [sl.TOKENS], "init_random_model": [sl.MODEL],
    "convert_gguf": [sl.MODEL],
    "score_behaviour": [sl.BEHAVIOUR], "extract_activations": [sl.ACTIVATIONS],
    "extract_image_activations": [sl.ACTIVATIONS], "train_sae": [sl.SAE], "encode_sae": [sl.CODES],
    "sae_quality": [sl.SAE_QUALITY], "sae_table": [sl.TABLE],
    "pool": [sl.POOLED], "fit_probe": [sl.PROBES], "fit_tfidf": [sl.TFIDF, sl.TFIDF_PREDICTIONS], "transfer": [sl.TRANSFER],
    "ksparse": [sl.KSPARSE], "baselines": [sl.BASELINES], "ksparse_tables": [sl.TABLE], "summary": [sl.TABLE],
    "grid_splits": [sl.TABLE], "draw_splits": [sl.SPLITS],
    "sweep": [sl.SWEEP], "sweep_tfidf": [sl.SWEEP_TFIDF], "tables": [sl.TABLE], "transfer_table": [sl.TABLE],
    "sweep_table": [sl.TABLE], "behaviour_table": [sl.TABLE], "top_features": [sl.TOP_FEATURES],
    "figures": [sl.FIGURE], "report_tables": [sl.REPORT_PAGE],
}


def regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_]+\})", pattern)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def test_no_results_path_is_typed_outside_the_layout_module():
    files = [ROOT / "Snakefile", *ROOT.glob("workflow/rules/*.smk"), *ROOT.glob("workflow/scripts/*.py"),
             *ROOT.glob("src/saeprobe/*.py")]
    typed = re.compile(r"results/[A-Za-z{<]")
    offenders = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in files if f.name != "layout.py"
                 for i, line in enumerate(f.read_text().splitlines(), 1) if typed.search(line)]
    assert not offenders, "paths under results/ belong in saeprobe.layout:\n" + "\n".join(offenders)


def test_the_checker_sees_a_typed_path(tmp_path):
    assert re.compile(r"results/[A-Za-z{<]").search('    output: "results/pooled/{model}.npz"')


@pytest.mark.workflow
def test_every_job_output_is_its_rules_layout_pattern(tmp_path):
    """In the default config's DAG (which has every rule), each job's outputs match its rule's layout pattern."""
    (tmp_path / "shared").symlink_to(SHARED)
    workdir = tmp_path / "run"
    workdir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(ROOT / "config" / "config.yaml"), "--summary", "--nolock", "--cores", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen: dict[str, int] = {}
    wrong = []
    for line in proc.stdout.splitlines()[1:]:
        output, _, rule = line.split("\t")[:3]
        seen[rule] = seen.get(rule, 0) + 1
        if not any(regex(p).fullmatch(output) for p in RULE_OUTPUTS.get(rule, [])):
            wrong.append(f"{rule}: {output}")
    assert not wrong, "outputs outside their rule's layout pattern:\n" + "\n".join(wrong[:20])
    # The default config exercises every rule but the re-drawn splits' two (probe.split_seeds is empty there;
    # .test/config/full.yaml plans them, tests/test_test_configs.py) and convert_gguf where it has no GGUF
    # model (tests/test_gguf.py plans and runs it).
    models = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["models"].values()
    gguf = any("gguf" in spec or "gguf_package" in spec for spec in models)
    assert set(seen) == set(RULE_OUTPUTS) - {"draw_splits", "grid_splits"} - (set() if gguf else {"convert_gguf"})


def test_cell_files_live_in_their_unit_folder():
    unit = Unit("m", "d", "s", 3)
    assert unit.folder(sl.POOLED) == "results/pooled/m/d/s/layer_3"
    assert sl.cell_file(unit.folder(sl.PROBES), "top20", "gt1", "json") == "results/probes/m/d/s/layer_3/top20__gt1.json"


def test_a_damaged_file_in_a_folder_output_names_the_folder_to_rebuild():
    assert sl.output_of("results/pooled/m/d/s/layer_3/mean.npz") == "results/pooled/m/d/s/layer_3"
    assert sl.output_of(Path("/w/results/probes/m/d/hidden/layer_0/max__raw.json")) == "/w/results/probes/m/d/hidden/layer_0"
    assert sl.output_of("results/features/m/d/s/layer_1.zarr/layer/c/0/0") == "results/features/m/d/s/layer_1.zarr"
    assert sl.output_of("results/data/d.parquet") == "results/data/d.parquet"  # a file output: itself


def test_every_rule_has_a_slurm_group():
    """profiles/slurm groups every rule into a submission (score_behaviour, one long GPU job per entry,
    on purpose not): a rule left out between two grouped ones (e.g. a gathering table read by the
    report pages) makes Snakemake refuse the whole DAG on a cluster."""
    import yaml

    rules = {m.group(1) for path in ROOT.glob("workflow/rules/*.smk")
             for m in re.finditer(r"^rule (\w+):", path.read_text(), re.M)}
    groups = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["groups"]
    assert rules - set(groups) == {"score_behaviour"}, sorted(rules - set(groups))
    assert set(groups) <= rules, sorted(set(groups) - rules)

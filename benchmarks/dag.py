"""DAG-scale benchmark: time ``snakemake -n`` on the paper's configuration, or on a generated grid.

``config/paper.yaml`` (the default) is planned in a scratch folder next to a link to the shared
data folder (its behaviour files are ``../shared/data/...``). The generated grid (``--generated``): 3 Gemma 2 models x 3 layers x 2 Gemma Scope widths x N hub datasets x poolings
[sum, top20, top50, mean, max, last] x binarize [null, 1.0], plus the hidden-state baseline and
TF-IDF. Models, SAEs and datasets are hub ids that cannot be reached here: a dry run must not
read them (it only plans), so the dry run works offline and is what is timed.

    python benchmarks/dag.py                  # config/paper.yaml
    python benchmarks/dag.py --generated [--datasets 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"

GEMMA = {  # model -> (hub id, layers, Gemma Scope release, widths)
    "gemma-2-2b": ("google/gemma-2-2b", [5, 12, 19], "gemma-scope-2b-pt-res-canonical", ["16k", "65k"]),
    "gemma-2-9b": ("google/gemma-2-9b", [9, 20, 31], "gemma-scope-9b-pt-res-canonical", ["16k", "131k"]),
    "gemma-2-9b-it": ("google/gemma-2-9b-it", [9, 20, 31], "gemma-scope-9b-it-res-canonical", ["16k", "131k"]),
}
POOLINGS = ["sum", "top20", "top50", "mean", "max", "last"]


def paper_grid_config(n_datasets: int = 10) -> dict[str, Any]:
    """A config with the paper grid's shape; every source is a hub id (never read by a dry run)."""
    datasets = {f"hub_set_{i}": {"hub": f"example/hub-set-{i}", "split_column": None} for i in range(n_datasets)}
    models = {name: {"hub": hub, "layers": layers, "dtype": "bfloat16"} for name, (hub, layers, _, _) in GEMMA.items()}
    saes = {
        f"{name}-res-{width}": {"model": name, "release": release, "sae_id": f"layer_{{layer}}/width_{width}/canonical"}
        for name, (_, _, release, widths) in GEMMA.items() for width in widths
    }
    return {
        "offline": True, "device": "cuda", "datasets": datasets, "models": models, "saes": saes,
        "features": {"poolings": POOLINGS, "binarize": [None, 1.0], "hidden_poolings": ["mean", "last"]},
    }


def dry_run(workdir: Path, config: Path, snakefile: Path = ROOT / "Snakefile") -> dict[str, Any]:
    """Run ``snakemake -n`` once; return wall and CPU seconds and the planned job count.

    CPU seconds (user + system of the snakemake process) are what a quiet machine's wall time
    would be: on a loaded machine the wall time also counts waiting for a core.
    """
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile", str(snakefile),
           "--directory", str(workdir), "--configfile", str(config), "--cores", "1"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    out = proc.stdout + proc.stderr
    total = re.search(r"^total\s+(\d+)", out, re.M)
    return {"wall_s": wall, "cpu_s": cpu, "jobs": int(total.group(1)) if total else None, "output_tail": out[-1500:]}


def run_paper(config: Path = PAPER, shared: Path = ROOT.parent / "shared") -> dict[str, Any]:
    """``snakemake -n`` on the paper's configuration (every cell of its grid planned)."""
    scratch = Path(tempfile.mkdtemp(prefix="saeprobe-dag-"))
    (scratch / "shared").symlink_to(shared.resolve())
    (scratch / "run").mkdir()
    result = dry_run(scratch / "run", config)
    result.update({"config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config)})
    return result


def run(n_datasets: int = 10, keep: Path | None = None) -> dict[str, Any]:
    """``snakemake -n`` on a generated grid of the paper's shape with ``n_datasets`` hub datasets."""
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="saeprobe-dag-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(paper_grid_config(n_datasets), sort_keys=False))
    result = dry_run(workdir, config)
    result.update({"datasets": n_datasets, "models": len(GEMMA), "config": str(config)})
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", action="store_true", help="a generated grid instead of config/paper.yaml")
    ap.add_argument("--datasets", type=int, default=10)
    ap.add_argument("--keep", type=Path, help="write the config into this folder (default: a temporary one)")
    args = ap.parse_args(argv)
    res = run(args.datasets, args.keep) if args.generated else run_paper()
    res.pop("output_tail")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

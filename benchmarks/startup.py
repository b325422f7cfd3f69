"""Job start-up: what each workflow script imports before it starts working, and what that costs.

Snakemake runs every job's script in a fresh interpreter, so whatever a script imports at module
level (itself, and through saeprobe's modules) is paid once per job. For each script in
``workflow/scripts/`` this runs its module-level import statements (read with ``ast``) in a fresh
interpreter ``--repeats`` times and prints the least wall and the least CPU seconds (user + system
of the child: less sensitive to other processes than wall time), and which heavy packages they load.
The SAE jobs import SAELens as the first step of their work (``saeprobe.sae.load_sae`` /
``train_sae``): a second row per SAE job adds ``import sae_lens`` — what such a job pays before
it reads an activation. Reference rows break that down (bare interpreter, torch, torch +
transformer_lens, sae_lens, scikit-learn, ...).

    python benchmarks/startup.py                      # every script, 3 runs each
    python benchmarks/startup.py --scripts encode_sae,pool,fit_probe --repeats 5
    python benchmarks/startup.py --baseline /tmp/old  # also a checkout of another commit, interleaved
    python benchmarks/startup.py --config config/config.yaml   # x the jobs a dry run of it plans

``--baseline DIR``: DIR holds ``src/`` and ``workflow/scripts/`` of another commit (e.g.
``mkdir DIR && git archive REV src workflow | tar -x -C DIR``); each row also runs against it,
interleaved with this checkout's runs, and the CPU ratio (this / baseline) is printed.
``--config FILE``: a dry run of FILE (next to a link to the shared data folder, as benchmarks/dag.py
does) gives the number of jobs per script, and the table gets the start-up CPU seconds a whole
run spends per job kind. Children run without ``PYTHONDONTWRITEBYTECODE`` after one untimed
warm-up run each (as a real run's jobs find saeprobe's bytecode cached). Prints markdown; nothing
is asserted (tests/test_startup.py checks which packages load, not how fast).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Packages whose import costs a job a second or more (zarr: ~0.2 s) and that not every job uses.
HEAVY = ("torch", "sae_lens", "transformer_lens", "transformers", "datasets", "matplotlib", "sklearn", "zarr")
#: What a job's work imports first, inside saeprobe's functions (not avoidable by moving imports).
JOB_LAZY = {"encode_sae": "sae_lens", "train_sae": "sae_lens", "sae_quality": "sae_lens"}
REFERENCE = {
    "python (bare interpreter)": "pass",
    "numpy + scipy.sparse + polars": "import numpy, scipy.sparse, polars",
    "zarr": "import zarr",
    "sklearn (LogisticRegression)": "import sklearn.linear_model",
    "torch": "import torch",
    "torch + transformers (lazy module)": "import torch, transformers",
    "torch + transformer_lens": "import torch, transformer_lens",
    "sae_lens": "import sae_lens",
    "snakemake.script (every job's preamble)": "import snakemake.script",
}


def script_imports(path: Path) -> str:
    """The module-level import statements of a script, as one line of Python (``pass`` if none)."""
    tree = ast.parse(path.read_text(), str(path))
    stmts = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "; ".join(stmts) or "pass"


def measure(code: str, root: Path) -> dict[str, Any]:
    """One fresh interpreter running ``code`` with ``root/src`` first on the path: wall and CPU seconds,
    and which :data:`HEAVY` packages it left imported."""
    probe = f"{code}\nimport sys as _s, json as _j\nprint(_j.dumps([m for m in {list(HEAVY)!r} if m in _s.modules]))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(root / "src")
    env.setdefault("HF_HUB_OFFLINE", "1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed under {root}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "heavy": json.loads(proc.stdout.strip().splitlines()[-1])}


def job_counts(config: Path, shared: Path = ROOT.parent / "shared") -> dict[str, int]:
    """Rule -> number of jobs a dry run of ``config`` plans, in a scratch folder next to ``shared``
    (``../shared/...`` paths) that links ``.test`` (the test configs' paths)."""
    with tempfile.TemporaryDirectory(prefix="saeprobe-startup-") as tmp:
        scratch = Path(tmp)
        (scratch / "shared").symlink_to(shared.resolve())
        (scratch / "run").mkdir()
        (scratch / "run" / ".test").symlink_to(ROOT / ".test")
        cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(scratch / "run"), "--configfile", str(config.resolve()), "--cores", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    table = (proc.stdout + proc.stderr).split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def rows(scripts: list[str], roots: dict[str, Path], reference: bool = True) -> dict[str, dict[str, str]]:
    """Row name -> {variant: code to run}: each script's imports (read from each variant's own copy of
    the script), its job's lazy import where it has one, and (``reference``) the reference rows."""
    out: dict[str, dict[str, str]] = {}
    for name in scripts:
        codes = {v: script_imports(root / "workflow" / "scripts" / f"{name}.py") for v, root in roots.items()}
        out[name] = codes
        if name in JOB_LAZY:
            out[f"{name} + import {JOB_LAZY[name]}"] = {v: f"{c}; import {JOB_LAZY[name]}" for v, c in codes.items()}
    for label, code in (REFERENCE.items() if reference else ()):
        out[label] = {v: code for v in roots}
    return out


def run(scripts: list[str], repeats: int, baseline: Path | None = None, reference: bool = True) -> dict[str, Any]:
    """Every row in every variant (``this``, and ``baseline`` when given), ``repeats`` interleaved timed runs
    after one warm-up each; per row and variant the least wall and CPU seconds and the heavy packages."""
    roots = {"this": ROOT, **({"baseline": baseline} if baseline else {})}
    table = rows(scripts, roots, reference)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {r: {v: [] for v in roots} for r in table}
    for rep in range(repeats + 1):
        for row, codes in table.items():
            for variant, code in codes.items():
                result = measure(code, roots[variant])
                if rep:  # the first round is the warm-up
                    runs[row][variant].append(result)
    summary = {
        row: {v: {"wall_s": min(r["wall_s"] for r in rs), "cpu_s": min(r["cpu_s"] for r in rs), "heavy": rs[-1]["heavy"],
                  "runs": rs} for v, rs in variants.items()}
        for row, variants in runs.items()
    }
    return {"repeats": repeats, "baseline": str(baseline) if baseline else None, "rows": summary,
            "load_average": os.getloadavg()}


def job_count(row: str, counts: dict[str, int]) -> int | None:
    """How many jobs a row's start-up is paid by: its script's job count; None for reference rows and for
    an SAE job's bare-import row (its jobs are counted on its ``+ import sae_lens`` row)."""
    if row in REFERENCE or row in JOB_LAZY:
        return None
    return counts.get(row.split(" + import ")[0], 0)


def markdown(result: dict[str, Any], counts: dict[str, int] | None = None) -> str:
    """The result as a markdown table (and, with ``counts``, the start-up CPU seconds per job kind in a run)."""
    base = result["baseline"] is not None
    head = ["what", "heavy packages loaded", "wall s", "CPU s"]
    if base:
        head += ["baseline: heavy packages", "baseline wall s", "baseline CPU s", "CPU this/baseline"]
    if counts is not None:
        head += ["jobs", "CPU s x jobs"] + (["baseline CPU s x jobs"] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals = [0.0, 0.0]
    for row, variants in result["rows"].items():
        this = variants["this"]
        cells = [row, ", ".join(this["heavy"]) or "-", f"{this['wall_s']:.2f}", f"{this['cpu_s']:.2f}"]
        if base:
            b = variants["baseline"]
            cells += [", ".join(b["heavy"]) or "-", f"{b['wall_s']:.2f}", f"{b['cpu_s']:.2f}",
                      f"{this['cpu_s'] / b['cpu_s']:.2f}"]
        if counts is not None:
            n = job_count(row, counts)
            if n is None:
                cells += [""] * (2 + base)
            else:
                cells += [str(n), f"{n * this['cpu_s']:.0f}"]
                totals[0] += n * this["cpu_s"]
                if base:
                    cells.append(f"{n * variants['baseline']['cpu_s']:.0f}")
                    totals[1] += n * variants["baseline"]["cpu_s"]
        lines.append("| " + " | ".join(cells) + " |")
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    text = "\n".join(lines) + f"\n\nLeast of {result['repeats']} runs each (after a warm-up); load average at the end: {load}.\n"
    if counts is not None:
        text += f"Start-up CPU seconds of all planned jobs of these kinds: {totals[0]:.0f}"
        text += f" (baseline {totals[1]:.0f}).\n" if base else ".\n"
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scripts", help="comma-separated script names (default: every workflow/scripts/*.py)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row and variant (least is reported)")
    ap.add_argument("--baseline", type=Path, help="a checkout of another commit (src/ and workflow/scripts/)")
    ap.add_argument("--config", type=Path, help="multiply by the job counts of a dry run of this config")
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument("--no-reference", action="store_true", help="leave out the reference rows (torch, sae_lens, ...)")
    args = ap.parse_args(argv)
    scripts = args.scripts.split(",") if args.scripts else sorted(p.stem for p in (ROOT / "workflow" / "scripts").glob("*.py"))
    counts = job_counts(args.config) if args.config else None
    result = run(scripts, args.repeats, args.baseline, reference=not args.no_reference)
    if args.json:
        args.json.write_text(json.dumps({**result, "job_counts": counts}, indent=1))
    print(markdown(result, counts))


if __name__ == "__main__":
    main()

"""Job start-up: a workflow script's module-level imports load no heavy package its job does not use.

Snakemake runs each job's script in a fresh interpreter, so a heavy import pays its seconds once
per job (docs/DESIGN.md §6; benchmarks/startup.py measures them). Each script's module-level
import statements (read with ``ast``: the script's own imports and, through them, saeprobe's
modules) run in a fresh interpreter, and the heavy packages left in ``sys.modules`` must be among
those the job's work uses. Scripts with the same allowance run together in one interpreter (what
a union of imports loads is the union of what each loads); on a failure each script of the group
is checked alone, to name it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPTS = ROOT / "workflow" / "scripts"
#: Packages that cost a job a second or more to import (zarr ~0.2 s: the probe jobs read .npz, not stores).
HEAVY = ("torch", "sae_lens", "transformer_lens", "transformers", "datasets", "matplotlib", "sklearn", "zarr")
TORCH = {"torch", "transformers", "zarr"}  # a job that loads a model or tokenizer (transformers imports torch)
SAELENS = {"torch", "zarr", "sae_lens", "transformer_lens", "transformers", "datasets"}  # and what SAELens imports
SKLEARN = {"sklearn"}
NONE: set[str] = set()
#: Per script: the heavy packages its job's work uses (the most its imports may load).
USES = {
    "baselines": SKLEARN, "behaviour_table": NONE, "convert_gguf": {"torch", "transformers"}, "draw_splits": SKLEARN,
    "encode_sae": SAELENS, "extract_activations": TORCH, "extract_image_activations": TORCH | {"datasets"},
    "figures": {"matplotlib"}, "fit_probe": SKLEARN, "fit_tfidf": SKLEARN, "grid_splits": NONE,
    "init_random_model": {"torch", "transformers"}, "ksparse": SKLEARN, "ksparse_tables": NONE, "pool": {"zarr"},
    "prepare_dataset": SKLEARN | {"datasets"}, "prepare_images": SKLEARN | {"datasets"}, "report_tables": NONE,
    "sae_quality": SAELENS, "sae_table": NONE, "score_behaviour": TORCH | {"datasets"}, "summary": NONE,
    "sweep": SKLEARN, "sweep_table": NONE, "sweep_tfidf": SKLEARN, "tables": NONE, "tokenize": TORCH,
    # top_features reads probe coefficients with saeprobe.probes.load_coef, whose module fits probes (sklearn).
    "top_features": TORCH | SKLEARN, "train_sae": SAELENS, "transfer": SKLEARN, "transfer_table": NONE,
}


def imports_of(script: str) -> str:
    """The module-level import statements of ``workflow/scripts/<script>.py`` as one line of Python."""
    tree = ast.parse((SCRIPTS / f"{script}.py").read_text())
    return "; ".join(ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))) or "pass"


def heavy_loaded(code: str) -> set[str]:
    """The :data:`HEAVY` packages a fresh interpreter has imported after running ``code``, with this
    checkout's ``src`` first on the path (absolute: the tests may run from anywhere)."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def groups() -> dict[frozenset[str], list[str]]:
    out: dict[frozenset[str], list[str]] = {}
    for script, uses in USES.items():
        out.setdefault(frozenset(uses), []).append(script)
    return out


def test_every_script_says_what_it_uses():
    assert sorted(USES) == sorted(p.stem for p in SCRIPTS.glob("*.py"))
    assert all(set(uses) <= set(HEAVY) for uses in USES.values())


@pytest.mark.parametrize("uses", list(groups()), ids=lambda u: "+".join(sorted(u)) or "light")
def test_scripts_import_only_what_their_jobs_use(uses):
    scripts = groups()[uses]
    extra = heavy_loaded("; ".join(imports_of(s) for s in scripts)) - uses
    if extra:
        culprits = {s: sorted(heavy_loaded(imports_of(s)) - uses) for s in scripts}
        pytest.fail(f"import-time packages their jobs do not use: { {s: c for s, c in culprits.items() if c} }")


def test_the_check_sees_a_heavy_import():
    # The probe itself works: a light module plus torch is reported as loading torch.
    assert heavy_loaded("import saeprobe.layout; import torch") >= {"torch"}
    assert heavy_loaded("import saeprobe.layout") == set()

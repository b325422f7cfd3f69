"""Offline mode: make transformers, huggingface_hub, datasets and SAELens fail fast instead of
reaching the network.

Kept free of heavy imports (no torch) because the Snakefile imports it: every Snakemake
process — each cluster job parses the Snakefile twice — pays for what this module imports.
"""

from __future__ import annotations

import os
import sys

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def set_offline(offline: bool) -> None:
    """With ``offline=True``, forbid downloads in this process and in every job it starts.

    Sets ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and ``HF_DATASETS_OFFLINE`` (inherited by
    child processes and, through ``sbatch --export=ALL``, by SLURM jobs). huggingface_hub and
    datasets read these variables once, at import; when they are already imported their
    module-level flags are switched too. ``offline=False`` changes nothing (variables already
    set in the environment still apply).
    """
    if not offline:
        return
    for name in OFFLINE_VARS:
        os.environ[name] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None:
        ds_config.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
        ds_config.HF_DATASETS_OFFLINE = True  # type: ignore[attr-defined]


def is_offline() -> bool:
    """True when downloads are forbidden (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS[:2])


def offline_hint(what: str) -> str:
    """A sentence to append to a failed hub load: in offline mode, say why and what to do."""
    if not is_offline():
        return ""
    return (f" (offline mode: {what} is not in the local Hugging Face cache; set `offline: false` in the config to "
            "download it once, or point the config at a local folder)")

"""Atomic output writing and small file helpers.

Every output is first written under a temporary name in the same directory and renamed into
place only when complete, so an interrupted job never leaves a half-written file that looks
finished (``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def set_offline(offline: bool) -> None:
    """Make transformers / huggingface_hub / SAELens fail fast instead of reaching the network.

    Lives here, not in :mod:`saeprobe.models`, so that the Snakefile can call it without
    importing torch (seconds per ``snakemake`` invocation, dry runs included).
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Args:
        path: final file or directory path.
        directory: the caller writes a directory (e.g. a Zarr store) instead of a file.

    On an exception the temporary file/directory is removed and the exception re-raised;
    ``path`` is left untouched. An existing ``path`` is replaced.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp if directory else tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(target, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically. numpy scalars/arrays are converted."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def setup_logging(log_path: str | os.PathLike[str] | None) -> logging.Logger:
    """Send the ``saeprobe`` logger, warnings and stderr (tqdm bars) to ``log_path``.

    Used by the workflow scripts so each job's log file holds everything it reported.
    """
    logger = logging.getLogger("saeprobe")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives for the job
        sys.stderr = stream
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)
    return logger

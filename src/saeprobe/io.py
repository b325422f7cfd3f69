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
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from saeprobe import layout
from saeprobe.errors import CacheError, SaeprobeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Args:
        path: final file or directory path.
        directory: the caller writes a directory (e.g. a Zarr store) instead of a file.

    On an exception the temporary file/directory is removed and the exception re-raised;
    ``path`` is left untouched. An existing ``path`` is replaced. Temporaries left by a writer
    of the same path that was killed (SIGKILL, a node failure, a SLURM time limit: no cleanup
    ran) are removed first — Snakemake never runs two jobs for one output.

    The result gets the permissions an ordinary write would (the user's umask), not the
    private 0700/0600 of temporary files: collaborators on shared storage can read it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    mine = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.tmp")  # tempfile.mkdtemp's names, below
    for stale in final.parent.iterdir():
        if mine.fullmatch(stale.name):
            logging.getLogger("saeprobe").info("removing %s, left by an interrupted writer of %s", stale, final)
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp if directory else tmp / final.name
    try:
        yield target
        _umask_permissions(target)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(target, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def current_umask() -> int:
    """The process's umask (read from /proc on Linux, where it needs no change of state)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _umask_permissions(path: Path) -> None:
    """Give ``path`` (a file, or a directory and everything under it) umask permissions:
    directories 0777 & ~umask, files 0666 & ~umask (plus their execute bits)."""
    mask = current_umask()

    def fix(p: Path, is_dir: bool) -> None:
        mode = 0o777 if is_dir else 0o666 | (p.stat().st_mode & 0o111)
        os.chmod(p, mode & ~mask)

    if path.is_symlink() or not path.exists():
        return
    if not path.is_dir():
        fix(path, False)
        return
    fix(path, True)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            fix(Path(root) / d, True)
        for f in files:
            if not (Path(root) / f).is_symlink():
                fix(Path(root) / f, False)


def folder_files(paths: Iterable[str | os.PathLike[str]], ext: str) -> list[Path]:
    """``paths`` with every folder replaced by its ``*.<ext>`` files (sorted by name); files kept as given.

    The unit folders of the probe stages hold exactly the cells their job wrote: Snakemake
    removes a ``directory()`` output before rerunning its job.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob(f"*.{ext}")) if p.is_dir() else [p]
    return out


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
    """The parsed JSON file at ``path``.

    Raises:
        CacheError: the file is missing, truncated or not JSON (see :func:`reading`).
    """
    with reading(path):
        return json.loads(Path(path).read_text())


def read_parquet(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """``polars.read_parquet(path, **kwargs)`` of a cached table.

    Raises:
        CacheError: the file is missing, truncated or not Parquet (see :func:`reading`).
    """
    import polars as pl

    with reading(path):
        return pl.read_parquet(path, **kwargs)


# The command-line options a run was started with (--snakefile, --directory, --configfile,
# --config), shell-quoted: the Snakefile sets this variable in the main snakemake process, so that
# every job inherits it (locally, and under SLURM, where sbatch exports the environment) and a
# rebuild hint reproduces the run. Typed without its --configfile, `snakemake --forcerun <path>`
# would load the default configuration.
RUN_OPTIONS_ENV = "SAEPROBE_RUN_OPTIONS"


def run_options(*, configfiles: Iterable[str | os.PathLike[str]] = (), config_args: Iterable[str] = (),
                directory: str | os.PathLike[str] | None = None,
                snakefile: str | os.PathLike[str] | None = None) -> str:
    """The snakemake options that reproduce a run, shell-quoted, in the order snakemake documents
    them: ``--snakefile S --directory D --configfile F... --config K=V...`` (each only when given).

    Args:
        configfiles: absolute config file paths (``workflow.config_settings.configfiles``).
        config_args: ``--config`` overrides as ``key=value`` strings.
        directory: the working directory, when the run was given ``--directory``.
        snakefile: the Snakefile, when it is not ``Snakefile`` in the directory the command is typed in.
    """
    parts: list[str] = []
    if snakefile is not None:
        parts += ["--snakefile", str(snakefile)]
    if directory is not None:
        parts += ["--directory", str(directory)]
    configfiles = [str(f) for f in configfiles]
    if configfiles:
        parts += ["--configfile", *configfiles]
    config_args = list(config_args)
    if config_args:
        parts += ["--config", *config_args]
    return shlex.join(parts)


def rebuild_command(target: str | os.PathLike[str]) -> str:
    """``snakemake --forcerun <target>`` followed by the options of the run this process belongs to
    (:data:`RUN_OPTIONS_ENV`, set by the Snakefile; none outside a run), ready to be typed."""
    options = os.environ.get(RUN_OPTIONS_ENV, "").strip()
    return f"snakemake --forcerun {shlex.quote(str(target))}" + (f" {options}" if options else "")


def damaged(path: str | os.PathLike[str], exc: BaseException, *, part: str | None = None,
            rebuild: str | os.PathLike[str] | None = None, built: bool = True) -> CacheError:
    """The one-line :class:`CacheError` for a file whose read raised ``exc``.

    Args:
        path: the file (or Zarr store directory) that could not be read.
        part: where inside it, e.g. the Zarr chunk ``layer_1/c/3/0``.
        rebuild: the workflow output to rerun when it is not ``path`` itself (e.g. the SAE
            folder of a damaged ``sae_weights.safetensors``); by default the folder output
            holding ``path`` (:func:`saeprobe.layout.output_of`), else ``path``. The hint carries the
            run's options (:func:`rebuild_command`).
        built: False for a user's file the workflow did not write: the message asks to replace
            it instead of suggesting ``snakemake --forcerun``.
    """
    lines = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
    if part:
        what = f"{part}: {what}"
    if not built:
        return CacheError(f"{path}: damaged or incomplete file ({what}); the workflow did not build it: restore or replace it")
    return CacheError(f"{path}: damaged or incomplete cached file ({what}); rebuild it with: "
                      f"{rebuild_command(rebuild or layout.output_of(path))}  (or delete it and run snakemake again "
                      "with the same options)")


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], *, part: str | None = None, rebuild: str | os.PathLike[str] | None = None,
            built: bool = True) -> Iterator[None]:
    """Turn an exception raised while reading ``path`` into the :class:`CacheError` of :func:`damaged`.

    Wrap only the read (open, parse, decode), not computation on what was read. A
    :class:`SaeprobeError` (a message already meant for the user) and ``MemoryError`` pass
    through unchanged.
    """
    try:
        yield
    except (SaeprobeError, MemoryError):
        raise
    except Exception as exc:
        raise damaged(path, exc, part=part, rebuild=rebuild, built=built) from exc


def setup_logging(log_path: str | os.PathLike[str] | None) -> logging.Logger:
    """Send the ``saeprobe`` logger, warnings and stderr (tqdm bars) to ``log_path``.

    Used by the workflow scripts so each job's log file holds everything it reported. An
    uncaught :class:`~saeprobe.errors.SaeprobeError` (bad input or config) ends the job with its
    message alone — in the log and on the job's original stderr (the terminal locally, the SLURM
    log on a cluster) — instead of a traceback; any other exception is logged with its traceback.
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
    sys.excepthook = _excepthook
    return logger


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    logger = logging.getLogger("saeprobe")
    if issubclass(exc_type, SaeprobeError):
        logger.error("%s", exc)
        if sys.stderr is not sys.__stderr__ and sys.__stderr__ is not None:
            print(f"saeprobe: {exc}", file=sys.__stderr__)
    else:
        logger.error("unexpected error", exc_info=(exc_type, exc, tb))

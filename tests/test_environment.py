"""The pinned environment: constraints/lock.txt, environment.yml and pyproject.toml agree.

constraints/lock.txt (written by `make lock`) holds the exact version of every package of the
environment; `make`, ci/slurm_check.sh and environment.yml install with it. These tests fail
when environment.yml names a version the lock does not have (or a package it lacks), and when
a dependency that pyproject.toml declares (with every extra the Makefile or environment.yml
installs) is not pinned in the lock. The comparisons are also run on crafted mismatches, so a
check that stopped looking would fail here too.
"""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCK = ROOT / "constraints" / "lock.txt"
CPU = ROOT / "constraints" / "cpu.txt"
ENV = ROOT / "environment.yml"
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"
CUDA = ROOT / "constraints" / "cuda.txt"
LOCK_CUDA = ROOT / "constraints" / "lock-cuda.txt"
ENV_CUDA = ROOT / "environment-cuda.yml"

# Conda packages whose PyPI name differs; the lock uses the PyPI names.
CONDA_TO_PYPI = {"pytorch": "torch"}


class Lock:
    """A parsed lock file: pins by canonical name, nested constraint files, the Python it was made with."""

    def __init__(self, text: str):
        self.pins: dict[str, str] = {}
        self.includes: list[str] = []
        self.bad_lines: list[str] = []
        m = re.search(r"with Python (\d+\.\d+\.\d+)", text)
        self.python = m.group(1) if m else None
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-c "):
                self.includes.append(line[3:].strip())
                continue
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
            if not m:
                self.bad_lines.append(line)
                continue
            self.pins[canonicalize_name(m.group(1))] = m.group(2)


def environment_pins(env: dict) -> tuple[dict[str, str | None], list[str]]:
    """Packages environment.yml names, as {PyPI-style name: version or None when unpinned}, and its
    pip options (-c, --extra-index-url, -e ...). Conda's `name=version` and pip's `name==version` both count."""
    pins: dict[str, str | None] = {}
    options: list[str] = []
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                line = str(line).strip()
                if line.startswith("-"):
                    options.append(line)
                    continue
                req = Requirement(line)
                exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
                pins[canonicalize_name(req.name)] = exact[0] if len(exact) == 1 and len(req.specifier) == 1 else None
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:(==?)\s*([^\s=<>!,|*]+))?\s*", str(dep))
        if not m:  # a range, a wildcard or a build string: not an exact pin
            name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", str(dep)).group(1)
            pins[CONDA_TO_PYPI.get(name.lower(), canonicalize_name(name))] = None
            continue
        name = m.group(1).lower()
        pins[CONDA_TO_PYPI.get(name, canonicalize_name(name))] = m.group(3)
    return pins, options


def same_version(a: str, b: str) -> bool:
    """Equal versions, local part included (2.13.0 is not 2.13.0+cpu)."""
    try:
        return Version(a) == Version(b)
    except ValueError:
        return a == b


def environment_mismatches(pins: dict[str, str | None], lock: Lock) -> list[str]:
    """What environment.yml pins differently from the lock: unpinned, absent from the lock, other version.
    Python is compared with the Python the lock was made with."""
    problems = []
    for name, version in sorted(pins.items()):
        locked = lock.python if name == "python" else lock.pins.get(name)
        if locked is None:
            problems.append(f"{name}: not in the lock" if name != "python" else "python: the lock does not say")
        elif version is None:
            problems.append(f"{name}: unpinned in environment.yml (lock: {locked})")
        elif not same_version(version, locked):
            problems.append(f"{name}: environment.yml {version}, lock {locked}")
    return problems


def declared_requirements(pyproject: dict, extras: set[str]) -> list[Requirement]:
    """pyproject.toml's dependencies plus those of the given extras (an unknown extra raises KeyError)."""
    project = pyproject["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in sorted(extras):
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def unpinned_requirements(reqs: list[Requirement], lock: Lock) -> list[str]:
    """Declared requirements the lock does not pin, or pins at a version outside the declared range."""
    problems = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        locked = lock.pins.get(canonicalize_name(req.name))
        if locked is None:
            problems.append(f"{req}: not pinned in the lock")
        elif not req.specifier.contains(locked, prereleases=True):
            problems.append(f"{req}: lock pins {locked}")
    return problems


def installed_extras(*texts: str) -> set[str]:
    """Extras of every `.[a,b]` install of the project in these files, and the Makefile's LOCK_EXTRAS."""
    extras: set[str] = set()
    for text in texts:
        for group in re.findall(r"\.\[([A-Za-z0-9_,\- ]+)\]", text):
            extras |= {e.strip() for e in group.split(",") if e.strip()}
        for group in re.findall(r"^LOCK_EXTRAS\s*:?=\s*(\S+)", text, flags=re.M):
            extras |= set(group.split(","))
    return extras


@pytest.fixture(scope="module")
def lock() -> Lock:
    return Lock(LOCK.read_text())


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load(ENV.read_text())


# --- the repository's files ---------------------------------------------------------------------

def test_lock_is_exact_pins_and_includes_cpu_constraints(lock):
    assert not lock.bad_lines, f"lines of constraints/lock.txt that are not name==version: {lock.bad_lines}"
    assert len(lock.pins) > 100, "the lock should hold the whole environment, not only the direct dependencies"
    assert "saeprobe" not in lock.pins, "the project itself is not pinned (installs are editable)"
    assert lock.python, "the lock's header names the Python it was made with"
    # cpu.txt stays the one owner of the CPU torch build (and of any index option); the lock includes it.
    assert [(LOCK.parent / inc).resolve() for inc in lock.includes] == [CPU.resolve()]


def test_lock_torch_is_cpu_txt_torch(lock):
    cpu = Lock(CPU.read_text())
    assert cpu.pins["torch"].endswith("+cpu")
    assert lock.pins.get("torch") == cpu.pins["torch"], "make lock after changing constraints/cpu.txt"


def test_environment_yml_agrees_with_lock(env, lock):
    pins, options = environment_pins(env)
    assert {"python", "pip", "torch"} <= set(pins), pins
    assert environment_mismatches(pins, lock) == []
    # Every other package of the conda environment comes through the lock too.
    assert "-c constraints/lock.txt" in options
    assert (ENV.parent / "constraints" / "lock.txt").is_file()


def test_gpu_lock_is_the_lock_with_the_cuda_torch(lock):
    """constraints/lock-cuda.txt (make lock) pins what lock.txt pins, with cuda.txt's torch build."""
    cuda_lock, cuda = Lock(LOCK_CUDA.read_text()), Lock(CUDA.read_text())
    assert not cuda_lock.bad_lines and cuda_lock.python == lock.python
    assert [(LOCK_CUDA.parent / inc).resolve() for inc in cuda_lock.includes] == [CUDA.resolve()]
    assert "+cpu" not in cuda.pins["torch"] and same_version(cuda.pins["torch"], lock.pins["torch"].split("+")[0])
    assert cuda_lock.pins == {**lock.pins, "torch": cuda.pins["torch"]}, "run make lock (it writes lock-cuda.txt)"


def test_environment_cuda_yml_agrees_with_the_gpu_lock(env):
    env_cuda = yaml.safe_load(ENV_CUDA.read_text())
    pins, options = environment_pins(env_cuda)
    assert environment_mismatches(pins, Lock(LOCK_CUDA.read_text())) == []
    assert "-c constraints/lock-cuda.txt" in options and not any("whl/cpu" in o for o in options)
    # The same packages and extras as the CPU environment, only torch's build differs.
    cpu_pins, cpu_options = environment_pins(env)
    assert set(pins) == set(cpu_pins) and [o for o in options if o.startswith("-e")] == [
        o for o in cpu_options if o.startswith("-e")]


def test_every_declared_dependency_is_pinned(lock, env):
    extras = installed_extras(MAKEFILE.read_text(), ENV.read_text())
    assert {"minilm", "gemma", "test", "slurm"} <= extras, extras
    reqs = declared_requirements(tomllib.loads(PYPROJECT.read_text()), extras)
    assert unpinned_requirements(reqs, lock) == []
    requires_python = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    assert Requirement(f"python{requires_python}").specifier.contains(lock.python)


def test_installs_use_the_lock():
    make = MAKEFILE.read_text()
    assert re.search(r"^CONSTRAINTS \?= constraints/lock\.txt$", make, flags=re.M)
    assert re.search(r"^\$\(BIN\)/\.installed:.*\$\(CONSTRAINTS\)", make, flags=re.M)
    assert '-c $(CONSTRAINTS) -e ".[minilm,gemma,test]"' in make
    slurm = (ROOT / "ci" / "slurm_check.sh").read_text()
    assert '-c "$ROOT/constraints/lock.txt"' in slurm and "constraints/cpu.txt" not in slurm


# --- the comparisons catch what they are meant to -----------------------------------------------

LOCK_TEXT = """# made with Python 3.11.7 Linux x86_64
-c cpu.txt
pip==26.3
torch==2.13.0+cpu
numpy==2.4.6
PyYAML==6.0.4
"""


def test_lock_parser():
    lk = Lock(LOCK_TEXT + "numpy>=2\n")
    assert lk.python == "3.11.7" and lk.includes == ["cpu.txt"]
    assert lk.pins == {"pip": "26.3", "torch": "2.13.0+cpu", "numpy": "2.4.6", "pyyaml": "6.0.4"}
    assert lk.bad_lines == ["numpy>=2"]


def test_environment_mismatches_are_found():
    lk = Lock(LOCK_TEXT)
    env = yaml.safe_load("""
dependencies:
  - python=3.11
  - pip
  - numpy=2.4.5
  - pyyaml=6.0.4
  - zarr=3.1.6
  - pip:
      - -c constraints/lock.txt
      - torch==2.13.0
      - -e .[test]
""")
    pins, options = environment_pins(env)
    assert pins == {"python": "3.11", "pip": None, "numpy": "2.4.5", "pyyaml": "6.0.4", "zarr": "3.1.6",
                    "torch": "2.13.0"}
    assert options == ["-c constraints/lock.txt", "-e .[test]"]
    assert environment_mismatches(pins, lk) == [
        "numpy: environment.yml 2.4.5, lock 2.4.6",
        "pip: unpinned in environment.yml (lock: 26.3)",
        "python: environment.yml 3.11, lock 3.11.7",
        "torch: environment.yml 2.13.0, lock 2.13.0+cpu",  # the local build counts
        "zarr: not in the lock",
    ]
    ok = {"python": "3.11.7", "pip": "26.3", "pyyaml": "6.0.4", "torch": "2.13.0+cpu"}
    assert environment_mismatches(ok, lk) == []
    assert environment_pins({"dependencies": ["numpy>=2", {"pip": ["torch>=2"]}]})[0] == {"numpy": None, "torch": None}


def test_unpinned_requirements_are_found():
    lk = Lock(LOCK_TEXT)
    pyproject = {"project": {"dependencies": ["torch>=2.4", "numpy>=3", "scipy>=1.11"],
                             "optional-dependencies": {"test": ["pytest>=8"], "docs": ["sphinx"]}}}
    reqs = declared_requirements(pyproject, {"test"})
    assert unpinned_requirements(reqs, lk) == [
        "numpy>=3: lock pins 2.4.6",
        "scipy>=1.11: not pinned in the lock",
        "pytest>=8: not pinned in the lock",
    ]
    assert unpinned_requirements(declared_requirements(pyproject, set()), Lock(LOCK_TEXT + "scipy==1.17.1\nnumpy==3.0\n")) == []
    with pytest.raises(KeyError):
        declared_requirements(pyproject, {"slurm"})


def test_installed_extras():
    make = 'LOCK_EXTRAS := minilm,slurm\n\tpip install -c x -e ".[minilm,test]"\n'
    assert installed_extras(make, "      - -e .[gpu]\n") == {"minilm", "test", "slurm", "gpu"}

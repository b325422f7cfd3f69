"""Config validation: defaults filled in, unknown keys and wrong types named."""

import copy

import pytest
import yaml

from saeprobe import config as sc
from saeprobe import grid as sg
from saeprobe.errors import ConfigError
from tests.conftest import ROOT
from tests.helpers import config_workdir, load_test_config, snakemake, write_config

MINIMAL = {
    "datasets": {"d": {"path": "x.parquet"}},
    "models": {"m": {"path": "model", "layers": [0, 1]}},
    "saes": {"s": {"model": "m", "train": {"width": 64}}},
}


def test_defaults_are_filled():
    cfg = sc.validate(copy.deepcopy(MINIMAL))
    assert cfg["seed"] == 42
    assert cfg["datasets"]["d"]["text_column"] == "text"
    assert cfg["models"]["m"]["layer_convention"] == "block_output"
    assert cfg["saes"]["s"]["train"]["k"] == 32 and cfg["saes"]["s"]["train"]["width"] == 64
    assert cfg["features"]["poolings"] == ["mean", "max", "sum", "last", "top20"]
    assert cfg["probe"]["cv_folds"] == 5


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda c: c.update(probes={}), "unknown key 'probes'"),
        (lambda c: c["models"]["m"].update(layer=[1]), "unknown key 'models.m.layer'"),
        (lambda c: c["models"]["m"].update(layers="two"), "'models.m.layers': 'two' is not of type 'array'"),
        (lambda c: c.update(probe={"cv_folds": "five"}), "'probe.cv_folds': 'five' is not of type 'integer'"),
        (lambda c: c["saes"]["s"].update(model="nope"), "'saes.s.model': unknown model 'nope'"),
        (lambda c: c["saes"]["s"].update(layers=[3]), "'saes.s.layers': layers [3] are not extracted"),
        (lambda c: c["datasets"]["d"].update(hub="x/y"), "'datasets.d' needs exactly one of: path | hub"),
        (lambda c: c.update(features={"poolings": ["median"]}), "'features.poolings.0'"),
    ],
)
def test_errors_name_the_key(patch, message):
    cfg = copy.deepcopy(MINIMAL)
    patch(cfg)
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg)
    assert message in str(err.value)


def test_shipped_configs_are_valid():
    cfg = sc.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    cells = sg.probe_cells(cfg)
    assert len({c.path for c in cells}) == len(cells)
    assert {c.binarize for c in cells} == {"raw", "gt1"}


def test_binarize_names_roundtrip():
    for t in (None, 0.0, 1.0, 0.25):
        assert sg.parse_binarize(sg.binarize_name(t)) == t


def test_architecture_config_covers_every_architecture():
    from saeprobe.sae import ARCHITECTURES

    cfg = sc.validate(yaml.safe_load((ROOT / "config" / "architectures.yaml").read_text()))
    assert {s["train"]["architecture"] for s in cfg["saes"].values()} == set(ARCHITECTURES)
    default = sc.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    archs = {s["train"]["architecture"] for n, s in default["saes"].items() if s["model"] == "minilm" and "train" in s}
    assert len(archs) >= 3  # the default run compares at least three architectures (issue 14)


# --------------------------------------------------------------------------- messages say what is allowed and what was given


@pytest.mark.parametrize(
    ("key", "value", "expected", "given"),
    [
        ("k", 0, "a number > 0 or a non-empty list of distinct numbers > 0", "got 0"),
        ("k", [4, 4.0], "a number > 0 or a non-empty list of distinct numbers > 0",
         "got [4, 4.0] (4 and 4.0 are the same value)"),
        ("width", "64", "an integer >= 1 or a non-empty list of distinct integers >= 1", "got '64' (a string"),
        ("width", [64, 64.0], "an integer >= 1 or a non-empty list of distinct integers >= 1",
         "got [64, 64.0] (64 and 64.0 are the same value)"),
    ],
)
def test_one_of_errors_say_what_is_allowed_and_what_was_given(key, value, expected, given):
    """Issue 21 T9: these four gave "'saes.s.train.k' needs exactly one of:  |"."""
    cfg = copy.deepcopy(MINIMAL)
    cfg["saes"]["s"]["train"][key] = value
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg)
    line = str(err.value).splitlines()[1]
    assert line.startswith(f"  - 'saes.s.train.{key}': expected {expected}; {given}")
    assert "  |" not in str(err.value)


def test_required_key_alternatives_name_what_the_entry_has():
    cfg = copy.deepcopy(MINIMAL)
    del cfg["datasets"]["d"]["path"]
    with pytest.raises(ConfigError, match=r"'datasets.d' needs exactly one of: path \| hub \| sklearn \(it has none of them\)"):
        sc.validate(cfg)


@pytest.mark.parametrize("name", ["hidden", "tfidf"])
def test_reserved_sae_name_gets_a_plain_message(name):
    cfg = copy.deepcopy(MINIMAL)
    cfg["saes"][name] = cfg["saes"].pop("s")
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg)
    message = str(err.value)
    assert f"'saes.{name}': the name '{name}' is reserved" in message and "give the entry another name" in message
    assert "should not be valid under" not in message and "{'enum'" not in message


def test_an_entry_name_that_cannot_be_a_file_name_is_explained():
    cfg = copy.deepcopy(MINIMAL)
    cfg["datasets"]["my data"] = cfg["datasets"].pop("d")
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg)
    assert "'datasets.my data': the name 'my data' cannot be used" in str(err.value)
    assert "does not match '^" not in str(err.value)


# --------------------------------------------------------------------------- cross-key checks


@pytest.mark.parametrize(("resamples", "level", "ok"), [(1, 0.95, False), (20, 0.95, False), (199, 0.95, False),
                                                        (200, 0.95, True), (99, 0.9, False), (100, 0.9, True),
                                                        (999, 0.99, False), (1000, 0.99, True)])
def test_bootstrap_resamples_leave_five_in_each_tail(resamples, level, ok):
    """Issue 21 T2: B = 1 gave zero-width intervals that missed their own estimate."""
    cfg = copy.deepcopy(MINIMAL)
    cfg["bootstrap"] = {"resamples": resamples, "level": level}
    if ok:
        sc.validate(cfg)
        return
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg)
    need = sc.min_resamples(level)
    assert f"'bootstrap.resamples': {resamples} resamples leave" in str(err.value)
    assert f"resamples must be at least {need} at level {level:g}" in str(err.value)
    assert need * (1 - level) / 2 >= sc.MIN_TAIL_RESAMPLES - 1e-9 > (need - 1) * (1 - level) / 2


def test_unknown_loss_dataset_is_named():
    """Issue 21 T12: an unknown sae_quality.loss_datasets entry passed and was ignored."""
    cfg = copy.deepcopy(MINIMAL)
    cfg["sae_quality"] = {"loss_datasets": ["d", "nosuch"]}
    with pytest.raises(ConfigError, match=r"'sae_quality.loss_datasets': unknown dataset 'nosuch' \(datasets: d\)"):
        sc.validate(cfg)
    cfg = copy.deepcopy(MINIMAL)
    cfg["sae_quality"] = {"loss_datasets": ["d"]}
    sc.validate(cfg)


def test_training_tokens_below_one_batch_is_an_error():
    """Issue 21 T13: training_tokens < batch_size trained one step silently."""
    cfg = copy.deepcopy(MINIMAL)
    cfg["saes"]["s"]["train"].update(training_tokens=500, batch_size=1024)
    with pytest.raises(ConfigError, match=r"'saes.s.train.training_tokens': 500 is less than one batch \(batch_size 1024\)"):
        sc.validate(cfg)
    cfg = copy.deepcopy(MINIMAL)
    cfg["saes"]["s"]["train"].update(training_tokens=1024, batch_size=1024)
    sc.validate(cfg)


# --------------------------------------------------------------------------- configured paths exist (issue 21 T1)


def _files(tmp_path):
    """A config whose every local path exists under tmp_path (relative paths)."""
    (tmp_path / "x.parquet").touch()
    (tmp_path / "model").mkdir()
    for layer in (0, 1):
        (tmp_path / "saes" / f"layer_{layer}").mkdir(parents=True)
    (tmp_path / "tok").mkdir()
    (tmp_path / "mc.parquet").touch()
    cfg = copy.deepcopy(MINIMAL)
    cfg["saes"]["mine"] = {"model": "m", "path": "saes/layer_{layer}"}
    cfg["models"]["r"] = {"random": {"preset": "tiny-llama", "tokenizer": "tok"}, "layers": [0]}
    cfg["behaviour"] = {"q": {"path": "mc.parquet", "model": "m"}}
    return cfg


def test_existing_paths_pass(tmp_path):
    sc.validate(_files(tmp_path), directory=tmp_path)


@pytest.mark.parametrize(
    ("remove", "key", "shown"),
    [
        ("x.parquet", "datasets.d.path", "x.parquet"),
        ("model", "models.m.path", "model"),
        ("tok", "models.r.random.tokenizer", "tok"),
        ("saes/layer_1", "saes.mine.path (layer 1)", "saes/layer_1"),
        ("mc.parquet", "behaviour.q.path", "mc.parquet"),
    ],
)
def test_a_missing_path_names_key_path_and_directory(tmp_path, remove, key, shown):
    cfg = _files(tmp_path)
    target = tmp_path / remove
    target.rmdir() if target.is_dir() else target.unlink()
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg, directory=tmp_path)
    lines = str(err.value).splitlines()[1:]
    assert lines == [f"  - '{key}': {shown} does not exist (relative paths are resolved against {tmp_path.resolve()}, "
                     "the directory snakemake runs in; --directory changes it)"]


def test_absolute_missing_path_and_non_files(tmp_path):
    cfg = copy.deepcopy(MINIMAL)
    cfg["datasets"] = {"d": {"path": str(tmp_path / "gone.csv")}, "h": {"hub": "org/set"},
                       "img": {"sklearn": "digits", "kind": "image"}}
    cfg["models"]["m"] = {"package": "no_such_package", "layers": [0, 1]}
    cfg["saes"]["rel"] = {"model": "m", "release": "some-release", "sae_id": "layer_{layer}"}
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg, directory=tmp_path)
    assert str(err.value).splitlines()[1:] == [f"  - 'datasets.d.path': {tmp_path / 'gone.csv'} does not exist"]
    assert sc.validate(copy.deepcopy(cfg)) is not None  # no directory: files are not checked


def test_sae_path_with_an_unknown_placeholder_is_a_config_error():
    cfg = copy.deepcopy(MINIMAL)
    cfg["saes"]["mine"] = {"model": "m", "path": "saes/layer_{lyr}"}
    with pytest.raises(ConfigError, match=r"'saes.mine.path': 'saes/layer_\{lyr\}' cannot be filled in .*\{layer\} is the only"):
        sc.validate(cfg)


def test_checker_resolves_relative_paths_against_its_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "run").mkdir()
    cfg = _files(tmp_path / "run")
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert sc.main([str(path)]) == 1  # relative to the current directory, where the files are not
    out = capsys.readouterr().out
    assert f"'datasets.d.path': x.parquet does not exist (relative paths are resolved against {tmp_path.resolve()}" in out
    assert sc.main(["--directory", str(tmp_path / "run"), str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"config file {path}: ok")


def test_a_missing_path_stops_snakemake_even_when_tables_exist(tmp_path):
    """T1: with the tables of a previous run in results/, a dataset whose path does not exist made snakemake say
    "Nothing to be done" and keep the old tables; the Snakefile now stops naming the key, path and directory."""
    workdir = config_workdir(tmp_path)
    cfg = load_test_config("minimal")
    cfg["datasets"]["extra"] = {"path": "data/typo.parquet"}
    write_config(workdir, cfg)
    for out in sg.final_output(sc.validate(copy.deepcopy(cfg))):  # a previous run's outputs, all present
        (workdir / out).parent.mkdir(parents=True, exist_ok=True)
        (workdir / out).touch()
    proc = snakemake(workdir, "-n", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "Nothing to be done" not in output
    assert (f"'datasets.extra.path': data/typo.parquet does not exist (relative paths are resolved against "
            f"{workdir.resolve()}, the directory snakemake runs in; --directory changes it)") in output

"""Groups (``group_column``) in every stage that fits a probe: no group on both sides of any CV fold.

Each stage is driven through the library function its workflow script calls, with the arguments
the script passes (workflow/scripts/<stage>.py): the prepared dataset's groups
(``data.groups_of``), its labels and split (``data.label_arrays``), the ``probe`` settings. A spy
records every CV fit the stage makes — the rows it fitted on (the ``train`` mask handed to
``probes.fit_cv`` / ``baselines.select_and_fit``), the groups handed to it, and every (fit,
held-out) pair the scikit-learn splitter actually produced — and each pair is checked against the
dataset's own groups of those rows. Behaviour probing has no ``group_column`` (its entries are
datasets fitted by the grid stage, ``fit_probe``), so it adds no stage here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from saeprobe import baselines, data, probes, transfer
from saeprobe.baselines import fit_baseline
from saeprobe.ksparse import fit_ksparse
from saeprobe.probes import fit_on_splits, fit_probe, fit_tfidf
from saeprobe.sweep import sweep_features, sweep_tfidf
from saeprobe.transfer import transfer_matrix
from tests.helpers import write_parquet

PROBE = {"Cs": [0.1, 1.0], "cv_folds": 3}  # the scripts pass the config's probe settings (less split_seeds)
TFIDF = {"ngram_max": 1, "max_features": None, "stop_words": None, "min_df": 1}
SEED = 7


@dataclass
class Fit:
    train: np.ndarray  # (n_docs,) bool: the rows the fit selects and fits on
    groups: Any  # the groups argument the fit was handed
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (fit, held-out), indices into train rows


class FoldSpy:
    """Wraps the CV entry points (``probes.fit_cv`` as fit_probe and transfer call it,
    ``baselines.select_and_fit``) and the splitters' ``split`` (StratifiedKFold, StratifiedGroupKFold)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.fits: list[Fit] = []
        self.active = 0
        for module, name in ((probes, "fit_cv"), (transfer, "fit_cv"), (baselines, "select_and_fit")):
            monkeypatch.setattr(module, name, self._entry(getattr(module, name)))
        for cls in (StratifiedKFold, StratifiedGroupKFold):
            monkeypatch.setattr(cls, "split", self._split(cls.split))

    def _entry(self, original):
        signature = inspect.signature(original)

        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            self.fits.append(Fit(np.asarray(bound.arguments["train"], dtype=bool).copy(), bound.arguments.get("groups")))
            self.active += 1
            try:
                return original(*args, **kwargs)
            finally:
                self.active -= 1

        return wrapper

    def _split(self, original):
        def split(splitter, *args, **kwargs):
            folds = [(np.asarray(a), np.asarray(b)) for a, b in original(splitter, *args, **kwargs)]
            if self.active:
                self.fits[-1].folds += folds
            return iter(folds)

        return split

    def check(self, groups: np.ndarray) -> None:
        """Every fit got the dataset's groups, and no group is on both sides of any of its folds."""
        assert self.fits, "the stage fitted nothing"
        for i, fit in enumerate(self.fits):
            assert fit.groups is not None, f"fit {i}: no groups reached the CV folds"
            np.testing.assert_array_equal(np.asarray(fit.groups), groups, err_msg=f"fit {i}: other groups than the dataset's")
            assert fit.folds, f"fit {i}: no CV folds recorded"
            g = groups[fit.train]
            for fit_rows, held_out in fit.folds:
                assert len(fit_rows) + len(held_out) == len(g)  # the folds split exactly the fit's rows
                both = set(g[fit_rows]) & set(g[held_out])
                assert not both, f"fit {i}: groups {sorted(both)} are in a fold's fitting and held-out rows"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A templated two-language binary dataset prepared with group_column (the prepare_dataset stage):
    each template (group) has its own word and feature offset, and both labels."""
    rng = np.random.default_rng(0)
    rows = []
    for lang in ("en", "de"):
        for t in range(14):
            for i in range(6):
                label = i % 2
                rows.append({"text": f"{lang} template{lang}{t} word{'yes' if label else 'no'} filler{rng.integers(5)}",
                             "label": ["no", "yes"][label], "tpl": f"{lang}{t}", "lang": lang})
    folder = tmp_path_factory.mktemp("groups")
    spec = {"path": write_parquet(folder, pl.DataFrame(rows)), "split_column": None, "group_column": "tpl",
            "lang_column": "lang", "test_fraction": 0.25}
    frame, label_names, _ = data.prepare(spec, "d", seed=SEED)
    y, split, _ = data.label_arrays(frame)
    groups = data.groups_of(frame)
    template = np.unique(groups, return_inverse=True)[1]
    x = rng.normal(size=(frame.height, 12)) + 0.8 * y[:, None] * (np.arange(12) < 3)
    x[:, 3:9] += rng.normal(size=(template.max() + 1, 6))[template]  # a feature offset per template
    return {"spec": spec, "frame": frame, "label_names": label_names, "y": y, "split": split, "groups": groups, "x": x}


def _grid(d):  # workflow/scripts/fit_probe.py
    fit_probe(d["x"], d["y"], d["split"], n_classes=len(d["label_names"]), seed=SEED, groups=d["groups"], **PROBE)


def _split_seeds(d):  # workflow/scripts/fit_probe.py, probe.split_seeds (the splits drawn by draw_splits beforehand)
    fit_on_splits(d["x"], d["y"], d["splits"], n_classes=len(d["label_names"]), seed=SEED, groups=d["groups"], **PROBE)


def _tfidf(d):  # workflow/scripts/fit_tfidf.py
    fit_tfidf(d["frame"]["text"].to_list(), d["y"], d["split"], n_classes=len(d["label_names"]), seed=SEED,
              groups=d["groups"], **TFIDF, **PROBE)


def _ksparse(d):  # workflow/scripts/ksparse.py
    fit_ksparse(d["x"], d["y"], d["split"], ranking="mean_diff", ks=[2, 6], n_classes=len(d["label_names"]), probe=PROBE,
                seed=SEED, groups=d["groups"])


def _baselines(d):  # workflow/scripts/baselines.py
    fit_baseline("knn", d["x"], d["y"], d["split"], n_classes=len(d["label_names"]), seed=SEED,
                 cv_folds=PROBE["cv_folds"], groups=d["groups"])


def _transfer(d):  # workflow/scripts/transfer.py
    transfer_matrix(d["x"], d["y"], d["split"], d["frame"]["lang"].to_list(), n_classes=len(d["label_names"]),
                    probe=PROBE, seed=SEED, groups=d["groups"])


SWEEP = {"sizes": [6, None], "repeats": 2, "imbalance": [0.3], "label_noise": [0.2]}


def _sweep(d):  # workflow/scripts/sweep.py
    sweep_features(d["x"], d["y"], d["split"], n_classes=len(d["label_names"]), probe=PROBE, seed=SEED, report={},
                   groups=d["groups"], **SWEEP)


def _sweep_tfidf(d):  # workflow/scripts/sweep_tfidf.py
    sweep_tfidf(d["frame"]["text"].to_list(), d["y"], d["split"], n_classes=len(d["label_names"]), tfidf=TFIDF,
                probe=PROBE, seed=SEED, report={}, groups=d["groups"], **SWEEP)


# stage -> (entry point, the number of CV fits it makes; None = at least one)
STAGES = {"fit_probe": (_grid, 1), "split_seeds": (_split_seeds, 2), "fit_tfidf": (_tfidf, 1), "ksparse": (_ksparse, 2),
          "baselines": (_baselines, 1), "transfer": (_transfer, 2), "sweep": (_sweep, None),
          "sweep_tfidf": (_sweep_tfidf, None)}


@pytest.mark.parametrize("stage", list(STAGES))
def test_no_group_is_on_both_sides_of_a_cv_fold(stage, prepared, monkeypatch):
    d = dict(prepared)
    if stage == "split_seeds":  # draw_splits: the re-drawn splits keep every group in one split too
        redrawn = data.redraw_splits(d["spec"], "d", d["frame"], [1, 2])
        d["splits"] = {s: redrawn[data.split_column(s)].to_numpy() for s in (1, 2)}
        for drawn in d["splits"].values():
            assert not set(d["groups"][drawn == "train"]) & set(d["groups"][drawn == "test"])
            assert not np.array_equal(drawn, d["split"])
    entry, n_fits = STAGES[stage]
    spy = FoldSpy(monkeypatch)
    entry(d)
    spy.check(d["groups"])
    if n_fits is not None:
        assert len(spy.fits) == n_fits
    if stage == "split_seeds":  # each re-drawn split's own train rows
        assert [fit.train.tolist() for fit in spy.fits] == [(s == "train").tolist() for s in d["splits"].values()]
    else:  # CV on (a draw of) the train split only
        assert not any((fit.train & (d["split"] != "train")).any() for fit in spy.fits)


def test_the_spy_catches_ungrouped_folds(prepared, monkeypatch):
    """The check is not vacuous: the same grid fit without groups puts templates on both sides of a fold."""
    d = prepared
    spy = FoldSpy(monkeypatch)
    fit_probe(d["x"], d["y"], d["split"], n_classes=len(d["label_names"]), seed=SEED, **PROBE)
    with pytest.raises(AssertionError, match="no groups reached"):
        spy.check(d["groups"])
    spy.fits[0].groups = d["groups"]
    with pytest.raises(AssertionError, match="fitting and held-out rows"):
        spy.check(d["groups"])

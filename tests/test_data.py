"""Dataset preparation: normalisation, fixed seeded stratified splits, counted drops, clear errors."""

import logging

import numpy as np
import polars as pl
import pytest

from saeprobe import data
from saeprobe.errors import DataError
from tests.helpers import DATA, random_label_frame, write_parquet


def test_real_dataset_keeps_source_splits_and_labels():
    out, names, report = data.prepare({"path": str(DATA / "trec.parquet")}, "trec", seed=1)
    assert names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert out["doc_id"].to_list() == list(range(5952))
    assert out.filter(pl.col("split") == "test").height == 500
    assert report["splits_from"] == "source"
    assert (out["label_name"] == pl.Series([names[i] for i in out["label"]])).all()


def test_made_splits_are_deterministic_and_stratified(tmp_path):
    path = write_parquet(tmp_path, random_label_frame(300))
    spec = {"path": path, "split_column": None, "test_fraction": 0.2, "validation_fraction": 0.1}
    a, _, _ = data.prepare(spec, "d", seed=7)
    b, _, _ = data.prepare(spec, "d", seed=7)
    c, _, _ = data.prepare(spec, "d", seed=8)
    assert a["split"].to_list() == b["split"].to_list()
    assert a["split"].to_list() != c["split"].to_list()
    counts = a.group_by("split").len().sort("split")
    assert dict(counts.iter_rows()) == {"test": 60, "train": 210, "validation": 30}
    overall = a["label"].value_counts(normalize=True).sort("label")["proportion"].to_numpy()
    for split in ("train", "validation", "test"):
        share = a.filter(pl.col("split") == split)["label"].value_counts(normalize=True).sort("label")["proportion"]
        np.testing.assert_allclose(share.to_numpy(), overall, atol=0.04)


def test_source_without_test_split_gets_one_carved_from_train(tmp_path):
    frame = random_label_frame(100).with_columns(pl.lit("train").alias("split"))
    out, _, report = data.prepare({"path": write_parquet(tmp_path, frame), "test_fraction": 0.25}, "d", seed=0)
    assert out.filter(pl.col("split") == "test").height == 25
    assert report["carved"] == ["test"]


def test_empty_texts_are_dropped_counted_and_logged(tmp_path, caplog):
    frame = pl.DataFrame({"text": ["good", "", "   ", None, "fine", "ok", "more", "t"], "label": [0, 1, 0, 1, 1, 0, 1, 0],
                          "split": ["train", "train", "train", "test", "train", "train", "train", "test"]})
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        out, _, report = data.prepare({"path": write_parquet(tmp_path, frame)}, "d", seed=0)
    assert report["n_dropped_empty_text"] == 3
    assert out["text"].to_list() == ["good", "fine", "ok", "more", "t"]
    assert out["doc_id"].to_list() == [0, 1, 2, 3, 4]
    assert out["source_row"].to_list() == [0, 4, 5, 6, 7]
    assert "dropped 3 empty" in caplog.text


def test_missing_label_column_names_the_column_and_file(tmp_path):
    path = write_parquet(tmp_path, pl.DataFrame({"text": ["a", "b"], "type": ["x", "y"]}))
    with pytest.raises(DataError, match=r"no label column 'label'.*columns are \['text', 'type'\]") as err:
        data.prepare({"path": path}, "mine", seed=0)
    assert path in str(err.value) and "datasets.mine.label_column" in str(err.value)


def test_missing_labels_and_single_class_are_errors(tmp_path):
    path = write_parquet(tmp_path, pl.DataFrame({"text": ["a", "b", "c"], "label": ["x", None, "y"]}))
    with pytest.raises(DataError, match="1 missing labels"):
        data.prepare({"path": path}, "d", seed=0)
    path = write_parquet(tmp_path, pl.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}), "one.parquet")
    with pytest.raises(DataError, match="single class"):
        data.prepare({"path": path}, "d", seed=0)


def test_write_read_roundtrip_keeps_label_names(tmp_path):
    out, names, _ = data.prepare({"path": str(DATA / "jailbreak_classification.parquet")}, "jb", seed=0)
    data.write(out, names, tmp_path / "jb.parquet")
    back, back_names = data.read(tmp_path / "jb.parquet")
    assert back_names == ["benign", "jailbreak"]
    assert back.equals(out)


def test_numeric_labels_from_csv_sort_numerically(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{[2, 10, 1][i % 3]}\n" for i in range(30)))
    _, names, _ = data.prepare({"path": str(path)}, "d", seed=0)
    assert names == ["1", "2", "10"]


def _fake_hub(monkeypatch, configs: dict):
    """Replace datasets.load_dataset with an in-memory hub: {config: {split: {column: values}}}."""
    import datasets

    calls = []

    def load_dataset(hub_id, config_name=None, revision=None):
        calls.append((hub_id, config_name))
        return datasets.DatasetDict({s: datasets.Dataset.from_dict(cols) for s, cols in configs[config_name].items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_configs_as_languages_and_hub_splits(monkeypatch):
    rows = {"text": [f"t{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    calls = _fake_hub(monkeypatch, {"english": {"train": rows, "test": rows}, "german": {"train": rows, "test": rows}})
    spec = {"hub": "org/tweets", "hub_config": ["english", "german"], "lang_column": "hub_config"}
    frame, names, report = data.prepare(spec, "tweets", seed=0)
    assert calls == [("org/tweets", "english"), ("org/tweets", "german")]
    assert frame.height == 80 and names == ["0", "1"]
    assert frame.group_by("lang", "split").len().sort("lang", "split")["len"].to_list() == [20, 20, 20, 20]
    assert report["splits_from"] == "source"


def test_hub_split_null_draws_own_split(monkeypatch):
    rows = {"prompt": [f"p{i}" for i in range(50)], "type": ["benign", "jailbreak"] * 25}
    _fake_hub(monkeypatch, {None: {"test": rows}})
    spec = {"hub": "org/jb", "hub_splits": ["test"], "text_column": "prompt", "label_column": "type",
            "split_column": None, "test_fraction": 0.2}
    frame, _, report = data.prepare(spec, "jb", seed=42)
    assert report["splits_from"] == "seeded stratified split"
    assert frame.filter(pl.col("split") == "test").height == 10
    # Per-language hub splits (textdetox-style) become a lang column, not splits.
    _fake_hub(monkeypatch, {None: {"en": rows, "de": rows}})
    spec = {"hub": "org/tox", "text_column": "prompt", "label_column": "type", "split_column": None,
            "lang_column": "hub_split"}
    frame, _, _ = data.prepare(spec, "tox", seed=42)
    assert sorted(frame["lang"].unique().to_list()) == ["de", "en"] and set(frame["split"]) == {"train", "test"}


def _templated_frame(n_groups: int = 60, per_group: int = 5, seed: int = 0) -> pl.DataFrame:
    """``n_groups`` templates (integer ids in column ``tpl``) of ``per_group`` texts each, labels drawn per row."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    return pl.DataFrame({"text": [f"template {i // per_group} filled {i}" for i in range(n)],
                         "label": rng.choice(["a", "b", "c"], n).tolist(),
                         "tpl": np.repeat(np.arange(n_groups), per_group)})


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_grouped_split_keeps_each_group_in_one_split(tmp_path, seed):
    spec = {"path": write_parquet(tmp_path, _templated_frame(seed=seed)), "split_column": None, "group_column": "tpl",
            "test_fraction": 0.2, "validation_fraction": 0.1}
    out, _, report = data.prepare(spec, "d", seed=seed)
    assert out.schema["group"] == pl.String and out["group"].head(6).to_list() == ["0"] * 5 + ["1"]
    per_group = out.group_by("group").agg(pl.col("split").n_unique())
    assert (per_group["split"] == 1).all(), "a group is in more than one split"
    share = out["split"].value_counts(normalize=True)
    share = dict(zip(share["split"], share["proportion"], strict=True))
    assert abs(share["test"] - 0.2) < 0.06 and abs(share["validation"] - 0.1) < 0.06
    groups = report["groups"]
    assert groups["column"] == "tpl" and groups["n_groups"] == 60 and groups["n_across_splits"] == 0
    assert sum(groups["per_split"].values()) == 60 and min(groups["per_split"].values()) > 0
    assert report["splits_from"] == "seeded stratified grouped split"
    again, _, _ = data.prepare(spec, "d", seed=seed)
    assert again.equals(out)


def test_grouped_splits_differ_by_seed_and_from_row_splits(tmp_path):
    path = write_parquet(tmp_path, _templated_frame())
    spec = {"path": path, "split_column": None, "group_column": "tpl"}
    a, _, _ = data.prepare(spec, "d", seed=0)
    b, _, _ = data.prepare(spec, "d", seed=1)
    assert a["split"].to_list() != b["split"].to_list()
    rows, _, _ = data.prepare({"path": path, "split_column": None}, "d", seed=0)
    assert "group" not in rows.columns
    assert (rows.with_columns(a["group"]).group_by("group").agg(pl.col("split").n_unique())["split"] > 1).any()


def test_no_group_column_leaves_the_prepared_frame_as_it_was(tmp_path):
    path = write_parquet(tmp_path, _templated_frame())
    out, _, report = data.prepare({"path": path, "split_column": None}, "d", seed=0)
    assert out.columns == ["doc_id", "text", "label", "label_name", "split", "lang", "source_row"]
    assert "groups" not in report and report["splits_from"] == "seeded stratified split"
    assert data.prepare({"path": path, "split_column": None, "group_column": None}, "d", seed=0)[0].equals(out)


def test_null_or_missing_group_column_is_an_error(tmp_path):
    frame = _templated_frame(n_groups=10).with_columns(
        pl.when(pl.int_range(pl.len()).is_in([2, 7])).then(None).otherwise(pl.col("tpl")).alias("tpl"))
    path = write_parquet(tmp_path, frame)
    with pytest.raises(DataError, match=r"column 'tpl' \(group_column\) has 2 missing groups .* rows \[2, 7\]") as err:
        data.prepare({"path": path, "split_column": None, "group_column": "tpl"}, "d", seed=0)
    assert path in str(err.value)
    with pytest.raises(DataError, match=r"no group column 'template'.*datasets\.d\.group_column"):
        data.prepare({"path": path, "split_column": None, "group_column": "template"}, "d", seed=0)


def test_too_few_groups_for_a_split_is_an_error(tmp_path):
    path = write_parquet(tmp_path, _templated_frame(n_groups=4, per_group=10))
    with pytest.raises(DataError, match=r"grouped test split .* hold 4 group\(s\), fewer than 5"):
        data.prepare({"path": path, "split_column": None, "group_column": "tpl", "test_fraction": 0.2}, "d", seed=0)
    # 0.5 of 4 groups leaves 2 in train: enough.
    out, _, report = data.prepare({"path": path, "split_column": None, "group_column": "tpl", "test_fraction": 0.5},
                                  "d", seed=0)
    assert report["groups"]["per_split"] == {"train": 2, "validation": 0, "test": 2}


def test_source_splits_are_kept_and_groups_across_them_warned(tmp_path, caplog):
    frame = _templated_frame(n_groups=10, per_group=4).with_columns(
        pl.Series("split", ["train", "train", "train", "test"] * 5 + ["train"] * 12 + ["test"] * 8))
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        out, _, report = data.prepare({"path": write_parquet(tmp_path, frame), "group_column": "tpl"}, "d", seed=0)
    assert out["split"].to_list() == frame["split"].to_list()
    assert report["splits_from"] == "source"
    assert report["groups"] == {"column": "tpl", "n_groups": 10, "n_across_splits": 5,
                                "per_split": {"train": 8, "validation": 0, "test": 7}}
    assert "5 of 10 groups of column 'tpl' (group_column) span more than one" in caplog.text


def test_redrawn_splits_are_new_draws_of_the_same_documents(tmp_path):
    """probe.split_seeds: each seed's split is what `seed: <s>` would draw; the documents never change."""
    path = write_parquet(tmp_path, random_label_frame(300))
    spec = {"path": path, "split_column": None, "test_fraction": 0.2}
    prepared, _, _ = data.prepare(spec, "d", seed=42)
    splits = data.redraw_splits(spec, "d", prepared, [1, 2])
    assert splits.columns == ["doc_id", data.split_column(1), data.split_column(2)]
    assert splits["doc_id"].to_list() == prepared["doc_id"].to_list()
    one = splits[data.split_column(1)]
    assert one.to_list() == data.prepare(spec, "d", seed=1)[0]["split"].to_list()
    assert one.to_list() != prepared["split"].to_list() and one.to_list() != splits[data.split_column(2)].to_list()
    assert (one == "test").sum() == 60
    data.write_splits(splits, tmp_path / "s.parquet")
    assert data.read_splits(tmp_path / "s.parquet").equals(splits)


def test_source_splits_are_redrawn_with_their_fractions(tmp_path, caplog):
    """T11: a split read from the file is re-drawn for real (it used to repeat itself: "2 splits, std 0.000"):
    each seed a different seeded, stratified split of all rows with the source's test and validation
    fractions, keeping each group whole with group_column."""
    source = random_label_frame(300).with_columns(
        pl.Series("split", ["train"] * 210 + ["validation"] * 30 + ["test"] * 60),
        pl.Series("tpl", [f"g{i // 5}" for i in range(300)]))
    path = write_parquet(tmp_path, source)
    for spec in ({"path": path}, {"path": path, "group_column": "tpl"}):
        prepared, _, report = data.prepare(spec, "d", seed=42)
        assert report["splits_from"] == "source" and prepared["split"].to_list() == source["split"].to_list()
        with caplog.at_level(logging.WARNING, logger="saeprobe"):
            splits = data.redraw_splits(spec, "d", prepared, [3, 4])
        assert splits["doc_id"].to_list() == prepared["doc_id"].to_list()
        one, two = (splits[data.split_column(s)].to_numpy() for s in (3, 4))
        assert (one != two).any() and (one != prepared["split"].to_numpy()).any() and (two != prepared["split"].to_numpy()).any()
        labels = prepared["label"].to_numpy()
        for drawn in (one, two):
            counts = {s: int((drawn == s).sum()) for s in data.SPLITS}
            if "group_column" in spec:  # whole groups: each group in one split, sizes as near as groups allow
                groups = prepared["group"].to_numpy()
                assert all(len(set(drawn[groups == g])) == 1 for g in set(groups))
                assert abs(counts["test"] - 60) <= 5 and abs(counts["validation"] - 30) <= 5
            else:  # the source's sizes, each class in test in proportion (stratified: within one row)
                assert counts == {"train": 210, "validation": 30, "test": 60}
                for c in set(labels):
                    assert abs((labels[drawn == "test"] == c).sum() - 60 * (labels == c).mean()) <= 1
        assert data.redraw_splits(spec, "d", prepared, [3])[data.split_column(3)].to_list() == one.tolist()  # seeded
    assert "comes from the source" in caplog.text


# --------------------------------------------------------------------------- labels that are not classes (issue 21 T8)


def test_fractional_numeric_labels_look_continuous(tmp_path):
    values = [round(0.1 * i, 1) for i in range(11)]  # 0.0, 0.1 ... 1.0: a score, not 11 classes
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(220)], "label": [values[i % 11] for i in range(220)]})
    with pytest.raises(DataError) as err:
        data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)
    msg = str(err.value)
    assert "column 'label' looks like a continuous variable, not class labels: 11 distinct numbers" in msg
    assert "(0, 0.1, 0.2, 0.3, 0.4 and 6 more), 9 of them not whole numbers" in msg
    assert "bin the values into classes" in msg and "\n" not in msg


def test_many_whole_number_labels_with_few_rows_each_look_continuous(tmp_path):
    labels = [i // 2 for i in range(522)]  # 261 values, 2 rows each (e.g. a count or an id)
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(522)], "label": labels})
    with pytest.raises(DataError) as err:
        data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)
    msg = str(err.value)
    assert "261 distinct numbers (0, 1, 2, 3, 4 and 256 more), a median of 2 rows per value" in msg
    assert "'260'" not in msg and ", 260" not in msg  # the classes are counted, not listed


def test_many_named_classes_error_names_a_few_and_counts_the_rest(tmp_path):
    labels = [f"name{i // 2}" for i in range(522)]  # 261 named classes of 2 rows: a split cannot keep 2 in train
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(522)], "label": labels})
    with pytest.raises(DataError) as err:
        data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)
    msg = str(err.value)
    assert "261 of 261 classes have fewer than 3 examples" in msg and "and 256 more" in msg
    assert "261 classes of a median 2 rows each in 522 rows: is 'label' the column of class labels?" in msg
    assert len(msg) < 800 and "name260" not in msg


def test_class_codes_and_ratings_are_classes(tmp_path):
    """Below the thresholds: 10 whole-number ratings with many rows each, 50 integer codes (TREC's label_fine has 50),
    and fractional codes written as names."""
    n = 600
    for labels in ([1 + i % 10 for i in range(n)], [i % 50 for i in range(n)], [f"c0.{i % 11}" for i in range(n)]):
        frame = pl.DataFrame({"text": [f"t{i}" for i in range(n)], "label": labels})
        _, names, _ = data.prepare({"path": write_parquet(tmp_path, frame), "split_column": None}, "d", seed=0)
        assert len(names) == len(set(labels))

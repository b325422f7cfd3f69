"""Behaviour labels: option losses of a causal LM on multiple-choice items, and the behaviour stage end to end."""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pytest
import torch

from saeprobe import behaviour as bh
from saeprobe import behaviour_data as bd
from saeprobe.behaviour_tables import TABLE_COLUMNS
from saeprobe.errors import ConfigError, DataError, ModelLoadError
from saeprobe.models import load_pretrained, load_tokenizer
from tests.helpers import DATA, planned, snakemake, write_config

CPU = torch.device("cpu")
PROMPT = "{question}\nAnswer:"


@pytest.fixture(scope="module")
def llama(tiny_llama):
    spec = {"path": str(tiny_llama)}
    return load_pretrained(spec, "tiny", "causal_lm", CPU, torch.float32), load_tokenizer(spec, "tiny")


def mc(**columns) -> pl.DataFrame:
    base = {"question": ["The cat sat on the mat.", "Lily went to the park"],
            "choices": [["She was happy.", "The dog barked loudly at the moon.", "It rained."], ["yes", "no"]],
            "answer": [1, 0]}
    return pl.DataFrame({**base, **columns})


def items_of(df: pl.DataFrame, **spec) -> bh.Items:
    return bh.prepare_items(df, {"prompt": PROMPT, **spec}, "t", "test.parquet")


@torch.no_grad()
def reference_loss(model, tokenizer, prompt: str, option: str, keep_prompt_tokens: int | None = None) -> float:
    """Independent: tokenize prompt+" "+option in one go, full-vocabulary logits, mean NLL of the option's tokens."""
    n_opt = len(tokenizer(" " + option, add_special_tokens=False)["input_ids"])
    ids = tokenizer(prompt + " " + option)["input_ids"]
    if keep_prompt_tokens is not None:  # BOS + the last k prompt tokens
        ids = ids[:1] + ids[len(ids) - n_opt - keep_prompt_tokens :]
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return float(np.mean([-logp[t - 1, ids[t]].item() for t in range(len(ids) - n_opt, len(ids))]))


def test_option_loss_matches_an_independent_computation(llama):
    model, tok = llama
    items = items_of(mc())
    scores = bh.score(model, tok, items, max_length=256)
    for i, (prompt, opts) in enumerate(zip(items.prompts, items.choices, strict=True)):
        ref = [reference_loss(model, tok, prompt, o) for o in opts]
        np.testing.assert_allclose(scores.losses[i], ref, rtol=1e-5)
        assert scores.option_tokens[i] == [len(tok(" " + o, add_special_tokens=False)["input_ids"]) for o in opts]
    assert items.prompts[1] == "Lily went to the park\nAnswer:"


def test_batching_and_padding_do_not_change_losses(llama):
    model, tok = llama
    items = items_of(pl.read_parquet(DATA / "piqa_validation.parquet").head(12))
    one_by_one = bh.score(model, tok, items, max_length=256, token_budget=1, batch_size=1)
    batched = bh.score(model, tok, items, max_length=256, token_budget=4096, batch_size=8)
    np.testing.assert_allclose(np.concatenate(batched.losses), np.concatenate(one_by_one.losses), rtol=1e-4)


def test_answer_is_the_lowest_loss_option_and_correct_compares_with_gold(llama):
    model, tok = llama
    df = mc()
    losses = bh.score(model, tok, items_of(df), max_length=256).losses
    best = [int(np.argmin(x)) for x in losses]
    gold = [best[0], (best[1] + 1) % 2]  # first item right, second wrong
    items = items_of(df.with_columns(pl.Series("answer", gold)))
    scores = bh.score(model, tok, items, max_length=256)
    assert scores.predicted.tolist() == best
    assert scores.correct.tolist() == [True, False]
    out = bd.frame(items, scores)
    assert out["label"].to_list() == ["correct", "incorrect"]
    assert out["predicted_text"][0] == df["choices"][0][best[0]] and out["answer_text"][1] == df["choices"][1][gold[1]]
    meta = bd.summary(items, scores)
    assert meta["accuracy"] == 0.5 and meta["majority_rate"] == 0.5 and meta["chance_accuracy"] == pytest.approx(5 / 12)


def test_tied_options_go_to_the_earlier_one(llama, caplog):
    model, tok = llama
    items = items_of(pl.DataFrame({"question": ["Once upon a time"], "choices": [["there was", "there was"]],
                                   "answer": [1]}))
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        scores = bh.score(model, tok, items, max_length=64)
    assert scores.predicted.tolist() == [0] and scores.n_ties == 1 and not scores.correct[0]
    assert "tied lowest losses" in caplog.text


def test_long_prompts_are_cut_from_the_left_counted_and_logged(llama, caplog):
    model, tok = llama
    items = items_of(mc())
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        scores = bh.score(model, tok, items, max_length=12)
    assert "cut the prompt from the left" in caplog.text
    assert scores.prompt_truncated.tolist() == [True, True] and scores.n_prompt_truncated == 5
    prompt, option = items.prompts[1], "yes"
    n_opt = len(tok(" yes", add_special_tokens=False)["input_ids"])
    ref = reference_loss(model, tok, prompt, option, keep_prompt_tokens=12 - 1 - n_opt)
    assert scores.losses[1][0] == pytest.approx(ref, rel=1e-5)
    # " The dog barked loudly at the moon." is 18 tokens: BOS + one prompt token + its first 10 tokens.
    enc = bh.encode(items, tok, 12)
    assert all(len(x) <= 12 for x in enc.ids) and (enc.start >= 2).all()
    assert enc.option_truncated.tolist() == [False, True, False, False, False] and enc.start[1] == 2
    assert scores.n_option_truncated == 1 and "cut 1 options from the right" in caplog.text


def test_gemma2_softcapped_head_matches_its_own_logits(tiny_gemma2):
    spec = {"path": str(tiny_gemma2)}
    model, tok = load_pretrained(spec, "g", "causal_lm", CPU, torch.float32), load_tokenizer(spec, "g")
    assert model.config.final_logit_softcapping and model.config._attn_implementation == "eager"
    items = items_of(mc())
    scores = bh.score(model, tok, items, max_length=128)
    ref = [reference_loss(model, tok, items.prompts[0], o) for o in items.choices[0]]
    np.testing.assert_allclose(scores.losses[0], ref, rtol=1e-5)


def test_a_head_that_disagrees_with_the_model_falls_back_to_full_logits(llama, monkeypatch, caplog):
    model, tok = llama
    items = items_of(mc())
    good = bh.score(model, tok, items, max_length=256)
    monkeypatch.setattr(bh, "_head", lambda m: (lambda h: 2 * m.get_output_embeddings()(h)))
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        fallback = bh.score(model, tok, items, max_length=256)
    assert "full-vocabulary logits" in caplog.text
    np.testing.assert_allclose(np.concatenate(fallback.losses), np.concatenate(good.losses), rtol=1e-5)


def test_prompt_template_fields_and_errors():
    df = pl.read_parquet(DATA / "copa.parquet").head(3)
    items = items_of(df, prompt="{question} What was the {asks_for}?\nAnswer:")
    assert items.prompts[0] == f"{df['question'][0]} What was the {df['asks_for'][0]}?\nAnswer:"
    assert items.item_ids == df["id"].to_list()
    renamed = df.rename({"question": "premise"})
    assert items_of(renamed, question_column="premise").prompts == bh.prepare_items(
        df, {"prompt": PROMPT}, "t", "x").prompts
    with pytest.raises(ConfigError, match=r"behaviour.t.prompt: unknown placeholder '\{asks\}'.*'asks_for'"):
        items_of(df, prompt="{question} ({asks})")
    with pytest.raises(ConfigError, match="positional field"):
        items_of(df, prompt="{question} {}")
    with pytest.raises(ConfigError, match="malformed"):
        items_of(df, prompt="{question")
    assert len(items_of(df, max_items=2).prompts) == 2


@pytest.mark.parametrize(("frame", "spec", "message"), [
    (mc().drop("answer"), {}, r"\(test.parquet\): no answer column 'answer'; columns are \['question', 'choices'\]"),
    (mc(), {"choices_column": "options"}, "no choices column 'options'"),
    (mc(answer=[1, 2]), {}, r"column 'answer', row 1: answer 2 is out of range for 2 choices"),
    (mc(answer=[1, -1]), {}, "row 1: answer -1 is out of range"),
    (mc(answer=[None, 0]), {}, "column 'answer', row 0: answer None is not an option index"),
    (mc(choices=[["a", "b"], ["only one"]]), {}, r"column 'choices', row 1: needs at least 2 choices"),
    (mc(choices=[["a", "  "], ["x", "y"]]), {}, "column 'choices', row 0: option 1 is empty"),
    (mc(question=["fine", None]), {}, "column 'question', row 1: missing value"),
    (mc(choices=["not json", '["x", "y"]']), {}, "column 'choices', row 0: expected a JSON list"),
])
def test_bad_items_name_file_column_and_row(frame, spec, message):
    with pytest.raises(DataError, match=message):
        items_of(frame, **spec)


def test_choices_as_json_strings_from_csv_are_accepted(tmp_path):
    path = tmp_path / "mc.csv"
    mc(choices=['["a", "b"]', '["x", "y", "z"]']).write_csv(path)
    df, origin = bh.read_items({"path": str(path)}, "csv")
    items = bh.prepare_items(df, {"prompt": PROMPT}, "csv", origin)
    assert items.choices == [["a", "b"], ["x", "y", "z"]] and items.answers.tolist() == [1, 0]


def test_hub_source_fails_clearly_without_datasets_or_offline(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "datasets" else real(n, *a))
    with pytest.raises(DataError, match=r"needs the 'datasets' package \(pip install datasets\)"):
        bh.read_items({"hub": "piqa"}, "p")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"offline.*behaviour.p.path"):
        bh.read_items({"hub": "no-such-user/no-such-mc-set"}, "p")


def test_encoder_or_headless_models_are_refused(tmp_path):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match=r"must be a causal language model.*BertModel \(bert\)"):
        load_pretrained({"path": str(tmp_path / "bert")}, "enc", "causal_lm", CPU, torch.float32)
    # The same weights claimed to be a BERT LM-head model: its head is missing from the checkpoint.
    cfg_path = tmp_path / "bert" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "architectures": ["BertLMHeadModel"]}))
    with pytest.raises(ConfigError, match="has no trained language-model head"):
        load_pretrained({"path": str(tmp_path / "bert")}, "enc", "causal_lm", CPU, torch.float32)
    LlamaModel(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "base")
    with pytest.raises(ConfigError, match="LlamaModel"):
        load_pretrained({"path": str(tmp_path / "base")}, "base", "causal_lm", CPU, torch.float32)


def test_write_and_read_meta_roundtrip(llama, tmp_path):
    model, tok = llama
    items = items_of(mc())
    scores = bh.score(model, tok, items, max_length=256)
    bd.write(bd.frame(items, scores), bd.summary(items, scores, scorer="tiny"), tmp_path / "b.parquet")
    meta = bd.read_meta(tmp_path / "b.parquet")
    assert meta["scorer"] == "tiny" and meta["n_items"] == 2
    back = pl.read_parquet(tmp_path / "b.parquet")
    assert back["losses"].to_list() == scores.losses and back["correct"].to_list() == scores.correct.tolist()


# --------------------------------------------------------------------------- the stage, through the snakemake CLI


@pytest.mark.workflow
def test_behaviour_stage_runs_to_the_table(tmp_path, tiny_llama):
    target = "results/tables/behaviour.md"
    cfg = {
        "seed": 0,
        "device": "cpu",
        # The schema needs one dataset; grid: false keeps it out of every stage.
        "datasets": {"unused": {"path": str(DATA / "trec.parquet"), "grid": False}},
        "models": {"tiny": {"path": str(tiny_llama), "layers": [1], "max_length": 64, "dtype": "float32",
                            "token_budget": 2048}},
        "features": {"hidden_poolings": ["mean"]},
        "probe": {"Cs": [1.0], "cv_folds": 2},
        "behaviour": {"copa_tiny": {"path": str(DATA / "copa.parquet"), "model": "tiny", "max_items": 40,
                                    "prompt": "{question} What was the {asks_for}?\nAnswer:"}},
    }
    write_config(tmp_path, cfg)
    snakemake(tmp_path, target)
    res = tmp_path / "results"
    scored = pl.read_parquet(res / "behaviour" / "copa_tiny.parquet")
    meta = bd.read_meta(res / "behaviour" / "copa_tiny.parquet")
    assert scored.height == 40 and meta["n_items"] == 40 and meta["scorer"] == "tiny"
    assert scored["item_id"].to_list() == pl.read_parquet(DATA / "copa.parquet")["id"].head(40).to_list()
    assert scored["text"][0].endswith("What was the cause?\nAnswer:")
    assert (scored["label"] == "correct").to_list() == (scored["predicted"] == scored["answer"]).to_list()
    assert meta["accuracy"] == pytest.approx(scored["correct"].mean())
    # The prompt cut for max_length=64 is counted in the metadata and the log.
    assert meta["n_items_prompt_truncated"] == scored["prompt_truncated"].sum()
    log = (res / "logs" / "score_behaviour" / "copa_tiny.log").read_text()
    assert f"answered {meta['n_correct']} of 40 items correctly" in log
    prepared = pl.read_parquet(res / "data" / "copa_tiny.parquet")
    n_test = int((prepared["split"] == "test").sum())
    assert n_test == 8 and prepared["label_name"].to_list() == scored["label"].to_list()
    table = pl.read_parquet(res / "tables" / "behaviour.parquet")
    assert table.columns == TABLE_COLUMNS
    assert table["family"].to_list() == ["hidden", "tfidf"] and table["probe_model"].to_list() == ["tiny", "-"]
    assert (table["dataset"] == "copa_tiny").all() and (table["scorer_model"] == "tiny").all()
    assert table["scorer_accuracy"][0] == pytest.approx(meta["accuracy"]) and (table["n_test"] == n_test).all()
    test_labels = prepared.filter(pl.col("split") == "test")["label_name"]
    assert table["majority_rate_test"][0] == pytest.approx(test_labels.value_counts()["count"].max() / n_test)
    assert table["test_macro_f1"].is_between(0, 1).all()
    probe = json.loads((res / "probes/tiny/copa_tiny/hidden/layer_1/mean__raw.json").read_text())
    assert table["test_macro_f1"][0] == probe["test"]["macro_f1"] and table["cv_macro_f1"][0] == probe["cv_macro_f1"]
    assert "copa_tiny" in (res / "tables" / "behaviour.md").read_text()
    assert pl.read_csv(res / "tables" / "behaviour.csv").height == 2

    # Probe-only, speed and placement settings (the `runtime` param) do not rescore; the prompt does.
    changed = json.loads(json.dumps(cfg))
    changed["behaviour"]["copa_tiny"]["batch_size"] = 3
    changed["models"]["tiny"]["token_budget"] = 512
    changed["device"] = "auto"
    write_config(tmp_path, changed)
    assert set(planned(tmp_path, target)) == set()
    changed["behaviour"]["copa_tiny"]["prompt"] = "{question}\nAnswer:"
    write_config(tmp_path, changed)
    assert "score_behaviour" in set(planned(tmp_path, target))

"""Top features: probe selection on CV, the binary sign convention, streaming top-k contexts over a
synthetic code store (checked against brute force, independent of block size), context decoding
with a real tokenizer, Neuronpedia ids from SAELens' directory, rendering."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import zarr

from saeprobe import top_features as tf
from saeprobe.errors import DataError
from saeprobe.store import CodeStore, write_index
from tests.helpers import STORIES


def write_code_store(path, docs: list[np.ndarray], doc_ids: list[int], special: list[np.ndarray] | None = None,
                     chunk: int = 5) -> CodeStore:
    """A CodeStore from dense per-document code blocks (n_tokens_i, d_sae), stored in the given order."""
    g = zarr.open_group(str(path), mode="w")
    dense = np.concatenate(docs).astype(np.float32)
    csr = sp.csr_matrix(dense)
    spec = np.concatenate(special) if special is not None else np.zeros(len(dense), bool)
    for name, arr, dtype in (("indptr", csr.indptr, np.int64), ("indices", csr.indices, np.int32),
                             ("values", csr.data, np.float32), ("special", spec, bool)):
        g.create_array(name, data=np.asarray(arr, dtype=dtype), chunks=(chunk,))
    write_index(g, np.concatenate([[0], np.cumsum([len(d) for d in docs])]), np.asarray(doc_ids))
    g.attrs["d_sae"] = dense.shape[1]
    return CodeStore(path)


def random_docs(rng, n_docs=12, d_sae=10, density=0.3):
    docs, special = [], []
    for _ in range(n_docs):
        n = int(rng.integers(1, 9))
        codes = rng.exponential(1.0, (n, d_sae)) * (rng.random((n, d_sae)) < density)
        docs.append(np.round(codes, 1))  # rounding makes ties, which the order must settle
        s = np.zeros(n, bool)
        s[0] = True  # a BOS-like first token
        special.append(s)
    return docs, special


def brute_force(docs, doc_ids, special, feats, k, exclude_special):
    out = {}
    for f in feats:
        cands = []
        for codes, d, s in zip(docs, doc_ids, special, strict=True):
            col = codes[:, f].astype(np.float32).astype(np.float64).copy()
            if exclude_special:
                col[s] = 0
            if col.max() > 0:
                p = int(np.argmax(col))  # first maximum = earliest position
                cands.append((-col[p], d, p))
        out[f] = [(-v, d, p) for v, d, p in sorted(cands)[:k]]
    return out


@pytest.mark.parametrize("exclude_special", [True, False])
def test_streaming_top_k_matches_brute_force_for_any_block_size(tmp_path, exclude_special):
    rng = np.random.default_rng(0)
    docs, special = random_docs(rng)
    doc_ids = list(rng.permutation(len(docs)))  # stored order differs from doc_id order
    store = write_code_store(tmp_path / "codes.zarr", docs, doc_ids, special)
    feats, k = [7, 0, 3], 4
    expected = brute_force(docs, doc_ids, special, feats, k, exclude_special)
    results = []
    for block in (1, 6, 20, 1 << 16):
        seen = []
        rows = store.rows
        store.rows = lambda a, b, rows=rows, seen=seen: (seen.append(b - a), rows(a, b))[1]  # type: ignore[method-assign]
        top = tf.top_activations(store, feats, k, exclude_special=exclude_special, block_tokens=block)
        store.rows = rows  # type: ignore[method-assign]
        assert max(seen) <= max(block, max(len(d) for d in docs))  # memory bounded by the block
        for i, f in enumerate(feats):
            got = [(top.value[i, j], top.doc_id[i, j], top.position[i, j]) for j in range(k) if top.doc_id[i, j] >= 0]
            assert [(round(v, 5), d, p) for v, d, p in got] == [(round(v, 5), d, p) for v, d, p in expected[f]], (block, f)
        results.append(top)
    for other in results[1:]:
        np.testing.assert_array_equal(other.doc_id, results[0].doc_id)
        np.testing.assert_array_equal(other.position, results[0].position)


def test_special_tokens_are_skipped_and_docs_counted_by_label(tmp_path):
    d = 4
    doc0 = np.zeros((3, d))
    doc0[0, 2] = 50.0  # huge code on the special first token
    doc0[2, 2] = 1.0
    doc1 = np.zeros((4, d))
    doc1[3, 2] = 2.0
    doc2 = np.zeros((2, d))
    special = [np.array([True, False, False]), np.array([True, False, False, False]), np.array([True, False])]
    store = write_code_store(tmp_path / "c.zarr", [doc0, doc1, doc2], [0, 1, 2], special)
    labels = np.array([0, 1, 1])
    top = tf.top_activations(store, [2], 3, exclude_special=True, doc_labels=labels, n_labels=2)
    assert top.doc_id[0].tolist() == [1, 0, -1] and top.position[0].tolist() == [3, 2, -1]
    assert top.value[0, :2].tolist() == [2.0, 1.0]
    assert top.docs_active.tolist() == [[1, 1]]
    with_special = tf.top_activations(store, [2], 1, exclude_special=False)
    assert (with_special.doc_id[0, 0], with_special.position[0, 0], with_special.value[0, 0]) == (0, 0, 50.0)
    with pytest.raises(DataError, match="feature index"):
        tf.top_activations(store, [d], 1)
    with pytest.raises(DataError, match="document labels"):
        tf.top_activations(store, [1], 1, doc_labels=np.array([0]), n_labels=2)


def test_binary_sign_convention_and_multiclass():
    coef = np.array([[0.5, -2.0, 0.0, 1.5, -0.1]])
    listed = tf.top_weighted(coef, ["benign", "jailbreak"], 2)
    by_class = {(f.class_name, f.rank): (f.feature, f.weight) for f in listed}
    assert by_class == {("benign", 1): (1, -2.0), ("benign", 2): (4, -0.1),
                        ("jailbreak", 1): (3, 1.5), ("jailbreak", 2): (0, 0.5)}
    # Only weights pointing towards the class are listed, even when fewer than asked.
    assert [f.feature for f in tf.top_weighted(coef, ["a", "b"], 10) if f.class_index == 1] == [3, 0]
    multi = np.array([[1.0, 0.2, -3.0], [-1.0, 0.0, 2.0], [0.3, 0.3, 0.0]])
    listed = tf.top_weighted(multi, ["x", "y", "z"], 2)
    assert [(f.class_name, f.feature) for f in listed] == [("x", 0), ("x", 1), ("y", 2), ("z", 0), ("z", 1)]
    with pytest.raises(DataError, match="3 classes"):
        tf.top_weighted(np.ones((2, 4)), ["a", "b", "c"], 1)


def test_best_sae_probe_is_chosen_on_cv():
    grid = pl.DataFrame({
        "dataset": ["d", "d", "d", "d"], "family": ["sae", "sae", "hidden", "sae"],
        "source": ["s", "s", "hidden", "t"], "model": ["m"] * 4, "layer": [1, 2, 1, 1],
        "pooling": ["mean", "max", "mean", "sum"], "binarize": [None, 1.0, None, None],
        "cv_macro_f1": [0.8, 0.7, 0.99, 0.6], "cv_macro_f1_se": [0.01] * 4, "test_macro_f1": [0.5, 0.99, 0.9, 0.6],
        "n_features": [64, 64, 32, 16],
        "probe": ["logreg"] * 4,
    })
    best = tf.best_sae_probes(grid)
    assert best.select("source", "layer", "pooling").rows() == [("s", 1, "mean"), ("t", 1, "sum")]
    # A strong baseline on SAE features (e.g. MOSAIC's tree) has no linear weights: never chosen here.
    tree = grid.with_columns(probe=pl.Series(["decision_tree", "logreg", "logreg", "logreg"]))
    assert tf.best_sae_probes(tree).select("source", "layer").rows() == [("s", 2), ("t", 1)]
    assert tf.best_sae_probes(grid, ["other"]).is_empty()


def test_mark_context_with_fake_decoder():
    vocab = {i: f"w{i} " for i in range(20)}

    def decode(ids):
        return "".join(vocab[i] for i in ids)

    text = tf.mark_context(list(range(20)), 10, 2, decode)
    assert text == "…w8 w9 «w10 »w11 w12 …"
    assert tf.mark_context([1, 2], 0, 5, decode) == "«w1 »w2 "
    with pytest.raises(DataError, match="position 5"):
        tf.mark_context([1, 2], 5, 1, decode)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(STORIES)


def test_contexts_end_to_end_with_a_real_tokenizer(tmp_path, tokenizer):
    texts = ["Once upon a time there was a cat.", "The big dragon flew over the hill.", "Lily liked to play outside.",
             "A dragon is big."]
    enc = [tokenizer(t)["input_ids"] for t in texts]
    d_sae = 6
    docs, special = [], []
    for i, ids in enumerate(enc):
        codes = np.zeros((len(ids), d_sae))
        codes[1:, 0] = 0.1 * (i + 1)  # feature 0: weakly everywhere
        special.append(np.array([t == tokenizer.bos_token_id for t in ids]))
        docs.append(codes)
    pieces = tokenizer.convert_ids_to_tokens(enc[1])
    dragon = pieces.index("▁big") + 1  # "▁d" of "▁d r a g on"
    docs[1][dragon, 3] = 5.0  # feature 3 peaks on "dragon" in doc 1 ...
    docs[3][2, 3] = 1.0  # ... and is weaker in doc 3
    order = [2, 0, 3, 1]  # stored order
    store = write_code_store(tmp_path / "c.zarr", [docs[i] for i in order], order, [special[i] for i in order])
    pl.DataFrame({"doc_id": np.arange(4), "input_ids": pl.Series(enc, dtype=pl.List(pl.Int32))}).write_parquet(
        tmp_path / "tokens.parquet")
    frame = pl.DataFrame({"doc_id": np.arange(4), "label": [0, 1, 0, 1], "split": ["train", "test", "train", "test"]})
    coef = np.zeros((1, d_sae))
    coef[0, 3], coef[0, 0], coef[0, 5] = 2.0, -1.0, 0.5
    probe = {"dataset": "d", "model": "m", "source": "s", "layer": 1, "pooling": "mean", "binarize": None,
             "cv_macro_f1": 0.8, "test_macro_f1": 0.7}
    rows = tf.feature_rows(probe, coef, ["story", "dragon"], store, top_n=2, contexts=3, context_tokens=6,
                           docs=frame, tokens_path=tmp_path / "tokens.parquet", decode=tf.tokenizer_decoder(tokenizer),
                           np_id="gemma-2-2b/12-gemmascope-res-16k")
    df = tf.to_frame(rows)
    assert df.select("class_name", "rank", "feature").rows() == [("story", 1, 0), ("dragon", 1, 3), ("dragon", 2, 5)]
    f3 = df.row(1, named=True)
    assert [c["doc_id"] for c in f3["contexts"]] == [1, 3]
    top = f3["contexts"][0]
    assert top["activation"] == 5.0 and top["label"] == "dragon" and top["split"] == "test"
    assert top["text"].startswith("<s> The big «d»ragon") and top["text"].endswith("…")
    # (word spacing kept, the space before the token outside the mark)
    assert f3["docs_active_in_class"] == 1.0 and f3["docs_active_elsewhere"] == 0.0
    assert f3["neuronpedia"] == "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/3"
    f5 = df.row(2, named=True)
    assert f5["contexts"] == [] and f5["max_activation"] is None  # never fires: listed, no contexts
    f0 = df.row(0, named=True)
    assert [c["doc_id"] for c in f0["contexts"]] == [3, 2, 1]  # strongest documents first
    assert f0["weight"] == -1.0 and f0["docs_active_in_class"] == 1.0
    out = tmp_path / "t.parquet"
    df.write_parquet(out)
    assert pl.read_parquet(out).schema == df.schema
    md = tf.markdown(df)
    assert "## d · s" in md and "### class `dragon`" in md and "[3](https://www.neuronpedia.org/" in md and "«" in md
    page = tf.html_page(df)
    assert "<mark>" in page and "neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/3" in page
    # Image datasets: no tokens, contexts give doc ids and positions only.
    rows = tf.feature_rows(probe, coef, ["story", "dragon"], store, top_n=1, contexts=2, context_tokens=3, docs=frame)
    assert rows[1]["contexts"][0]["text"] is None and "token" in tf.markdown(tf.to_frame(rows))


def test_missing_tokens_are_an_error(tmp_path):
    pl.DataFrame({"doc_id": [0], "input_ids": [[1, 2]]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match="no tokens for doc_id"):
        tf.read_token_ids(tmp_path / "t.parquet", [0, 5])


def test_neuronpedia_ids_from_saelens_directory():
    assert tf.neuronpedia_id("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical") == \
        "gemma-2-2b/12-gemmascope-res-16k"
    assert tf.neuronpedia_id("gemma-scope-2b-pt-res-canonical", "layer_99/width_16k/canonical") is None
    assert tf.neuronpedia_id(None, None) is None and tf.neuronpedia_id("no-such-release", "x") is None
    directory = {"r": {"saes": [{"id": "a", "neuronpedia": "m/0-x"}, {"id": "b"}]}}
    assert tf.neuronpedia_id("r", "a", directory) == "m/0-x" and tf.neuronpedia_id("r", "b", directory) is None
    assert tf.neuronpedia_url(None, 3) == "" and tf.neuronpedia_url("m/0-x", 3) == "https://www.neuronpedia.org/m/0-x/3"


def _unmarked(text: str) -> str:
    return text.replace(tf.MARK[0], "").replace(tf.MARK[1], "").strip("…")


@pytest.mark.parametrize("text", ["Die Brücke in München ist schön, café.", "我爱北京天安门。"])
def test_contexts_never_split_a_multibyte_character(tokenizer, text):
    # stories260K is a Llama SentencePiece tokenizer with byte fallback: "ü" is <0xC3><0xBC>, "我" three byte tokens.
    ids = tokenizer(text)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert any(p.startswith("<0x") for p in pieces)  # the text does exercise byte fallback
    decode = tf.tokenizer_decoder(tokenizer)
    full = decode(ids)
    for window in (0, 1, 3):
        for position, piece in enumerate(pieces):
            context = tf.mark_context(ids, position, window, decode)
            assert "\ufffd" not in context, (window, position, context)
            assert _unmarked(context) in full, (window, position, context)  # the real characters, in order
            if piece.startswith("<0x"):  # a byte token is marked with the whole character it belongs to
                marked = context.split(tf.MARK[0], 1)[1].split(tf.MARK[1], 1)[0]
                assert len(marked) == 1 and marked in text, (position, context)
    if "ü" in text:  # either byte of the "ü" of "Brücke" marks the "ü", with the word whole around it
        first = pieces.index("<0xC3>")
        for position in (first, first + 1):
            assert "Br«ü»cke" in tf.mark_context(ids, position, 3, decode)


def test_contexts_keep_characters_whole_with_a_byte_level_bpe():
    """Byte-level BPE (GPT-2 style) splits a character's bytes over tokens too; its decoder replaces only the
    invalid bytes (SentencePiece's byte fallback replaces the whole run), and both must come out whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["the bridge in the town"] * 5,
                            trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    text = "the Brücke in München, 我爱北京"
    ids = tokenizer(text)["input_ids"]
    decode = tf.tokenizer_decoder(tokenizer)
    assert "\ufffd" in decode(ids[:5])  # "Br" + the first byte of "ü": the tokens do split characters
    for position in range(len(ids)):
        context = tf.mark_context(ids, position, 1, decode)
        assert "\ufffd" not in context and _unmarked(context) in text, (position, context)

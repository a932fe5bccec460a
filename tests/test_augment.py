from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from conftest import frame

from pipeline.augment import (
    ApertiumTranslator,
    HFTranslator,
    Job,
    SynonymSwapper,
    augment,
    build_jobs,
    select_classes,
)
from pipeline.clean import dedup_key
from pipeline.io import DataError
from pipeline.params import BackTranslationParams, SynonymParams
from pipeline.resources import ResourceError, ensure_apertium

SPAM = [
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive entry question",
    "WINNER!! As a valued network customer you have been selected to receive a prize reward! To claim call now.",
    "Had your mobile 11 months or more? You are entitled to update to the latest colour mobiles with camera for free!",
    "URGENT! You have won a 1 week FREE membership in our prize jackpot! Txt the word CLAIM to 81010 now",
]


def test_select_classes():
    labels = pd.Series(["a"] * 5 + ["b"] * 2 + ["c"] * 2)
    assert select_classes(labels, "all", "k") == {"a", "b", "c"}
    assert select_classes(labels, "minority", "k") == {"b", "c"}
    assert select_classes(labels, ["c"], "k") == {"c"}
    with pytest.raises(DataError, match="k: unknown class"):
        select_classes(labels, ["z"], "k")


def test_core_keeps_lineage_and_counts_every_drop():
    df = frame([("alpha beta", "a"), ("gamma delta", "b"), ("epsilon zeta", "b"), ("eta theta", "b")])
    outputs = {"gamma delta": "gamma delta!", "epsilon zeta": "", "eta theta": "alpha beta"}

    def gen(texts, ids):  # deterministic stand-in for a translator: identical, empty, duplicate
        return [outputs[t] for t in texts]

    def gen2(texts, ids):
        return [t.upper() + " really" for t in texts]

    r = augment(df, [Job("x", 0, frozenset({"b"}), gen), Job("y", 0, frozenset({"b"}), gen2)])
    assert dict(zip(r.dropped["source_id"], r.dropped["reason"])) == {
        "r0001": "identical_to_source", "r0002": "empty_variant", "r0003": "duplicate_of_existing_text"}
    added = r.rows[r.rows["origin"] == "y"]
    assert len(added) == 3 and (added["label"] == "b").all()
    assert set(added["source_id"]) == {"r0001", "r0002", "r0003"} and r.rows["id"].is_unique
    assert r.generated == {"x": 3, "y": 3}
    assert len(r.rows) == len(df) + sum(r.generated.values()) - len(r.dropped)


@pytest.fixture(scope="module")
def swapper():
    return SynonymSwapper(SynonymParams(aug_p=0.2), seed=7)


def test_synonym_variants_differ_keep_punctuation_and_are_seeded(swapper):
    ids = [f"id{i}" for i in range(len(SPAM))]
    out = swapper(0)(SPAM, ids)
    assert all(dedup_key(o) != dedup_key(s) for o, s in zip(out, SPAM)), out
    # Punctuation and numbers are never split or swapped (nlpaug's own tokenizer writes "T & C ' s").
    assert "!! As a valued" in out[1] or "!! as a valued" in out[1].lower()
    assert "2005." in out[0] and "87121" in out[0]
    again = SynonymSwapper(SynonymParams(aug_p=0.2), seed=7)(0)(SPAM, ids)
    assert out == again
    # Seeded per row: order and batch composition do not change a row's variant.
    assert swapper(0)(SPAM[::-1], ids[::-1]) == out[::-1]
    assert swapper(1)(SPAM, ids) != out  # another variant number draws differently


@pytest.fixture(scope="module")
def apertium():
    return ApertiumTranslator(batch_size=3)


def test_apertium_back_translation_differs_and_stays_aligned(apertium):
    texts = SPAM + ["Tom & Jerry <b>are</b> friends.", "The service was slow but the food was excellent."]
    out = apertium.back_translate("eng", "spa")(texts, [str(i) for i in range(len(texts))])
    assert len(out) == len(texts)
    assert sum(dedup_key(o) != dedup_key(t) for o, t in zip(out, texts)) >= len(texts) - 1
    assert "&" in out[4] and "Tom" in out[4]  # HTML-escaped on the way in, unescaped on the way out
    assert "excellent" in out[5].lower()  # an alignment slip would put another record's words here


def test_missing_apertium_and_missing_pair_are_clear(monkeypatch):
    with pytest.raises(ResourceError, match="apertium-eng-xyz"):
        ensure_apertium("eng", ["xyz"])
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ResourceError, match="apt-get install apertium"):
        ensure_apertium("eng", ["spa"])


def test_build_jobs_runs_the_configured_methods(sms_slice, params):
    from pipeline.clean import clean

    kept = clean(sms_slice, params.clean, "sms.csv").kept
    p = dataclasses.replace(params.augment, synonym=dataclasses.replace(params.augment.synonym, variants=2))
    r = augment(kept, build_jobs(kept, p, seed=1))
    spam = kept[kept["label"] == "spam"]
    assert r.generated == {"synonym": 2 * len(spam), "back_translation": len(spam)}
    new = r.rows[r.rows["origin"] != "original"]
    assert (new["label"] == "spam").all() and set(new["source_id"]) <= set(spam["id"])
    by_src = kept.set_index("id")["text"]
    assert all(dedup_key(t) != dedup_key(by_src[s]) for t, s in zip(new["text"], new["source_id"]))


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory):
    """A randomly initialised 1+1-layer MarianMT with the bundled BERT tokenizer: plumbing only, no quality."""
    import torch
    from transformers import AutoTokenizer, MarianConfig, MarianMTModel

    from pipeline.modeling import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    cfg = MarianConfig(vocab_size=tok.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       max_position_embeddings=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                       decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=None)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("marian")
    MarianMTModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_hf_backend_batches_and_returns_one_text_per_input(tiny_marian):
    p = BackTranslationParams(backend="hf", hf_forward_model=tiny_marian, hf_backward_model=tiny_marian,
                              batch_size=2, max_length=12, device="cpu")
    tr = HFTranslator(p, seed=0)
    out = tr(0)(SPAM + ["short"], list("abcde"))
    assert len(out) == 5 and all(isinstance(o, str) for o in out) and any(out)
    assert tr(0)(SPAM + ["short"], list("abcde")) == out  # greedy decoding is deterministic
    sampled = HFTranslator(dataclasses.replace(p, variants=2), seed=0)
    assert sampled(0)(SPAM, list("abcd")) == sampled(0)(SPAM, list("abcd"))  # sampling is seeded


def test_hf_backend_unknown_model_is_a_clear_error(tmp_path):
    from pipeline.modeling import ModelError

    p = BackTranslationParams(backend="hf", hf_forward_model=str(tmp_path / "missing-model"), device="cpu")
    with pytest.raises(ModelError, match="augment.back_translation.hf_forward_model"):
        HFTranslator(p, seed=0)

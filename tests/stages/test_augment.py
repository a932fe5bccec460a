from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import frame

from pipeline.core.io import DataError
from pipeline.core.params import AugmentParams, BackTranslationParams, SynonymParams, VariantFilterParams, replace
from pipeline.core.protect import mask, protected_tokens, restore
from pipeline.core.resources import ResourceError, ensure_apertium
from pipeline.core.text import dedup_key
from pipeline.stages.augment import (
    ApertiumTranslator,
    EmbeddingSimilarity,
    HFTranslator,
    Job,
    SynonymSwapper,
    augment,
    build_jobs,
    plan,
    select_classes,
    stage_metrics,
)

pytestmark = pytest.mark.model  # loads real transformer models

NO_FILTER = AugmentParams(filter=VariantFilterParams(enabled=False))

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
    # "minority" means below a ratio of the largest class, not merely smaller than it.
    near = pd.Series(["a"] * 100 + ["b"] * 98 + ["c"] * 70)
    assert select_classes(near, "minority", "k", minority_ratio=0.8) == {"c"}
    assert select_classes(near, "minority", "k", minority_ratio=0.5) == set()
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

    p = AugmentParams(max_ratio=10, filter=VariantFilterParams(enabled=False))
    r = augment(df, [Job("x", 0, frozenset({"b"}), gen), Job("y", 0, frozenset({"b"}), gen2)], p, seed=0)
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


def test_build_jobs_runs_the_configured_methods(sms_slice, data_stages_on):
    params = data_stages_on
    from pipeline.stages.clean import clean

    kept = clean(sms_slice, params.clean, "sms.csv").kept
    p = replace(params.augment, synonym=replace(params.augment.synonym, variants=2))
    r = augment(kept, build_jobs(kept, p, seed=1), p, seed=1, similarity=EmbeddingSimilarity(p.filter))
    spam = kept[kept["label"] == "spam"]
    # 240 ham / 60 spam: the budget (240 - 60) exceeds 3 jobs x 60 rows, so every job runs on every spam row.
    assert r.generated == {"synonym": 2 * len(spam), "back_translation": len(spam)}
    m = stage_metrics(kept, r)
    assert m["rows_out"] + m["dropped_total"] == m["rows_in"] + sum(m["generated"].values())
    assert m["per_class"]["spam"] <= m["per_class"]["ham"] and m["similarity"]["p50"] > 0.7
    new = r.rows[r.rows["origin"] != "original"]
    assert (new["label"] == "spam").all() and set(new["source_id"]) <= set(spam["id"])
    by_src = kept.set_index("id")["text"]
    assert all(dedup_key(t) != dedup_key(by_src[s]) for t, s in zip(new["text"], new["source_id"]))


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory):
    """A randomly initialised 1+1-layer MarianMT with the bundled BERT tokenizer: plumbing only, no quality."""
    import torch
    from transformers import AutoTokenizer, MarianConfig, MarianMTModel

    from pipeline.core.modeling import resolve_model

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
    sampled = HFTranslator(replace(p, variants=2), seed=0)
    assert sampled(0)(SPAM, list("abcd")) == sampled(0)(SPAM, list("abcd"))  # sampling is seeded


def test_hf_backend_unknown_model_is_a_clear_error(tmp_path):
    from pipeline.core.modeling import ModelError

    p = BackTranslationParams(backend="hf", hf_forward_model=str(tmp_path / "missing-model"), device="cpu")
    with pytest.raises(ModelError, match="augment.back_translation.hf_forward_model"):
        HFTranslator(p, seed=0)


# ---------------------------------------------------------------------------------------------- balance-aware plan
def suffix_job(origin: str, classes: set[str], variant: int = 0) -> Job:
    return Job(origin, variant, frozenset(classes), lambda texts, ids: [f"{t} {origin} {variant}" for t in texts])


def counts_of(df: pd.DataFrame) -> dict[str, int]:
    return df["label"].value_counts().to_dict()


def labelled(sizes: dict[str, int]) -> pd.DataFrame:
    return frame([(f"{lab} text number {i}", lab) for lab, n in sizes.items() for i in range(n)])


def test_balanced_frame_augments_nothing():
    df = labelled({"pos": 50, "neg": 49})
    jobs = [Job(o, 0, select_classes(df["label"], "minority", "k", 0.8), suffix_job(o, set()).generate)
            for o in ("synonym", "back_translation")]
    r = augment(df, jobs, NO_FILTER, seed=0)
    assert len(r.rows) == len(df) and r.generated == {} and r.dropped.empty


@pytest.mark.parametrize("selector", ["minority", "all"])
def test_three_classes_never_reorder_and_never_pass_the_majority(selector):
    df = labelled({"neg": 43, "neu": 39, "pos": 18})
    classes = select_classes(df["label"], selector, "k", 0.8)
    jobs = [suffix_job("synonym", classes, 0), suffix_job("synonym", classes, 1),
            suffix_job("back_translation", classes)]
    r = augment(df, jobs, NO_FILTER, seed=3)
    before, after = counts_of(df), counts_of(r.rows)
    assert max(after.values()) == before["neg"]  # no class grows past the largest one
    for a in before:
        for b in before:
            if before[a] > before[b]:
                assert after[a] >= after[b], (before, after)
    if selector == "minority":
        # neu: 39/43 >= 0.8, not a minority, so not augmented; pos may then grow only up to neu's 39.
        assert after["neu"] == 39 and after["pos"] == 39
        expected_per_row = {1: 15, 2: 3}  # budget 21 < 3 jobs x 18 rows: one variant each, a second for 3
    else:
        assert after["neu"] == 43 and after["pos"] == 43
        expected_per_row = {1: 11, 2: 7}
    per_row = r.rows[r.rows["origin"] != "original"].groupby("source_id").size()
    assert per_row[per_row.index.isin(df.loc[df["label"] == "pos", "id"])].value_counts().to_dict() == expected_per_row
    # Both methods are used even though the budget is less than one method's full pass.
    assert set(r.rows.loc[r.rows["label"] == "pos", "origin"]) == {"original", "synonym", "back_translation"}


def test_plan_ratio_and_determinism():
    df = labelled({"a": 100, "b": 10})
    jobs = [suffix_job("synonym", {"b"})]
    rows, info = plan(df, jobs, max_ratio=0.15, seed=1)
    assert info == {"b": {"budget": 5, "planned": 5}} and len(rows[0]) == 5
    assert plan(df, jobs, 0.15, seed=1)[0] == rows and plan(df, jobs, 0.15, seed=2)[0] != rows
    # Growing beyond the majority takes an explicit max_ratio > 1 (low-data regimes): capped by the variants.
    rows, info = plan(df, [suffix_job("synonym", {"a", "b"})], max_ratio=2.0, seed=1)
    assert info == {"a": {"budget": 100, "planned": 100}, "b": {"budget": 190, "planned": 10}}


def test_rows_in_plus_generated_equals_rows_out_plus_dropped():
    df = frame([("alpha beta", "a"), ("alpha beta gamma", "a"), ("gamma delta", "b"), ("eta theta", "b")])
    outs = {"gamma delta": "alpha beta", "eta theta": "eta  theta"}
    job = Job("x", 0, frozenset({"b"}), lambda texts, ids: [outs[t] for t in texts])
    r = augment(df, [job], AugmentParams(max_ratio=2, filter=VariantFilterParams(enabled=False)), seed=0)
    m = stage_metrics(df, r)
    assert m["rows_in"] + sum(m["generated"].values()) == m["rows_out"] + m["dropped_total"]
    assert m["dropped"] == {"duplicate_of_existing_text": 1, "identical_to_source": 1}


# ---------------------------------------------------------------------------------------------- protected tokens
TRICKY = [
    "Call 08712402050 now to claim your £1,500 prize! Visit www.win-now.co.uk or http://t.co/AbC123 today",
    "@united lost my bag again on flight UA 1234 #fail #neverAgain email me at jo.smith+bags@example.com",
    "The meeting moved to 10:30pm on 21/05 and costs $12.99 per head, reply [EMAIL] or [PHONE] to confirm",
    "Get your free ringtone at ldew.com/subs161 text HELP to 85069, only 150p per week, see <DECIMAL> terms",
    "@JetBlue thanks for the great flight to #Coachella2015 yesterday, the crew were wonderful and helpful",
]


def test_protected_tokens_are_found_and_masked_reversibly():
    toks = protected_tokens(TRICKY[0])
    assert toks == ["08712402050", "£1,500", "www.win-now.co.uk", "http://t.co/AbC123"]
    assert protected_tokens(TRICKY[1])[:3] == ["@united", "1234", "#fail"]
    assert "jo.smith+bags@example.com" in protected_tokens(TRICKY[1])
    assert {"10:30pm", "21/05", "$12.99", "[EMAIL]", "[PHONE]"} <= set(protected_tokens(TRICKY[2]))
    assert {"ldew.com/subs161", "85069", "150p", "<DECIMAL>"} <= set(protected_tokens(TRICKY[3]))
    for t in TRICKY:
        masked, tokens = mask(t)
        assert restore(masked, tokens) == t
        assert not set(protected_tokens(masked)) & set(tokens)
    masked, tokens = mask(TRICKY[0])
    assert restore(masked.replace("⟦1⟧", ""), tokens) is None  # lost
    assert restore(masked + " ⟦0⟧", tokens) is None  # duplicated
    assert restore(masked.replace("⟦0⟧", "⟦ 0 ⟧"), tokens) == TRICKY[0]  # spacing inside is tolerated


def assert_tokens_survive(r, sources: pd.DataFrame) -> int:
    by_id = sources.set_index("id")["text"]
    new = r.rows[r.rows["origin"] != "original"]
    for _, row in new.iterrows():
        for tok in protected_tokens(by_id[row["source_id"]]):
            assert tok in row["text"], (tok, row["text"])
    return len(new)


def test_protected_tokens_survive_synonym_and_apertium(swapper, apertium):
    df = frame([(t, "spam") for t in TRICKY] + [(f"ham row {i}", "ham") for i in range(40)])
    jobs = [Job("synonym", 0, frozenset({"spam"}), swapper(0)),
            Job("back_translation", 0, frozenset({"spam"}), apertium.back_translate("eng", "spa"))]
    p = AugmentParams(max_ratio=1.0, filter=VariantFilterParams(enabled=False))
    r = augment(df, jobs, p, seed=0)
    assert assert_tokens_survive(r, df) >= 8  # the methods really produced variants
    assert "protected_token_lost" not in set(r.dropped["reason"])
    # Without protection the same methods damage them (the reason this exists).
    r2 = augment(df, jobs, AugmentParams(protect_tokens=False, filter=VariantFilterParams(enabled=False)), seed=0)
    with pytest.raises(AssertionError):
        assert_tokens_survive(r2, df)


def test_hf_backend_keeps_tokens_or_counts_the_loss(tiny_marian):
    p = BackTranslationParams(backend="hf", hf_forward_model=tiny_marian, hf_backward_model=tiny_marian,
                              batch_size=4, max_length=32, device="cpu")
    df = frame([(t, "spam") for t in TRICKY] + [(f"ham row {i}", "ham") for i in range(40)])
    r = augment(df, [Job("back_translation", 0, frozenset({"spam"}), HFTranslator(p, seed=0)(0))], NO_FILTER, seed=0)
    assert_tokens_survive(r, df)
    # A random model cannot echo placeholders: each loss is counted, none slips through.
    assert (r.dropped["reason"] == "protected_token_lost").sum() >= 1
    assert len(r.rows) - len(df) + len(r.dropped) == len(TRICKY)


# ---------------------------------------------------------------------------------------------- quality filter
@pytest.fixture(scope="module")
def similarity():
    return EmbeddingSimilarity(VariantFilterParams())


def test_filter_drops_a_garbled_variant_and_keeps_a_faithful_one(similarity):
    df = frame([("The service was slow but the food was excellent.", "pos"),
                ("I think the new phone is great value for money.", "pos")] + [(f"neg {i}", "neg") for i in range(9)])
    variants = {"The service was slow but the food was excellent.": "The service was slow but the lunch was excellent.",
                "I think the new phone is great value for money.": "It is only I last to think of money."}
    job = Job("back_translation", 0, frozenset({"pos"}), lambda texts, ids: [variants[t] for t in texts])
    r = augment(df, [job], AugmentParams(), seed=0, similarity=similarity)
    assert r.rows["text"].tolist()[-1] == "The service was slow but the lunch was excellent."
    assert r.dropped["reason"].tolist() == ["low_similarity"]
    assert r.dropped["similarity"].iloc[0] < AugmentParams().filter.min_similarity < r.similarity.max()


def test_filter_length_ratio():
    df = frame([("a short text here", "pos"), ("another short text", "pos")] + [(f"neg {i}", "neg") for i in range(9)])
    job = Job("synonym", 0, frozenset({"pos"}), lambda texts, ids: [t + " " + "padding " * 10 for t in texts])
    p = AugmentParams(filter=VariantFilterParams(max_length_ratio=2.0))
    r = augment(df, [job], p, seed=0, similarity=lambda a, b: np.ones(len(a)))
    assert r.dropped["reason"].tolist() == ["length_ratio", "length_ratio"]


def test_max_rows_skips_large_data():
    df = labelled({"a": 30, "b": 5})
    r = augment(df, [suffix_job("synonym", {"b"})], AugmentParams(max_rows=20), seed=0)
    assert r.skipped and len(r.rows) == len(df)

"""Attributions (pipeline/core/attribution.py), their faithfulness metrics and `finetune explain`, on the small real
student of conftest.py, its int8 ONNX export and a TF-IDF baseline fitted on real SMS rows."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import LABELS

pytestmark = pytest.mark.model

SPAM = "WINNER!! You have won a FREE prize, call 09061701461 now to claim"
HAM = "ok see you at lunch tomorrow then"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, sms_slice):
    from pipeline.core.modeling import BASELINE_FILE, save_baseline, tfidf_logreg
    from pipeline.core.params import CleanParams, as_dict

    model = tfidf_logreg("word", 2, 1, 10000, True, 10.0, None, 1000, 0)
    model.fit(sms_slice["text"], np.array(LABELS)[sms_slice["spam"].astype(int)])
    d = tmp_path_factory.mktemp("baseline") / "baseline"
    d.mkdir()
    save_baseline(model, d / BASELINE_FILE)
    (d / "lineage.json").write_text(json.dumps({"stage": "baseline", "label_names": LABELS,
                                                "clean": as_dict(CleanParams())}))
    return d


def test_sub_word_scores_are_summed_into_the_word_they_start_in(student):
    from pipeline.core.attribution import to_words, words_of
    from pipeline.core.modeling import load_tokenizer

    text = "WINNER!! unbelievable flamboyance tonight"
    words, spans = words_of(text)
    enc = load_tokenizer(str(student), "s")(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    pieces = len(enc["input_ids"])
    assert pieces > len(words) + 2  # the point of the test: some word is split into several sub-words
    got = to_words(enc["offset_mapping"], enc["special_tokens_mask"], np.ones(pieces), spans)
    per_word = [sum(1 for (s, e), sp in zip(enc["offset_mapping"], enc["special_tokens_mask"])
                    if not sp and a <= s < b) for a, b in spans]
    assert got.tolist() == per_word and sum(per_word) == pieces - 2


def test_occlusion_is_the_drop_in_probability_without_each_word(student):
    """On the fp32 torch student: an int8 graph quantises each batch's activations with the batch's own range, so
    the same text scored beside other texts moves by ~1e-4, which would blur an exact check."""
    from pipeline.core.attribution import explain
    from pipeline.core.scoring import open_model

    model = open_model(student)
    e = explain(model, [SPAM], "occlusion")[0]
    k = LABELS.index(e.target)
    words = SPAM.split()
    expected = [model.proba([SPAM])[0, k] - model.proba([" ".join(words[:j] + words[j + 1:])])[0, k]
                for j in range(len(words))]
    assert e.words == tuple(words) and np.allclose(e.scores, expected, atol=1e-5)
    assert e.label == e.target == "spam" and e.probability > 0.5


def test_baseline_coefficients_add_up_to_its_decision_function(baseline):
    from pipeline.core.attribution import explain
    from pipeline.core.scoring import open_model

    model = open_model(baseline)
    pipe = model.baseline
    for text in (SPAM, HAM, "call call now now free free"):
        for target in LABELS:
            e = explain(model, [text], "coefficients", target=target)[0]
            margin = pipe.decision_function([text])[0] - pipe.named_steps["clf"].intercept_[0]
            assert np.isclose(sum(e.scores), margin if target == "spam" else -margin, atol=1e-9)
    assert explain(model, [SPAM], "auto")[0].method == "coefficients"


def test_integrated_gradients_add_up_to_the_change_from_the_reference(student):
    """Completeness (Sundararajan et al. 2017): the word scores sum to log p(class | text) - log p(class |
    reference), up to the path's discretisation."""
    import torch

    from pipeline.core.attribution import explain
    from pipeline.core.scoring import open_model

    model = open_model(student)
    e = explain(model, [SPAM], "integrated_gradients", steps=64)[0]
    enc = model.tokenizer(e.text, return_tensors="pt", return_special_tokens_mask=True)
    ref = torch.where(enc["special_tokens_mask"].bool(), enc["input_ids"], model.tokenizer.pad_token_id)
    with torch.no_grad():
        logp = [torch.log_softmax(model.model(input_ids=ids, attention_mask=enc["attention_mask"]).logits, -1)
                [0, LABELS.index(e.target)].item() for ids in (enc["input_ids"], ref)]
    assert abs(sum(e.scores) - (logp[0] - logp[1])) < 0.05 * max(1.0, abs(logp[0] - logp[1]))


def test_every_method_of_a_torch_model_explains_and_attention_leaves_the_model_as_it_was(student):
    from pipeline.core.attribution import available, explain
    from pipeline.core.scoring import open_model

    model = open_model(student)
    before = model.model.config._attn_implementation
    assert set(available(model)) == {"occlusion", "integrated_gradients", "gradient_x_input", "attention", "random"}
    assert explain(model, [SPAM], "auto", steps=8)[0].method == "occlusion"  # the most faithful measured
    for method in available(model):
        found = explain(model, [SPAM, HAM], method, steps=8)
        assert [len(e.scores) for e in found] == [len(SPAM.split()), len(HAM.split())]
        assert all(np.isfinite(e.scores).all() for e in found) and found[0].method == method
    assert model.model.config._attn_implementation == before


def test_words_named_by_occlusion_matter_more_than_random_words(exported, test_rows):
    from pipeline.core.attribution import explain
    from pipeline.core.faithfulness import paired, removal_scores
    from pipeline.core.scoring import open_model

    model = open_model(exported[0])
    texts = test_rows[0][:60]
    occ = removal_scores(model, explain(model, texts, "occlusion"))
    rnd = removal_scores(model, explain(model, texts, "random"))
    better = paired(occ["comprehensiveness"], rnd["comprehensiveness"])
    assert better["ci95"][0] > 0, better
    assert occ["sufficiency"].mean() < rnd["sufficiency"].mean()


def test_bad_requests_are_refused_with_the_reason(exported):
    from pipeline.core.attribution import explain
    from pipeline.core.explanation import AttributionError
    from pipeline.core.scoring import open_model

    model = open_model(exported[0])
    with pytest.raises(AttributionError, match="not available for a onnx model.*available: occlusion, random"):
        explain(model, [SPAM], "integrated_gradients")
    with pytest.raises(AttributionError, match="unknown class 'eggs'.*ham, spam"):
        explain(model, [SPAM], target="eggs")
    with pytest.raises(AttributionError, match="text 1: empty_text"):
        explain(model, [SPAM, "   "])


def test_explain_command_on_texts_and_on_a_file(exported, tmp_path, capsys):
    from pipeline.commands.explain import main

    main(["--model", str(exported[0]), "--text", SPAM, "--text", HAM, "--json"])
    got = json.loads(capsys.readouterr().out)
    assert [g["label"] for g in got] == ["spam", "ham"] and got[0]["method"] == "occlusion"
    assert [w["word"] for w in got[1]["words"]] == HAM.split()
    main(["--model", str(exported[0]), "--text", SPAM, "--class", "ham", "--top", "2"])
    assert capsys.readouterr().out.startswith("ham (p=")
    with pytest.raises(SystemExit):
        main(["--model", str(exported[0]), "--text", "  "])
    rows = [SPAM, "", HAM, None, "free entry in a weekly competition"]
    pd.DataFrame({"id": range(5), "text": rows}).to_csv(tmp_path / "in.csv", index=False)
    main(["--model", str(exported[0]), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet"),
          "--chunk-rows", "2"])
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["id"].astype(int).tolist() == list(range(5))
    assert out["status"].tolist() == ["ok", "empty_text", "ok", "empty_text", "ok"]
    words = json.loads(out.loc[0, "attributions"])
    assert [w["word"] for w in words] == SPAM.split() and out.loc[0, "prediction"] == "spam"
    assert out.loc[0, "top_words"].split(" (")[0] in SPAM.split() and pd.isna(out.loc[1, "target"])
    meta = json.loads((tmp_path / "out.parquet.meta.json").read_text())
    assert meta["rows"] == 5 and meta["status"] == {"ok": 3, "empty_text": 2}


def test_words_are_counted_across_texts_by_a_key_and_artefacts_are_named():
    from pipeline.core.explain_report import artefact, word_key

    assert [word_key(w) for w in ("Prize!", "'FREE'", "@bob:", "<b>", "...")] == ["prize", "free", "@bob", "<b>",
                                                                                   "..."]
    assert [artefact(k) for k in ("http://x.co", "www.win.com", "@bob", "<b>", "&amp;", "09061701461", "prize")] == \
        ["URL", "URL", "user handle", "markup", "markup", "number", None]


def _baseline_of(texts: list[str], labels: list[str], folder):
    from pipeline.core.modeling import BASELINE_FILE, save_baseline, tfidf_logreg
    from pipeline.core.params import CleanParams, as_dict

    model = tfidf_logreg("word", 2, 1, 10000, True, 10.0, None, 1000, 0).fit(texts, labels)
    folder.mkdir()
    save_baseline(model, folder / BASELINE_FILE)
    (folder / "lineage.json").write_text(json.dumps({"stage": "baseline", "label_names": LABELS,
                                                     "clean": as_dict(CleanParams())}))
    return folder


def test_the_shortcut_flag_fires_on_a_token_planted_in_one_class_and_not_without_it(raw_sms, tmp_path):
    """A shortcut made honestly: every spam row of a real SMS sample, training and test alike, ends with a token no
    ham row holds (as a signature or a leaked label would). A model that learns it decides spam on it; the check
    must name it, and must not name it on the same rows without the token."""
    from pipeline.core.attribution import explain
    from pipeline.core.explain_report import exclusive_words, shortcut_flags
    from pipeline.core.scoring import open_model

    rows = raw_sms.sample(n=1200, random_state=0)
    labels = [LABELS[int(s)] for s in rows["spam"]]
    planted = [t + " zqxj" if y == "spam" else t for t, y in zip(rows["text"], labels)]
    for texts, expect in ((planted, ["zqxj"]), (rows["text"].tolist(), [])):
        model = open_model(_baseline_of(texts[:1000], labels[:1000], tmp_path / f"b{len(expect)}"))
        found = explain(model, texts[1000:], "auto")
        flags = shortcut_flags(found, exclusive_words(texts[:1000], labels[:1000]), LABELS)
        assert [f["word"] for f in flags if f["word"] == "zqxj"] == expect, flags
        if expect:
            f = next(f for f in flags if f["word"] == "zqxj")
            assert f["class"] == "spam" and f["share"] >= 0.5 and "100% of the" in f["why"]

"""Per-entity attributions of a token model (pipeline/core/token_attribution.py) and `finetune explain` on one, with
a real CRF trained on the real WNUT-16 tweets and explained on held-out tweets."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.attribution import available, explain_each, read_words
from pipeline.core.explanation import AttributionError
from pipeline.core.faithfulness import entity_removal_scores as removal_scores
from pipeline.core.token_attribution import entity_probability, mask_word, word_probs

BINS = (0.01, 0.05, 0.1, 0.2, 0.5)


@pytest.fixture(scope="module")
def tweets(wnut16_split):
    return wnut16_split


@pytest.fixture(scope="module")
def crf(wnut16_crf):
    from pipeline.core.token_scoring import open_tagger

    return open_tagger(wnut16_crf)


@pytest.fixture(scope="module")
def texts(tweets, crf):
    """Held-out tweets in which the CRF finds at least one entity."""
    _, test = tweets
    raw = [" ".join(t) for t in test["tokens"]]
    found = crf.spans(raw)
    return [t for t, f in zip(raw, found) if f["entities"]][:60]


def test_a_words_score_is_the_entitys_drop_in_probability_with_that_word_masked(crf, texts):
    (first, *_), *_ = explain_each(crf, texts[:1])
    assert first.method == "occlusion" and first.entity["type"] == first.target
    served = {(e["start"], e["end"]): e["score"] for e in crf.spans(texts[:1])[0]["entities"]}
    assert first.probability == pytest.approx(served[(first.entity["start"], first.entity["end"])], abs=1e-5)
    assert texts[0][first.entity["start"]:first.entity["end"]] == first.entity["text"]
    words = list(first.words)
    for j in (first.at[0], len(words) - 1):
        masked = [*words[:j], mask_word(crf), *words[j + 1:]]
        (p,) = word_probs(crf, [masked], 32)
        assert first.scores[j] == pytest.approx(first.probability - entity_probability(p, first.at, first.tag_ids),
                                                abs=1e-6)


def test_occlusion_is_more_faithful_than_random_on_held_out_tweets(crf, texts):
    """ERASER's comprehensiveness per entity (its top-k% words masked), paired with random scores: the CI of the
    difference excludes 0. Entities found: ~60 tweets' worth."""
    from pipeline.core.faithfulness import paired

    occ = [e for row in explain_each(crf, texts) for e in row]
    rnd = [e for row in explain_each(crf, texts, "random") for e in row]
    assert len(occ) == len(rnd) >= 50
    a, b = removal_scores(crf, occ, BINS), removal_scores(crf, rnd, BINS)
    diff = paired(a["comprehensiveness"], b["comprehensiveness"])
    assert diff["ci95"][0] > 0, diff
    # sufficiency: keeping only the top words loses less of the entity than keeping random ones
    assert paired(b["sufficiency"], a["sufficiency"])["mean"] > 0


def test_class_keeps_one_entity_type_and_bad_requests_say_what_is_wrong(crf, texts):
    assert available(crf) == ("occlusion", "random")
    every = explain_each(crf, texts[:20])
    types = sorted({e.target for row in every for e in row})
    only = explain_each(crf, texts[:20], target=types[0])
    assert [[e.entity for e in row] for row in only] == [[e.entity for e in row if e.target == types[0]]
                                                        for row in every]
    with pytest.raises(AttributionError, match="unknown entity type 'spam'.*person"):
        explain_each(crf, texts[:1], target="spam")
    with pytest.raises(AttributionError, match="not available.*occlusion, random"):
        explain_each(crf, texts[:1], "integrated_gradients")
    with pytest.raises(AttributionError, match="text 1: empty_text"):
        explain_each(crf, [texts[0], "   "])
    assert read_words(crf, ["two words", "  ", 3]) == ([2, 0, 0], ["ok", "empty_text", "non_string_text"])
    assert explain_each(crf, ["nothing to see here"]) == [[]]


def test_finetune_explain_explains_each_entity_of_a_token_model(crf, texts, tmp_path, capsys):
    from pipeline.commands.explain import main

    main(["--model", str(crf.folder), "--text", texts[0], "--text", "nothing to see here", "--top", "2"])
    out = capsys.readouterr().out
    first = explain_each(crf, texts[:1])[0][0]
    assert f"{first.target} {first.entity['text']!r} [{first.entity['start']}:{first.entity['end']}]" in out
    assert "{" in out and "--text 2: no entity found" in out
    main(["--model", str(crf.folder), "--text", texts[0], "--json"])
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["text"] == texts[0] and doc["explanations"][0]["entity"] == first.entity
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in (texts[0], "  ", texts[1])))
    main(["--model", str(crf.folder), "--input", str(src), "--output", str(tmp_path / "out.parquet")])
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert got["status"].tolist() == ["ok", "empty_text", "ok"]
    assert got["n_entities"].tolist()[0] == len(explain_each(crf, texts[:1])[0]) and pd.isna(got["n_entities"][1])
    ents = json.loads(got["attributions"][0])
    assert ents[0]["entity"] == first.entity and np.allclose([w["score"] for w in ents[0]["words"]], first.scores,
                                                             atol=1e-6)
    assert first.entity["text"] in got["top_words"][0]


def test_the_report_flags_a_cue_planted_beside_one_entity_type_and_not_without_it(tweets, crf, tmp_path):
    """A shortcut made honestly: the word `PERSONCUE` inserted (tagged O) before every person entity of the real
    training and test tweets. A CRF trained on that leans on it; the report's context-only check names it for
    person, and on the unplanted tweets names nothing for person."""
    from pipeline.core.crf import CRF_FILE, train_crf
    from pipeline.core.tags import Span, from_spans, spans
    from pipeline.core.token_explain_report import explain_token_test
    from pipeline.core.token_scoring import open_tagger

    def plant(frame: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for words, tags in zip(frame["tokens"], frame["tags"]):
            words, found, moved = list(words), spans(list(tags)), []
            for k, s in enumerate(found):
                if s.type == "person":
                    words.insert(s.start + len(moved), "PERSONCUE")
                    moved.append(k)
                shift = sum(1 for m in moved if found[m].start <= s.start)
                found[k] = Span(s.start + shift, s.end + shift, s.type)
            rows.append({"tokens": words, "tags": from_spans(len(words), found)})
        out = pd.DataFrame(rows)
        out["label"] = "none"
        return out

    train, test = tweets
    planted_train, planted_test = plant(train), plant(test)
    d = tmp_path / "planted"
    d.mkdir()
    train_crf(planted_train["tokens"].tolist(), planted_train["tags"].tolist(), d / CRF_FILE)
    (d / "lineage.json").write_text((crf.folder / "lineage.json").read_text())
    planted = open_tagger(d)
    lines, rows, page = explain_token_test(planted, planted, planted_test, planted_train, 1000)
    flags = [x for x in lines if x.startswith("- **flag:")]
    assert any(x.startswith("- **flag: person** rests on `personcue`") for x in flags), "\n".join(lines)
    assert "Where the teacher's entities and the shipped student's differ (0 sentences" in "\n".join(lines)
    clean = explain_token_test(crf, crf, test.assign(label="none"), train.assign(label="none"), 1000)[0]
    assert not any(x.startswith("- **flag: person**") for x in clean), "\n".join(clean)
    assert {r["class"] for r in rows} <= {"person", "geo-loc", "company", "facility", "product", "musicartist",
                                          "movie", "sportsteam", "tvshow", "other"} and "PERSONCUE" in page


@pytest.fixture(scope="module")
def torch_tagger(tweets, crf, tmp_path_factory):
    """A 2-layer MiniLM token classifier with an untrained head, saved as distill saves one: enough for the
    arithmetic of integrated gradients, which holds for any model."""
    import torch

    from pipeline.core.metrics import label_config
    from pipeline.core.modeling import encoder_layers, load_token_classifier, load_tokenizer
    from pipeline.core.token_scoring import open_tagger
    from tests.conftest import MINILM

    torch.manual_seed(0)
    model = load_token_classifier(MINILM, "t", **label_config(crf.label_names))
    del encoder_layers(model)[2:]
    model.config.num_hidden_layers = 2
    d = tmp_path_factory.mktemp("token-student") / "student"
    model.save_pretrained(d, safe_serialization=True)
    load_tokenizer(MINILM, "t").save_pretrained(d)
    lineage = json.loads((crf.folder / "lineage.json").read_text())
    (d / "lineage.json").write_text(json.dumps({**lineage, "stage": "distill", "params": {"max_length": 64}}))
    return open_tagger(d)


def test_integrated_gradients_of_an_entity_sum_to_its_log_probability_above_the_reference(torch_tagger, tweets):
    """Completeness (Sundararajan et al.): the word scores add up to the entity's mean tag log-probability at the
    text less at the [PAD] reference; the text's side read through the pipeline's own path (word_logits)."""
    import torch

    from pipeline.core.metrics import label_index
    from pipeline.core.tags import spans
    from pipeline.core.token_attribution import integrated_gradients

    _, test = tweets
    rows = test[test["tags"].map(lambda t: any(x != "O" for x in t))].head(3)
    sentences, tags = [list(w) for w in rows["tokens"]], [list(t) for t in rows["tags"]]
    found = [spans(t) for t in tags]
    scores = integrated_gradients(torch_tagger, sentences, tags, found, [], {"batch_size": 8, "steps": 64})
    tok, net, index = torch_tagger.tokenizer, torch_tagger.model, label_index(torch_tagger.label_names)
    logits = torch_tagger.word_logits(sentences)
    for i, (sent, row) in enumerate(zip(sentences, found)):
        enc = tok([sent], is_split_into_words=True, return_special_tokens_mask=True, return_tensors="pt")
        ref = torch.where(enc["special_tokens_mask"].bool(), enc["input_ids"], tok.pad_token_id)
        with torch.no_grad():
            ref_logp = torch.log_softmax(net(input_ids=ref, attention_mask=enc["attention_mask"]).logits, -1)[0]
        first = {}
        for p, w in enumerate(enc.word_ids(0)):
            if w is not None:
                first.setdefault(w, p)
        for s, sc in zip(row, scores[i]):
            ids = [index[tags[i][w]] for w in range(s.start, s.end)]
            at_text = np.mean([torch.log_softmax(torch.tensor(logits[i][w]), -1)[k].item()
                               for w, k in zip(range(s.start, s.end), ids)])
            at_ref = np.mean([ref_logp[first[w], k].item() for w, k in zip(range(s.start, s.end), ids)])
            gap = at_text - at_ref
            assert len(sc) == len(sent) and sc.sum() == pytest.approx(gap, abs=0.05 * abs(gap) + 1e-3)
    assert available(torch_tagger) == ("occlusion", "integrated_gradients", "random")

"""The token task's stage cores (issue 33): clean's accounting, the audit on real tweets with planted errors, the
split's guarantees, entity error kinds, the word-level distillation loss and check's report on a token file."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from pipeline.core.params import Params, replace


@pytest.fixture(scope="module")
def token_params() -> Params:
    return replace(Params(), task="token")


@pytest.fixture(scope="module")
def tweets(wnut16_file):
    from pipeline.core.token_io import read_tokens

    return read_tokens(wnut16_file).frame


def _conll(tmp_path, sentences: list[list[tuple[str, str]]]):
    path = tmp_path / "s.conll"
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")
    return path


def test_clean_counts_every_sentence_and_token_and_drops_conflicting_taggings(tmp_path, token_params):
    from pipeline.core.token_clean import clean_metrics, clean_token_file

    s1 = [("Visit", "O"), ("Paris", "B-loc"), ("now", "O")]
    s2 = [("Visit", "O"), ("Paris", "O"), ("now", "O")]  # the same words tagged another way: both copies go
    s3 = [("Ann", "B-per"), ("Lee", "I-per"), ("in", "O"), ("Rome", "B-loc")]
    s4 = [("\u200b", "B-per"), ("Bob", "I-per"), ("&amp;", "O"), ("Rome", "B-loc")]  # a token normalised away
    sentences = [s1, s2, s3, s3, s4] + [[("Jo", "B-per"), ("in", "O"), (f"Town{i}", "B-loc")] for i in range(9)]
    result = clean_token_file(str(_conll(tmp_path, sentences)), token_params)
    m = clean_metrics(result)
    assert m["rows_in"] == 14 == m["rows_out"] + m["dropped_total"]
    assert m["dropped"] == {"duplicate_exact": 1, "label_conflict": 2}
    assert m["tokens_in"] == 3 + 3 + 4 + 4 + 4 + 27
    words_dropped = sum(len(t.split()) for t in result.dropped["text"])
    assert m["tokens_in"] == m["tokens_out"] + words_dropped + m["tokens_dropped"]["empty_token"]
    bob = result.kept[result.kept["text"] == "Bob & Rome"].iloc[0]  # the zero-width space is gone, &amp; decoded
    assert list(bob["tags"]) == ["B-per", "O", "B-loc"] and m["tag_repairs"] == {"continuation_at_start": 1}
    assert result.kept["id"].is_unique and set(result.kept["label"]) <= {"per", "loc", "O"}
    assert result.kept["raw_row"].min() >= 1  # the line of each sentence's first token


def test_clean_of_the_tweets_keeps_the_published_counts(wnut16_file, token_params):
    from pipeline.core.token_clean import clean_metrics, clean_token_file

    m = clean_metrics(clean_token_file(wnut16_file, token_params))
    assert (m["rows_in"], m["tokens_in"]) == (2394, 46469)
    assert m["rows_in"] == m["rows_out"] + m["dropped_total"] and m["dropped"]["label_conflict"] > 0
    assert sum(m["per_class"].values()) == m["rows_out"] and set(m["entities"]) >= {"person", "geo-loc"}


def test_a_stratum_too_small_to_split_is_an_error_naming_the_type(tmp_path, token_params):
    from pipeline.core.io import DataError
    from pipeline.core.token_clean import clean_token_file

    sentences = [[("Jo", "B-per"), (f"w{i}", "O")] for i in range(20)] + [[("Acme", "B-org"), ("x", "O")]]
    with pytest.raises(DataError, match="entity type 'org' has only 1 row"):
        clean_token_file(str(_conll(tmp_path, sentences)), token_params)


def test_token_audit_finds_planted_tag_errors(tweets):
    """Tag the word "the" as a person in 12 tweets: an out-of-fold CRF knows better, and cleanlab flags them."""
    from pipeline.core.params import AuditParams
    from pipeline.core.token_audit import audit_tokens
    from pipeline.core.token_clean import strata

    df = tweets.head(900).reset_index(drop=True).assign(id=lambda d: [f"s{i}" for i in range(len(d))])
    planted = []
    for i, (toks, tags) in enumerate(zip(df["tokens"], df["tags"])):
        j = next((k for k, (w, t) in enumerate(zip(toks, tags)) if w.lower() == "the" and t == "O"), None)
        if j is not None and len(planted) < 12:
            tags[j] = "B-person"
            planted.append((f"s{i}", j))
    df = df.assign(label=strata(df["tags"]), source_id=df["id"], origin="original")
    result = audit_tokens(df, AuditParams(folds=3, action="drop"), seed=0)
    found = set(zip(result.issues["id"], result.issues["token_index"]))
    assert len(found & set(planted)) >= 10, (len(found & set(planted)), len(result.issues))
    assert len(result.rows) + len(result.dropped) == len(df)
    assert set(result.dropped["id"]) == set(result.issues["id"])


def test_error_kinds_sort_each_miss_the_way_ner_people_read_them():
    from pipeline.core.token_evaluate import error_kinds

    gold = [["B-per", "I-per", "O", "B-loc", "O", "B-org", "O"]]
    pred = [["B-per", "O", "O", "B-org", "B-misc", "O", "O"]]
    assert error_kinds(gold, pred) == {"wrong_type": 1, "wrong_span": 1, "wrong_type_and_span": 0, "missed": 1,
                                       "spurious": 1}


def test_word_level_distillation_counts_only_the_positions_that_carry_a_word():
    import torch

    from pipeline.stages.distill import distillation_loss

    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    labels = torch.tensor([[-100, 0, 2, -100, -100], [-100, 1, -100, -100, -100]])
    keep = labels != -100
    flat = distillation_loss(s[keep], t[keep], labels[keep], 0.7, 2.0)
    assert torch.allclose(distillation_loss(s, t, labels, 0.7, 2.0), flat)
    t2 = t.clone()
    t2[~keep] = 99.0  # what padding and inner sub-words hold never counts
    assert torch.allclose(distillation_loss(s, t2, labels, 0.7, 2.0), flat)


def test_kd_collator_pads_the_teacher_targets_to_the_batch():
    from conftest import MINILM

    from pipeline.core.modeling import load_tokenizer
    from pipeline.core.token_training import KDCollator

    tok = load_tokenizer(MINILM, "m")
    feats = [{"input_ids": [101, 5, 102], "attention_mask": [1, 1, 1], "labels": [-100, 1, -100],
              "teacher_logits": [[0, 0], [1, 2], [0, 0]]},
             {"input_ids": [101, 5, 6, 7, 102], "attention_mask": [1] * 5, "labels": [-100, 0, 1, 0, -100],
              "teacher_logits": [[0, 0], [3, 4], [5, 6], [7, 8], [0, 0]]}]
    batch = KDCollator(tok)(feats)
    assert batch["teacher_logits"].shape == (2, 5, 2) and batch["labels"].shape == (2, 5)
    assert batch["teacher_logits"][0, 1].tolist() == [1, 2] and batch["teacher_logits"][0, 4].tolist() == [0, 0]
    assert batch["labels"][0].tolist() == [-100, 1, -100, -100, -100]


def test_split_of_sentences_is_hash_stable_and_shares_nothing(tweets, token_params):
    from pipeline.core.token_clean import strata
    from pipeline.stages.split import split

    ids = [f"s{i}" for i in range(len(tweets))]
    df = tweets.assign(id=ids, source_id=ids, origin="original", label=strata(tweets["tags"]))
    a = split(df, token_params.split, 42).splits
    b = split(df.iloc[::-1], token_params.split, 42).splits  # another order: the same splits
    grown = split(pd.concat([df, df.head(50).assign(id=lambda d: d["id"] + "x", source_id=lambda d: d["id"])]),
                  token_params.split, 42).splits  # more data: no sentence moves
    for name in a:
        assert a[name]["id"].tolist() == b[name]["id"].tolist()
        assert set(a[name]["id"]) <= set(grown[name]["id"])
    seen = Counter(i for part in a.values() for i in part["id"])
    assert max(seen.values()) == 1 and sum(seen.values()) == len(df)
    assert {t for part in ("val", "test") for t in a[part]["label"]} <= set(a["train"]["label"])
    assert np.isclose(len(a["test"]) / len(df), 0.1, atol=0.03)


def test_check_reports_a_token_file_in_its_own_terms(wnut16_file, tmp_path):
    import yaml

    from pipeline.commands.check import check
    from pipeline.core.params import as_dict

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**as_dict(Params()), "task": "token"}))
    rep = check(str(params), wnut16_file)
    assert not rep.errors, rep.errors
    text = "\n".join(rep.notes)
    assert "2394 sentences, 46469 tokens" in text and "person 4" in text and "overlapping windows" in text
    bad = tmp_path / "bad.conll"
    bad.write_text("Jo\tB-per\nin\tO\nRome\n", encoding="utf-8")
    rep = check(str(params), str(bad))
    assert any(f"{bad}:3" in e for e in rep.errors), rep.errors


def test_kfold_pools_token_folds_by_entity_f1(tmp_path):
    """Two folds of token predictions (entities per sentence, as evaluate writes them) pool into the entity F1 of
    all their sentences together, paired model against model."""
    from pipeline.commands.kfold import load_folds, pool
    from pipeline.core.entities import counts_from_text, entity_f1

    rng = np.random.default_rng(0)
    gold = [" ".join(f"{i}:{i + 1}:{t}" for i, t in enumerate(rng.choice(["per", "loc", "org"], size=3)))
            for _ in range(60)]
    noisy = lambda s, p: " ".join(e for e in s.split() if rng.random() > p)  # noqa: E731 - drops entities
    preds = {m: [noisy(g, p) for g in gold] for m, p in
             (("teacher", 0.1), ("student", 0.2), ("student_onnx", 0.2), ("baseline", 0.5))}
    paths = []
    for k, rows in enumerate((range(0, 30), range(30, 60))):
        table = pd.concat([pd.DataFrame({"model": m, "id": [f"s{i}" for i in rows], "raw_row": list(rows),
                                         "label": [gold[i] for i in rows], "prediction": [p[i] for i in rows],
                                         "confidence": 1.0}) for m, p in preds.items()])
        paths.append(tmp_path / f"fold{k}.parquet")
        table.to_parquet(paths[-1])
    result = pool(*load_folds(paths), n_resamples=200)
    assert result["metric"] == "entity F1" and result["rows"] == 60
    for m, p in preds.items():
        assert result["models"][m]["value"] == round(entity_f1(counts_from_text(gold, p)), 4)
    assert result["comparisons"]["teacher_vs_baseline"]["significant"]


def test_a_common_type_that_is_the_rarest_of_one_sentence_still_splits(tmp_path, token_params):
    """Found on the Turkish treebank's wiki half: VERB is in most sentences, but the rarest type of only one (a
    sentence of nouns and verbs). That is no reason to stop: its stratum moves to the next type, every stratum can
    be cut, and only a type held by too few sentences is an error."""
    from pipeline.core.token_clean import clean_token_file

    common = [[("a", "B-NOUN"), (f"b{i}", "B-VERB"), ("c", "B-ADJ")] for i in range(30)]
    result = clean_token_file(str(_conll(tmp_path, [*common, [("n", "B-NOUN"), ("v", "B-VERB")]])), token_params)
    sizes = result.kept["label"].value_counts()
    assert sizes.min() >= 3 and sizes.sum() == 31

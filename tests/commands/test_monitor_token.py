"""The prediction log and `monitor` for a token model (issue 33): entity spans logged per text, and the entity-type
mix, confidence and length checked against the test sentences, with a real CRF trained on the real WNUT-16 tweets."""
from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def crf(wnut16_split, tmp_path_factory):
    from pipeline.core.crf import CRF_FILE, train_crf
    from pipeline.core.params import CleanParams, as_dict
    from pipeline.core.tags import bio_labels
    from pipeline.core.token_scoring import open_tagger

    frame = pd.concat(wnut16_split).sort_index()  # every tweet once, in file order; split again below
    frame["text"] = frame["tokens"].map(" ".join)
    test = frame.iloc[::10].reset_index(drop=True)
    held = frame.iloc[5::10].reset_index(drop=True)  # unseen in training, like the test sentences
    train = frame.drop(frame.index[::10]).drop(frame.index[5::10]).reset_index(drop=True)
    d = tmp_path_factory.mktemp("crf-monitor") / "baseline"
    d.mkdir()
    train_crf(train["tokens"].tolist(), train["tags"].tolist(), d / CRF_FILE)
    (d / "lineage.json").write_text(json.dumps({"stage": "baseline", "label_names": bio_labels(train["tags"].tolist()),
                                                "clean": as_dict(CleanParams())}))
    return open_tagger(d), train, test, held


def logged(scorer, texts: list[str], folder) -> pd.DataFrame:
    from pipeline.core.predlog import PredictionLog, read_log

    plog = PredictionLog(folder, scorer.log_fields, scorer.log_schema(), scorer.hash, rotate_rows=100)
    for i in range(0, len(texts), 40):
        plog.log_request(f"r{i}", texts[i:i + 40], scorer.score(texts[i:i + 40]))
    plog.close()
    return read_log(folder)


def test_the_log_holds_each_texts_entity_spans_as_served(crf, tmp_path):
    scorer, _, test, _ = crf
    texts = [*test["text"].head(60), ""]
    log = logged(scorer, texts, tmp_path / "log")
    served = scorer.score(texts)
    assert len(log) == len(texts) and log["status"].tolist() == [s["status"] for s in served]
    for (_, row), s in zip(log.iterrows(), served):
        if s["status"] != "ok":
            assert pd.isna(row["entities"]) and pd.isna(row["confidence"])
            continue
        ents = json.loads(row["entities"])
        assert ents == s["entities"] and row["n_entities"] == len(ents)
        assert row["prediction"] == "|".join(e["type"] for e in ents)
        if ents:
            assert row["confidence"] == pytest.approx(sum(e["score"] for e in ents) / len(ents))
    assert not any(c.startswith("p_") for c in log.columns)  # a token log has no per-class probability columns


def test_monitor_sees_the_entity_type_mix_move_and_not_a_replay(crf, tmp_path):
    """A window of tweets that all hold a place (the mix shifts to geo-loc) fires the entity-type mix check; a window
    of held-out tweets, unseen in training like the test ones, does not."""
    from pipeline.core.monitoring import run_checks

    scorer, train, test, like = crf
    places = train[train["tags"].map(lambda t: "B-geo-loc" in t)]
    shifted = run_checks(scorer, test, logged(scorer, places["text"].tolist(), tmp_path / "a"), None, None, 0.01,
                         2000, 0)
    same = run_checks(scorer, test, logged(scorer, like["text"].tolist(), tmp_path / "b"), None, None, 0.01, 2000, 0)
    mix = {c["name"]: c for c in shifted["checks"]}["predicted_class_mix"]
    assert mix["drift"] and "predicted_class_mix" in shifted["fired"], mix
    same_mix = {c["name"]: c for c in same["checks"]}["predicted_class_mix"]
    assert not same_mix["drift"]
    counts = shifted["plots"]["predicted_class_mix"]
    assert counts[1]["geo-loc"] / sum(counts[1].values()) > counts[0]["geo-loc"] / sum(counts[0].values())


def test_finetune_monitor_reports_on_a_token_models_log(crf, tmp_path):
    """`finetune predict --log-dir` on a token model, then `finetune monitor` over that log."""
    from pipeline.commands.monitor import main
    from pipeline.commands.predict import main as predict
    from pipeline.core.predlog import read_log

    scorer, train, test, _ = crf
    train[["text"]].head(300).to_csv(tmp_path / "new.csv", index=False)
    predict(["--model", str(scorer.folder), "--input", str(tmp_path / "new.csv"), "--output",
             str(tmp_path / "out.parquet"), "--log-dir", str(tmp_path / "log")])
    out = pd.read_parquet(tmp_path / "out.parquet")
    log = read_log(tmp_path / "log")
    assert len(log) == len(out) == 300 and log["entities"].tolist() == out["entities"].tolist()
    ref = tmp_path / "test.parquet"
    test[["text"]].to_parquet(ref)
    with pytest.raises(SystemExit) as done:
        main(["--model", str(scorer.folder), "--current", str(tmp_path / "log"), "--reference", str(ref),
              "--out", str(tmp_path / "report")])
    assert done.value.code in (0, 3)
    report = json.loads((tmp_path / "report" / "monitor.json").read_text())
    names = {c["name"]: c for c in report["checks"]}
    assert {"text_length", "script_mix", "predicted_class_mix", "confidence"} <= set(names)
    assert names["rare_tokens"]["skipped"] and names["embedding"]["skipped"]  # a CRF has no tokenizer or encoder
    assert "predicted_class_mix" in (tmp_path / "report" / "report.md").read_text()


def test_to_label_ranks_sentences_by_the_weakest_word_and_by_the_teachers_disagreement(crf, tmp_path):
    """--to-label for a token model: unseen sentences, taken in turn from the least confident (the word the model
    is least sure of) and from where a second CRF (trained on fewer sentences, as a stand-in teacher) tags words
    differently; each row's spans, as JSON, slice its text for a person to correct."""
    from pipeline.core.crf import CRF_FILE, train_crf
    from pipeline.core.monitoring import LABEL_COLUMNS, rows_to_label
    from pipeline.core.token_scoring import open_tagger

    scorer, train, _, held = crf
    d = tmp_path / "small"
    d.mkdir()
    train_crf(train["tokens"].head(400).tolist(), train["tags"].head(400).tolist(), d / CRF_FILE)
    (d / "lineage.json").write_text((scorer.folder / "lineage.json").read_text())
    window = pd.concat([held[["text"]], train[["text"]].head(50)], ignore_index=True)  # 50 already trained on
    picked = rows_to_label(scorer, window, train["text"].tolist(), [], None, open_tagger(d), 12, 1000, 0)
    assert list(picked.columns) == LABEL_COLUMNS and len(picked) == 12
    assert picked["reason"].tolist()[:4] == ["least_confident", "teacher_disagrees"] * 2
    assert not set(picked["text"]) & set(train["text"])
    cols, rankings = scorer.label_rankings(held["text"].tolist())
    assert picked["confidence"].iloc[0] == pytest.approx(min(cols["confidence"]), abs=1e-4)
    for _, row in picked.iterrows():
        for e in json.loads(row["prediction"]):
            assert row["text"][e["start"]:e["end"]] == e["text"]
    assert (picked[picked["reason"] == "teacher_disagrees"]["score"] > 0).all()

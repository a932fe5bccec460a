"""Span-labelled rows for the token task (issue 33): `ingest` takes a text and its entities in the forms people have
(what `monitor --to-label` writes, corrected in place; Doccano's `[start, end, label]`), checks each naming its row,
and `clean` reads them after the raw file as sentences cut by the serving pre-tokeniser, with negative raw rows."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from pipeline.core.feedback import FEEDBACK_COLUMNS
from pipeline.core.io import DataError
from pipeline.core.params import Params, replace

PARAMS = replace(Params(), task="token")
KNOWN = ["geo-loc", "person"]
TEXT = "@ann_lee loved Paris &amp; Rome 😀 https://t.co/x"


def to_label() -> pd.DataFrame:
    corrected = [{"start": 15, "end": 20, "type": "geo-loc", "text": "Paris", "score": 0.7},
                 {"start": 27, "end": 31, "type": "geo-loc", "text": "Rome", "score": 0.4}]
    return pd.DataFrame({
        "text": [TEXT, "Ann Lee flew home", "nothing to see here", "not labelled yet"],
        "label": [json.dumps(corrected, ensure_ascii=False), '[[0, 7, "person"]]', "[]", ""],
        "request_id": ["r1", "r2", "r3", "r4"], "model_md5": ["b" * 32] * 4})


def test_ingest_stores_each_texts_entities_checked_with_provenance():
    from pipeline.commands.ingest import ingest
    from pipeline.core.tasks import TokenTask

    task = TokenTask(PARAMS)
    out, counts = ingest(to_label(), "to_label.csv", pd.DataFrame(columns=FEEDBACK_COLUMNS), KNOWN, set(),
                         PARAMS.clean, task)
    assert counts == {"rows_in": 4, "unlabelled": 1, "already_in_feedback": 0, "already_in_raw_data": 0, "added": 3}
    assert out["label"].tolist() == ['[[15, 20, "geo-loc"], [27, 31, "geo-loc"]]', '[[0, 7, "person"]]', "[]"]
    assert out["source"].tolist() == ["to_label.csv:1", "to_label.csv:2", "to_label.csv:3"]
    # The same text spaced or cased otherwise is the same sentence to clean: skipped, counted; so is a raw sentence.
    again = to_label().assign(text=lambda d: d["text"].str.upper().str.replace(" ", "  "))
    again["label"] = ["[]"] * 3 + [""]
    _, counts = ingest(again, "x.csv", out, KNOWN, set(), PARAMS.clean, task)
    assert counts["already_in_feedback"] == 3 and counts["added"] == 0
    raw = {task.feedback_key("Ann Lee flew home", PARAMS.clean)}
    _, counts = ingest(to_label(), "x.csv", pd.DataFrame(columns=FEEDBACK_COLUMNS), KNOWN, raw, PARAMS.clean, task)
    assert counts["already_in_raw_data"] == 1 and counts["added"] == 2


@pytest.mark.parametrize("label, message", [
    ('[[0, 7, "company"]]', r"data row 2: entity \[0, 7, 'company'\] has a type not among the data's"),
    ('[[0, 7, "person"], [4, 12, "person"]]', "data row 2: entities .* overlap"),
    ('[[0, 70, "person"]]', r"data row 2: entity \[0, 70, 'person'\] is outside the text's 17 characters"),
    ("[[0, 7, person]]", "data row 2: label is not JSON entities"),
    ('{"start": 0}', "data row 2: entities must be a list"),
    ('[[1, 3, "person"]]', None),  # inside a word: widened to the word, as clean counts it
])
def test_ingest_refuses_a_bad_entity_naming_the_row(label, message):
    from pipeline.commands.ingest import ingest
    from pipeline.core.tasks import TokenTask

    bad = to_label()
    bad.loc[1, "label"] = label
    run = lambda: ingest(bad, "to_label.csv", pd.DataFrame(columns=FEEDBACK_COLUMNS), KNOWN, set(),  # noqa: E731
                         PARAMS.clean, TokenTask(PARAMS))
    if message is None:
        assert run()[1]["added"] == 3
        return
    with pytest.raises(DataError, match=message):
        run()


def test_clean_reads_span_rows_after_the_raw_sentences(tmp_path, wnut16_file):
    from pipeline.core.token_clean import clean_metrics, clean_token_file

    alone = clean_token_file(wnut16_file, PARAMS)
    from pipeline.core.token_io import words

    # A kept raw tweet with an entity again, its words tagged otherwise: a conflict, both copies dropped.
    first = alone.kept[alone.kept["tags"].map(lambda t: "B-person" in list(t)) & alone.kept.apply(
        lambda r: [w for w, _, _ in words(r["text"])] == list(r["tokens"]), axis=1)].iloc[0]
    fb = pd.DataFrame({"text": [TEXT, "Ann Lee flew home", first["text"]],
                       "label": ['[[15, 20, "geo-loc"], [27, 31, "geo-loc"]]', '[[2, 7, "person"]]', "[]"]})
    path = tmp_path / "labelled.csv"
    fb.to_csv(path, index=False)
    both = clean_token_file(wnut16_file, PARAMS, str(path))
    m = clean_metrics(both)
    assert m["feedback_rows_in"] == 3 and m["feedback_rows_kept"] == 2
    assert m["rows_in"] == m["rows_out"] + m["dropped_total"] == clean_metrics(alone)["rows_in"] + 3
    new = both.kept[both.kept["raw_row"] < 0].set_index("raw_row")
    assert list(new.loc[-1, "tokens"]) == ["@ann_lee", "loved", "Paris", "&", "Rome", "😀", "https://t.co/x"]
    assert list(new.loc[-1, "tags"]) == ["O", "O", "B-geo-loc", "O", "B-geo-loc", "O", "O"]
    assert list(new.loc[-2, "tags"]) == ["B-person", "I-person", "O", "O"]  # "nn Lee" widened to "Ann Lee"
    assert m["tag_repairs"].get("span_widened_to_token_boundaries") == 1
    conflicts = lambda r: int((r.dropped["reason"] == "label_conflict").sum())  # noqa: E731
    assert conflicts(both) == conflicts(alone) + 2 and first["id"] not in set(both.kept["id"])


def test_cli_ingests_span_rows_for_a_token_project_and_names_a_bad_row(tmp_path, wnut16_file):
    from pipeline.core.io import write_table
    from pipeline.core.token_clean import clean_token_file

    dvc_yaml = (ROOT / "dvc.yaml").read_text().replace("raw: data/raw/sms-spam.csv", "raw: data/raw/tweets.conll")
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "task": "token"}, sort_keys=False))
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copy(wnut16_file, tmp_path / "data" / "raw" / "tweets.conll")
    shutil.copytree(ROOT / "data" / "feedback", tmp_path / "data" / "feedback")
    (tmp_path / "data" / "interim").mkdir()
    write_table(clean_token_file(wnut16_file, PARAMS).kept, tmp_path / "data" / "interim" / "clean.parquet")
    to_label().to_csv(tmp_path / "to_label.csv", index=False)

    def ingest(path):
        return subprocess.run([sys.executable, "-m", "pipeline.commands.ingest", str(path), "--params",
                               str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True)

    ok = ingest(tmp_path / "to_label.csv")
    assert ok.returncode == 0 and "3 row(s) added" in ok.stderr, ok.stderr
    feedback = tmp_path / "data" / "feedback" / "labelled.csv"
    assert pd.read_csv(feedback)["request_id"].tolist() == ["r1", "r2", "r3"]
    to_label().assign(label=["[]", '[[0, 3, "cat"]]', "[]", ""], text=lambda d: "new " + d["text"]).to_csv(
        tmp_path / "bad.csv", index=False)
    bad = ingest(tmp_path / "bad.csv")
    assert bad.returncode == 1 and "bad.csv: data row 2: entity [0, 3, 'cat'] has a type" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and len(pd.read_csv(feedback)) == 3  # untouched

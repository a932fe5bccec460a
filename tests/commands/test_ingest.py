"""Issue 22: labelled rows come back through `ingest` into the feedback file, validated like clean's input, with
their provenance, and `clean` reads them after the raw file (negative raw_row: a row of the feedback file)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT

from pipeline.core.io import DataError
from pipeline.core.params import load_params
from pipeline.core.tasks import SequenceTask

CLEAN = load_params(ROOT / "params.yaml").clean
SEQ = SequenceTask()


def labelled_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "text": ["Your parcel is waiting, confirm delivery at www.example.com now", "see you at the match tonight",
                 "not labelled yet", "  see you at the   match tonight "],
        "label": ["spam", "ham", None, "ham"], "request_id": ["r1", "r2", "r3", "r4"],
        "time": ["2026-11-30T01:00:00+00:00"] * 4, "model_md5": ["a" * 32] * 4, "rank": [1, 2, 3, 4]})


def test_ingest_appends_labelled_rows_with_provenance_and_counts_the_rest():
    from pipeline.commands.ingest import ingest
    from pipeline.core.feedback import FEEDBACK_COLUMNS

    empty = pd.DataFrame(columns=FEEDBACK_COLUMNS)
    out, counts = ingest(labelled_rows(), "to_label.csv", empty, ["ham", "spam"], set(), CLEAN, SEQ)
    assert counts == {"rows_in": 4, "unlabelled": 1, "already_in_feedback": 1, "already_in_raw_data": 0, "added": 2}
    assert list(out.columns) == FEEDBACK_COLUMNS
    assert out["request_id"].tolist() == ["r1", "r2"] and out["source"].tolist() == ["to_label.csv:1",
                                                                                       "to_label.csv:2"]
    assert out["model_md5"].eq("a" * 32).all() and out["ingested_at"].notna().all()
    # A second ingest of the same file adds nothing; a row whose text is a raw row is skipped and counted.
    again, counts = ingest(labelled_rows(), "to_label.csv", out, ["ham", "spam"], set(), CLEAN, SEQ)
    assert counts["added"] == 0 and counts["already_in_feedback"] == 3 and len(again) == 2
    from pipeline.core.text import dedup_key

    _, counts = ingest(labelled_rows(), "x.csv", empty, ["ham", "spam"], {dedup_key("see you at the match tonight")},
                       CLEAN, SEQ)
    assert counts["already_in_raw_data"] == 2 and counts["added"] == 1


@pytest.mark.parametrize("change, message", [
    ({"label": ["spam", "maybe", None, "ham"]}, "data row 2 has label 'maybe', not one of the data's classes"),
    ({"text": ["", "see you", "x", "y"]}, "data row 1 has a label but no text"),
])
def test_ingest_refuses_a_bad_row_naming_it(change, message):
    from pipeline.commands.ingest import ingest
    from pipeline.core.feedback import FEEDBACK_COLUMNS

    bad = labelled_rows().assign(**change)
    with pytest.raises(DataError, match=message):
        ingest(bad, "to_label.csv", pd.DataFrame(columns=FEEDBACK_COLUMNS), ["ham", "spam"], set(), CLEAN, SEQ)


def test_clean_reads_the_feedback_rows_after_the_raw_file(tmp_path, sms_slice):
    from pipeline.stages.clean import clean_file, stage_metrics

    raw = tmp_path / "raw.csv"
    sms_slice.to_csv(raw, index=False)
    params = load_params(ROOT / "params.yaml")
    alone = clean_file(str(raw), params)
    fb = tmp_path / "labelled.csv"
    pd.DataFrame({"text": ["Claim your parcel fee now at www.example.com", sms_slice["text"].iloc[0]],
                  "label": ["spam", "spam"], "request_id": ["r1", "r2"]}).to_csv(fb, index=False)
    both = clean_file(str(raw), params, str(fb))
    # The raw rows keep their ids and rows (but the one the feedback contradicts); the feedback rows follow.
    contradicted = alone.kept["raw_row"] == alone.kept["raw_row"].min()
    assert both.kept[both.kept["raw_row"] > 0].reset_index(drop=True).equals(
        alone.kept[~contradicted].reset_index(drop=True))
    new = both.kept[both.kept["raw_row"] < 0]
    assert new["raw_row"].tolist() == [-1] and new["label"].tolist() == ["spam"]
    # A feedback text equal to a raw row with another label is a conflict: both copies dropped, counted.
    assert (both.dropped["reason"] == "label_conflict").sum() == 2
    m = stage_metrics(both)
    assert m["feedback_rows_in"] == 2 and m["feedback_rows_kept"] == 1
    assert m["rows_in"] == m["rows_out"] + sum(m["dropped"].values())


def test_cli_ingests_into_dvc_yamls_feedback_file_and_names_a_bad_file(tmp_path, sms_slice):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copytree(ROOT / "data" / "feedback", tmp_path / "data" / "feedback")
    sms_slice.to_csv(tmp_path / "data" / "raw" / "sms-spam.csv", index=False)
    labelled_rows().to_csv(tmp_path / "to_label.csv", index=False)

    def ingest(path):
        return subprocess.run([sys.executable, "-m", "pipeline.commands.ingest", str(path), "--params",
                               str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True)

    ok = ingest(tmp_path / "to_label.csv")
    assert ok.returncode == 0, ok.stderr
    assert "2 row(s) added" in ok.stderr and "unlabelled 1" in ok.stderr
    assert pd.read_csv(tmp_path / "data" / "feedback" / "labelled.csv")["request_id"].tolist() == ["r1", "r2"]
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9 au lait,ham\n".encode("latin-1"))
    bad = ingest(tmp_path / "latin1.csv")
    assert bad.returncode == 1 and "latin1.csv: not valid UTF-8" in bad.stderr and "Traceback" not in bad.stderr
    assert len(pd.read_csv(tmp_path / "data" / "feedback" / "labelled.csv")) == 2  # untouched

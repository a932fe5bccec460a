"""Issue 22: `monitor` is silent on traffic drawn like the test rows (false alarms counted over repeated draws) and
fires on a real shift; it reads a prediction log (with or without text) or a file; its exit status says drift."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

pytestmark = pytest.mark.model  # loads real transformer models


@pytest.fixture(scope="module")
def pools(raw_sms, sms_slice):
    """Real SMS rows the tiny student never saw, normalised as `clean` writes them, in three disjoint parts:
    training rows (for the rare-token counts), the reference (as the test split), and a pool of unseen traffic
    from the same distribution."""
    from pipeline.core.params import CleanParams
    from pipeline.core.text import normalise_text

    seen = set(sms_slice["text"])
    rows = raw_sms[~raw_sms["text"].isin(seen)].copy()
    rows["text"] = [normalise_text(t, CleanParams()) for t in rows["text"]]
    rows = rows[rows["text"].str.len() > 0].drop_duplicates("text").sample(frac=1.0, random_state=0)
    rows = rows.assign(label=np.where(rows["spam"] == "1", "spam", "ham"))[["text", "label"]].reset_index(drop=True)
    return rows.iloc[:1000], rows.iloc[1000:1400].reset_index(drop=True), rows.iloc[1400:].reset_index(drop=True)


@pytest.fixture(scope="module")
def scorer(student):
    from pipeline.core.scoring import open_model

    return open_model(student)


def check(scorer, student, pools, current, memo, alpha=0.05, **kw):
    from pipeline.core.monitoring import run_checks

    train, ref, _ = pools
    return run_checks(scorer, ref, current, train["text"].tolist(), student, alpha=alpha, max_rows=2000, seed=0,
                      embed_rows=400, memo=memo, **kw)


def test_silent_on_traffic_drawn_like_the_test_rows(scorer, student, pools):
    """Ten windows of 120 unseen rows from the reference's distribution, at alpha 0.05 over all checks: the
    expected number of alarms is at most 0.5; more than 2 would mean the tests are not calibrated."""
    _, _, pool = pools
    memo: dict = {}
    alarms, fired = 0, []
    for k in range(10):
        window = pool.sample(120, random_state=k)
        r = check(scorer, student, pools, window, memo)
        assert r["checks_run"] == 6 and r["counts"]["reference_rows_also_in_current"] == 0
        alarms += r["drift"]
        fired += r["fired"]
    assert alarms <= 2, fired


def test_a_replay_of_test_rows_is_compared_with_the_other_test_rows(scorer, student, pools):
    _, ref, _ = pools
    r = check(scorer, student, pools, ref.sample(100, random_state=1), {})
    assert r["counts"]["reference_rows_also_in_current"] == 100
    assert r["counts"]["reference_rows_tested"] == len(ref) - 100
    assert not r["drift"], r["fired"]


def test_fires_on_a_real_shift_in_the_class_mix(scorer, student, pools):
    """A campaign: 70% of the messages are spam (13% in the test rows). Real rows, a real kind of shift."""
    _, _, pool = pools
    window = pd.concat([pool[pool["label"] == "spam"].head(70), pool[pool["label"] == "ham"].head(30)])
    r = check(scorer, student, pools, window, {}, alpha=0.01)
    assert r["drift"] and "predicted_class_mix" in r["fired"]
    mix = next(c for c in r["checks"] if c["name"] == "predicted_class_mix")
    assert mix["effect"]["current_share"]["spam"] > 0.4 > mix["effect"]["reference_share"]["spam"]


def test_reads_a_prediction_log_without_text(scorer, student, pools, tmp_path):
    from pipeline.core.predlog import PredictionLog, read_log

    _, _, pool = pools
    texts = pool["text"].head(150).tolist()
    plog = PredictionLog(tmp_path / "log", scorer.log_fields, scorer.log_schema(), scorer.hash, log_text=False,
                         rotate_rows=50)
    plog.log_request("req-1", texts, scorer.score(texts))
    plog.close()
    logged = read_log(tmp_path / "log")
    assert len(logged) == 150 and logged["text"].isna().all()
    r = check(scorer, student, pools, logged, {})
    by_name = {c["name"]: c for c in r["checks"]}
    assert {n for n, c in by_name.items() if c["skipped"]} == {"rare_tokens", "script_mix", "embedding"}
    assert by_name["text_length"]["p_value"] is not None and by_name["confidence"]["p_value"] is not None
    assert not r["drift"], r["fired"]


def test_rows_to_label_take_turns_skip_training_rows_and_duplicates(scorer, student, exported, pools):
    from pipeline.core.monitoring import LABEL_COLUMNS, rows_to_label
    from pipeline.core.scoring import open_model

    train, ref, pool = pools
    window = pd.concat([pool.head(60), pool.head(10), train.head(15)]).assign(request_id="r", time="t")
    picked = rows_to_label(scorer, window, train["text"].tolist(), ref["text"].tolist(), student,
                           open_model(exported[0]), n=30, max_candidates=1000, seed=0)
    assert list(picked.columns) == LABEL_COLUMNS and len(picked) == 30
    assert picked["text"].is_unique and not set(picked["text"]) & set(train["text"])
    assert picked["reason"].tolist()[:3] == ["least_confident", "teacher_disagrees", "novel"]
    assert (picked["label"] == "").all() and picked["request_id"].eq("r").all()
    least = picked[picked["reason"] == "least_confident"]["confidence"]
    assert least.is_monotonic_increasing  # the least confident first
    # Without a teacher or an embedder, the least confident rows only; never more rows than candidates.
    alone = rows_to_label(scorer, pool.head(20), [], [], None, None, n=50, max_candidates=1000, seed=0)
    assert len(alone) == 20 and set(alone["reason"]) == {"least_confident"}


def run_monitor(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.commands.monitor", *args], capture_output=True,
                          text=True, cwd=cwd, env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
                                                   "PATH": "/usr/bin:/bin"})


def test_cli_on_an_onnx_model_exit_status_report_and_errors(student, exported, pools, tmp_path):
    """The ONNX export scores; its transformers sibling (models/student for models/student-onnx) embeds."""
    train, ref, pool = pools
    models = tmp_path / "models"
    shutil.copytree(student, models / "student")
    shutil.copytree(exported[0], models / "student-onnx")
    ref.to_parquet(tmp_path / "test.parquet")
    train.to_parquet(tmp_path / "train.parquet")
    same = pool.head(200).copy()
    same.loc[0, "text"] = None  # an empty cell is an unscorable row, not a log without text
    same.to_csv(tmp_path / "same.csv", index=False)
    shifted = pd.concat([pool[pool["label"] == "spam"].head(80), pool[pool["label"] == "ham"].head(20)])
    shifted.rename(columns={"text": "message"}).to_csv(tmp_path / "shifted.csv", index=False)
    common = ["--model", str(models / "student-onnx"), "--reference", str(tmp_path / "test.parquet"),
              "--train", str(tmp_path / "train.parquet")]

    same = run_monitor(*common, "--current", str(tmp_path / "same.csv"), "--out", str(tmp_path / "r1"), cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    checked = json.loads((tmp_path / "r1" / "monitor.json").read_text())
    assert checked["checks_run"] == 6 and checked["counts"]["current_rows_tested"] == 199
    shift = run_monitor(*common, "--current", str(tmp_path / "shifted.csv"), "--text-column", "message", "--json",
                        "--to-label", "5", "--out", str(tmp_path / "r2"), cwd=tmp_path)
    assert shift.returncode == 3, shift.stderr[-2000:]
    report = json.loads(shift.stdout)
    assert report["drift"] and report["embedder"] == str(models / "student") and report["model_md5"]
    assert {c["name"] for c in report["checks"]} == {"text_length", "rare_tokens", "script_mix", "embedding",
                                                     "predicted_class_mix", "confidence"}
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "**DRIFT**" in md and "predicted_class_mix" in md
    assert (tmp_path / "r2" / "confidence.png").stat().st_size > 1000
    to_label = pd.read_csv(tmp_path / "r2" / "to_label.csv")
    assert len(to_label) == 5 and set(to_label["reason"]) == {"least_confident", "novel"}  # no teacher here

    bad = run_monitor(*common, "--current", str(tmp_path / "shifted.csv"), "--out", str(tmp_path / "r3"),
                      cwd=tmp_path)
    assert bad.returncode == 1 and "shifted.csv" in bad.stderr and "--text-column" in bad.stderr
    assert not (tmp_path / "r3" / "monitor.json").exists()

"""`check` lists every data and params problem at once (issue 9 items 12 and 18); clean runs the data checks."""
from __future__ import annotations

import subprocess
import sys

import yaml
from conftest import ROOT

from pipeline.commands.check import check


def write_params(tmp_path, **sections):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_repository_defaults_have_no_problem():
    rep = check(str(ROOT / "params.yaml"), str(ROOT / "data/raw/sms-spam.csv"))
    assert rep.errors == [] and any("737 row(s) restored" in n for n in rep.notes)


def test_every_problem_is_listed_in_one_run(tmp_path):
    raw = tmp_path / "reviews.csv"
    raw.write_text("text,label\ngood film,pos\nbad film,\nawful film,neg\nfine film,meh\n" +
                   "".join(f"film number {i},pos\n" for i in range(20)))
    params = write_params(tmp_path, clean={"label_column": "label", "label_names": {},
                                           "allowed_labels": ["pos", "neg"]},
                          train={"learning_rat": 0.1, "epochs": -1}, split={"method": "random"},
                          distill={"layers": [0, 9]})
    rep = check(str(params), str(raw))
    text = "\n".join(rep.errors)
    for fragment in ["train.learning_rat: unknown key", "train.epochs: expected a number > 0",
                     "split.method: expected one of", "column 'label' is empty in 1 row(s), first at data row(s) [2]",
                     "label(s) ['meh'] not in clean.allowed_labels", "distill.layers: [0, 9] names layer 9"]:
        assert fragment in text, (fragment, text)
    proc = subprocess.run([sys.executable, "-m", "pipeline.commands.check", "--params", str(params), "--raw", str(raw)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout.startswith("6 error(s)"), proc.stdout + proc.stderr


def test_a_hidden_state_term_needs_a_student_as_wide_as_the_teacher(tmp_path):
    from transformers import BertConfig

    narrow = tmp_path / "narrow"
    BertConfig(hidden_size=192, num_attention_heads=6, intermediate_size=384).save_pretrained(narrow)
    raw = str(ROOT / "data/raw/sms-spam.csv")
    own = {"student": str(narrow), "try_first": []}
    rep = check(str(write_params(tmp_path, distill={**own, "hidden_weight": 1.0})), raw)
    assert any("distill.hidden_weight: 1 compares hidden states, but distill.student" in e and "hidden size 192" in e
               and "384" in e for e in rep.errors), rep.errors
    assert check(str(write_params(tmp_path, distill={**own, "hidden_weight": 0.0})), raw).errors == []
    # A smaller-first entry is checked as its own student, named by its key.
    rep = check(str(write_params(tmp_path, distill={**own, "try_first": [{"hidden_weight": 0.5}]})), raw)
    assert any("distill.try_first[0].hidden_weight: 0.5 compares hidden states" in e for e in rep.errors), rep.errors
    # The default try_first truncates the teacher: with a student of one's own the fix is named.
    rep = check(str(write_params(tmp_path, distill={"student": str(narrow)})), raw)
    assert any("distill.try_first[0].layers: only for a truncated teacher" in e and "try_first to []" in e
               for e in rep.errors), rep.errors


def test_every_student_tried_is_checked_against_the_teacher(tmp_path):
    raw = str(ROOT / "data/raw/sms-spam.csv")
    rep = check(str(write_params(tmp_path, distill={"try_first": [{"layers": [3]}, {"layers": [6]}]})), raw)
    assert rep.errors == ["distill.try_first[1].layers: [6] names layer 6, but the teacher "
                          "(sentence-transformers/all-MiniLM-L6-v2) has 6 layers (0..5)"], rep.errors


def test_label_names_that_map_nothing_or_rename_another_files_classes(tmp_path):
    raw = tmp_path / "tweets.csv"
    raw.write_text("text,sentiment\n" + "".join(f"tweet {i},{['positive', 'negative'][i % 2]}\n" for i in range(30)))
    params = write_params(tmp_path, clean={"label_column": "sentiment"})  # still the SMS {0: ham, 1: spam}
    assert any("clean.label_names: maps ['0', '1'] but the labels" in e for e in check(str(params), str(raw)).errors)
    ints = tmp_path / "reviews.csv"
    ints.write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(30)))
    params = write_params(tmp_path, clean={"label_column": "label"})
    assert any("the bundled SMS names" in e and "confirm_label_names" in e
               for e in check(str(params), str(ints)).errors)
    # A user whose 0/1 labels really are ham/spam says so, and the guard stands down.
    params = write_params(tmp_path, clean={"label_column": "label", "confirm_label_names": True})
    assert not any("label_names" in e for e in check(str(params), str(ints)).errors)


def test_a_class_that_shrank_in_clean_says_how_and_why(tmp_path):
    raw = tmp_path / "news.csv"
    long = "a long article " * 20
    rows = [f"short item {i},sport" for i in range(20)] + [f"{long}{i},tech" for i in range(10)] + ["brief,tech"]
    raw.write_text("text,label\n" + "\n".join(rows) + "\n")
    params = write_params(tmp_path, clean={"label_column": "label", "label_names": {}, "max_chars": 100})
    errors = check(str(params), str(raw)).errors
    assert any("class 'tech' has only 1 row(s) left of 11 (dropped: too_long 10)" in e and "clean.max_chars" in e
               for e in errors), errors


def test_clean_fails_on_all_problems_at_once(tmp_path):
    raw = tmp_path / "reviews.csv"
    raw.write_text("text,label\ngood film,pos\nbad film,\nfine film,meh\n")
    params = write_params(tmp_path, clean={"label_column": "label", "label_names": {},
                                           "allowed_labels": ["pos", "neg"]})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.stages.clean", "--params", str(params), "--input", str(raw),
                           "--output", str(out / "c.parquet"), "--dropped", str(out / "d.parquet"),
                           "--metrics", str(out / "m.json")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "2 problem(s)" in proc.stderr and "is empty in 1 row(s)" in proc.stderr and "['meh']" in proc.stderr
    assert not out.exists()  # nothing written


def test_the_cost_estimate_plans_what_the_stages_plan_and_times_it_on_this_machine(sms_slice, tmp_path):
    """The plan is the stages' own arithmetic (resolve_epochs on the rows an epoch holds), the time a measured probe
    of real training steps; each student's step is the teacher's scaled by its share of the arithmetic."""
    import math

    from pipeline.core.estimate import estimate, estimate_notes
    from pipeline.core.params import Params
    from pipeline.core.profile import resolve_epochs
    from pipeline.core.tasks import task_for

    params = Params()
    sms_slice.to_csv(tmp_path / "small.csv", index=False)
    kept = task_for(params).clean_file(str(tmp_path / "small.csv"), params).kept
    est = estimate(task_for(params), params, kept)
    rows = round(len(kept) * params.split.train)
    _, rec = resolve_epochs(params.train, len(kept) and rows, "train")
    assert f"{rec['planned_steps']:,} optimiser steps" in est.plan[0]
    assert set(est.parts) == {"teacher", "teacher_logits", "student", "export_evaluate", "stage_startups"}
    assert all(v > 0 for v in est.parts.values()) and math.isclose(est.total, sum(est.parts.values()))
    assert est.parts["teacher"] > est.parts["teacher_logits"]  # steps with gradients against one forward pass
    first, *_ = est.plan[2:]
    assert "1-layer student, 17% of the teacher's arithmetic, the teacher beside it" in first  # layers [5] of 6
    assert len(est.fallbacks) == len(params.distill.try_first)
    notes = estimate_notes(task_for(params), params, kept)
    assert any(n.startswith("estimate on this machine") for n in notes) and "train.max_length_cap" in notes[-1]


def test_check_prints_the_estimate_unless_asked_not_to(tmp_path):
    import pandas as pd

    raw = tmp_path / "small.csv"
    pd.read_csv(ROOT / "data/raw/sms-spam.csv", dtype=str, keep_default_na=False).head(300).to_csv(raw, index=False)
    run = [sys.executable, "-m", "pipeline.commands.check", "--raw", str(raw)]
    with_estimate = subprocess.run(run, cwd=ROOT, capture_output=True, text=True)
    without = subprocess.run([*run, "--no-estimate"], cwd=ROOT, capture_output=True, text=True)
    assert with_estimate.returncode == 0 and without.returncode == 0, with_estimate.stdout + with_estimate.stderr
    assert "note  estimate on this machine" in with_estimate.stdout and "note  plan: teacher" in with_estimate.stdout
    assert "note  estimate on this machine" not in without.stdout and "note  plan:" not in without.stdout

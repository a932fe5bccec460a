"""End to end: `dvc repro` of the whole pipeline in a temporary git repo, on a real slice with a tiny budget."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = {
    # Augmentation and oversampling are off by default (the ablation): the e2e run switches them on to cover them.
    "augment": {"synonym": {"enabled": True}, "back_translation": {"enabled": True}},
    "rebalance": {"strategy": "oversample"},
    "train": {"max_steps": 12, "batch_size": 16, "eval_steps": 6, "early_stopping_patience": 0, "max_length": 64},
    # A set blend weight: the student's targets and evaluate's `teacher_blend` take the blend path every run.
    "distill": {"max_steps": 12, "batch_size": 16, "eval_steps": 6, "early_stopping_patience": 0, "max_length": 64,
                "blend_baseline": 0.3},
    "evaluate": {"throughput_batches": 1, "latency_runs": 3},
    # A 12-step student's logits sit near ties, where int8 rounding flips a label: 1 of 48 rows is 2% already.
    "export": {"min_agreement": 0.9, "min_macro_f1_ratio": 0.8},
}


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return proc


def dvc(*args: str, repo: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], repo, env, check)


@contextlib.contextmanager
def edited_params(repo: Path, env: dict, **changes: object):
    """params.yaml with `changes` ({"section__key": value}) for the block; afterwards the file is put back and
    `dvc repro` restores the outputs (from DVC's run cache), so no test depends on the order the others ran in."""
    path = repo / "params.yaml"
    before = path.read_text()
    params = yaml.safe_load(before)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield params
    finally:
        path.write_text(before)
        dvc("repro", repo=repo, env=env)


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}



@pytest.fixture(scope="module")
def repo(tmp_path_factory, env, raw_sms) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "data" / "raw").mkdir(parents=True)
    shutil.copytree(ROOT / "data" / "feedback", repo / "data" / "feedback")  # the (empty) feedback file
    # A real slice: 300 ham + 60 spam rows, written as the same file name dvc.yaml points at.
    ham, spam = raw_sms[raw_sms["spam"] == "0"].head(300), raw_sms[raw_sms["spam"] == "1"].head(60)
    pd.concat([ham, spam]).sort_index().to_csv(repo / "data" / "raw" / "sms-spam.csv", index=False)
    run(["git", "init", "-q"], repo, env)
    dvc("init", "-q", repo=repo, env=env)
    dvc("config", "core.site_cache_dir", str(repo / ".dvc-site"), repo=repo, env=env)
    out = dvc("repro", repo=repo, env=env)
    assert ran_stages(out.stdout) == {"clean", "audit", "augment", "rebalance", "split", "train", "teacher_logits",
                                      "distill", "export", "baseline", "evaluate"}, out.stdout
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "first run"], repo, env)
    return repo


def test_full_pipeline_outputs(repo):
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    speed = json.loads((repo / "metrics" / "speed.json").read_text())
    from pipeline.commands.kfold import load_folds, pool
    from pipeline.commands.lineage import scores
    from pipeline.core.project import workspace

    # One macro-F1: what `lineage diff` and `finetune kfold` compute from the written predictions is eval.json's.
    written = repo / workspace(repo).path("evaluate", "predictions")
    preds = pd.read_parquet(written)
    folds, names = load_folds([written])
    first = set(preds.loc[preds["model"] == "teacher", "id"].sort_values().iloc[::2])
    halves = [folds[0][folds[0]["id"].isin(first)].assign(fold="a"),
              folds[0][~folds[0]["id"].isin(first)].assign(fold="b")]  # the same rows as two disjoint folds
    pooled = pool(halves, names, n_resamples=50)
    for name in ("teacher", "student", "student_onnx", "baseline"):
        m = metrics[name]
        rows = preds[preds["model"] == name]
        f1, acc = scores(rows["label"], rows["prediction"], names)
        assert f1 == pytest.approx(m["macro_f1"], abs=1e-12) and acc == pytest.approx(m["accuracy"], abs=1e-12)
        assert pooled["models"][name]["value"] == round(m["macro_f1"], 4), (name, pooled["models"][name])
        assert len(rows) == metrics["comparisons"]["teacher_vs_baseline"]["rows"]
        assert set(m["per_class"]) == {"ham", "spam"}
        ci = m["macro_f1_ci"]
        assert ci["ci_low"] <= ci["value"] == round(m["macro_f1"], 4) <= ci["ci_high"]
        assert speed[name]["cpu_samples_per_s_batch"] > 0 and m["size_bytes"] > 0
        assert (repo / "metrics" / "eval" / f"confusion_{name}.csv").is_file()
    assert not any(k.startswith("cpu_") for m in metrics.values() for k in m), "timings belong in speed.json"
    cmp = metrics["comparisons"]["teacher_vs_baseline"]
    assert cmp["ci_low"] <= cmp["delta"] <= cmp["ci_high"] and 0 <= cmp["mcnemar"]["p_value"] <= 1
    report = (repo / "metrics" / "REPORT.md").read_text()
    for name in ("teacher", "student", "student_onnx", "baseline"):  # each row says eval.json's figure
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        ci = metrics[name]["macro_f1_ci"]
        assert row.split("|")[2].strip() == f"{ci['value']:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}]", row
    assert f"{cmp['delta']:+.4f} [{cmp['ci_low']:+.4f}, {cmp['ci_high']:+.4f}]" in report and "McNemar" in report
    # The student learned from the teacher blended with the baseline: scored as such, compared, and said.
    blend = json.loads((repo / "metrics" / "teacher_blend.json").read_text())
    assert blend["baseline_weight"] == 0.3 and metrics["teacher_blend"]["baseline_weight"] == 0.3
    for key in ("teacher_blend_vs_baseline", "teacher_blend_vs_teacher", "student_vs_teacher_blend",
                "student_onnx_vs_teacher_blend"):
        assert metrics["comparisons"][key]["rows"] == metrics["comparisons"]["teacher_vs_baseline"]["rows"]
    assert "teacher_blend" not in speed and "blended with the TF-IDF baseline (baseline weight 0.3" in report
    assert "`teacher_blend` is that blend on the test rows" in report  # teacher_blend.json's evidence, in words
    # Why the models decide: the shipped student's word attributions, per class, and the shortcut check.
    assert "## Why the models decide" in report and "Shortcut check" in report
    words = pd.read_csv(repo / "metrics" / "eval" / "top_words.csv")
    assert len(words) > 0 and (words["score"] > 0).all() and (words["texts"] >= 1).all()
    page = (repo / "metrics" / "eval" / "explanations.html").read_text()
    assert page.startswith("<!doctype html>") and "background:rgba(" in page
    student_lineage = json.loads((repo / "models" / "student" / "lineage.json").read_text())
    assert student_lineage["teacher_targets"]["baseline_weight"] == 0.3
    # DVCLive curves: x is the optimiser step, and no wall-clock timing reaches the metrics file.
    live = json.loads((repo / "metrics" / "train" / "metrics.json").read_text())
    assert live["step"] == TINY["train"]["max_steps"]
    assert "runtime" not in json.dumps(live) and "per_second" not in json.dumps(live)
    curve = pd.read_csv(repo / "metrics" / "train" / "plots" / "metrics" / "eval" / "macro_f1.tsv", sep="\t")
    assert curve["step"].tolist() == [6, 12]
    assert metrics["student"]["parameters"] < metrics["teacher"]["parameters"]
    split = json.loads((repo / "metrics" / "data" / "split.json").read_text())
    assert split["per_split"]["test"]["rows"] == len(pd.read_parquet(repo / "data" / "processed" / "test.parquet"))
    # Lineage: the model card names the md5 that dvc.lock recorded for the training data.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    train_md5 = next(o["md5"] for o in lock["stages"]["split"]["outs"] if o["path"] == "data/processed/train.parquet")
    assert train_md5 in (repo / "models" / "teacher" / "README.md").read_text()
    assert train_md5 in (repo / "models" / "student" / "README.md").read_text()


def test_saved_models_load_in_transformers_pipeline(repo):
    from transformers import pipeline

    for name in ("teacher", "student"):
        clf = pipeline("text-classification", model=str(repo / "models" / name))
        preds = clf(["WINNER!! You have won a free prize, call now", "see you at lunch"])
        assert {p["label"] for p in preds} <= {"ham", "spam"}


def test_second_repro_does_nothing(repo, env):
    out = dvc("repro", repo=repo, env=env)
    assert ran_stages(out.stdout) == set(), out.stdout
    assert "up to date" in dvc("status", repo=repo, env=env).stdout


def test_forced_retrain_gives_a_byte_identical_teacher(repo, env):
    """Same seed, same data: a forced rerun of train writes the very model dvc.lock recorded, so nothing downstream
    becomes stale (DVC compares the output's md5)."""
    out = dvc("repro", "-f", "-s", "train", repo=repo, env=env)
    assert ran_stages(out.stdout) == {"train"}, out.stdout
    assert "up to date" in dvc("status", repo=repo, env=env).stdout


def test_rerun_with_identical_models_changes_no_quality_metric(repo, env):
    """Speeds vary run to run; quality figures of identical models must not, or `dvc metrics diff` is noise."""
    out = dvc("repro", "-f", "-s", "evaluate", repo=repo, env=env)
    assert ran_stages(out.stdout) == {"evaluate"}, out.stdout
    diff = json.loads(dvc("metrics", "diff", "--json", repo=repo, env=env).stdout)
    assert not diff.get("metrics/eval.json") and not diff.get("metrics/train/metrics.json"), diff


def test_exp_run_of_a_distill_param_reruns_only_distill_export_and_evaluate(repo, env):
    out = dvc("exp", "run", "-S", "distill.alpha=0.7", repo=repo, env=env)  # not the default (0.9)
    assert ran_stages(out.stdout) == {"distill", "export", "evaluate"}, out.stdout
    diff = dvc("metrics", "diff", "--json", repo=repo, env=env)
    changed = json.loads(diff.stdout)["metrics/eval.json"]
    assert any(k.startswith("student.") for k in changed), changed


def test_tune_trials_are_dvc_experiments_scored_on_validation_only(repo, env, tmp_path):
    """Two trials (the reference and one Optuna suggestion), each a `dvc exp run` of the train stage; the choice and
    its evidence in metrics/tune.json; without --apply the workspace's params are put back as they were. Run on a
    copy: the shared repo keeps its state for the other tests."""
    work = tmp_path / "repo"
    shutil.copytree(repo, work, symlinks=True)
    params_before = (work / "params.yaml").read_text()
    proc = run([sys.executable, "-m", "pipeline.commands.tune", "--trials", "2", "--root", str(work)], ROOT, env)
    result = json.loads((work / "metrics" / "tune.json").read_text())
    names = [t["name"] for t in result["trials"]]
    assert len(names) == 2 and result["trials"][0]["params"] == {} and result["reference"] == names[0]
    assert set(result["trials"][1]["params"]) == {"train.learning_rate", "train.epochs", "train.min_steps"}
    assert result["adopted"] == (result["evidence"]["delta_lower"] > 0) and "validation" in result["rule"]
    shown = dvc("exp", "show", "--json", repo=work, env=env).stdout
    assert all(n in shown for n in names), shown[-2000:]
    assert (work / "params.yaml").read_text() == params_before and "reference" in proc.stdout


def test_kfold_runs_folds_as_experiments_and_pools_disjoint_test_rows(repo, env, tmp_path):
    """Issue 19 item 5: `finetune kfold --folds 2` runs split.fold 0 and 1 as DVC experiments (whole pipeline each),
    pools their test predictions (disjoint rows, both folds' rows counted) and puts the workspace back to fold 0.
    Fold 0 is the run already in the workspace: its per-fold figures are eval.json's."""
    work = tmp_path / "repo"
    shutil.copytree(repo, work, symlinks=True)
    params_before = (work / "params.yaml").read_text()
    proc = run([sys.executable, "-m", "pipeline.commands.cli", "kfold", "--folds", "2", "--resamples", "200",
                "--root", str(work)], ROOT, env)
    result = json.loads((work / "metrics" / "kfold.json").read_text())
    folds = [pd.read_parquet(p) for p in result["sources"]]
    ids = [set(f["id"]) for f in folds]
    assert len(folds) == 2 and not ids[0] & ids[1] and result["rows"] == len(ids[0]) + len(ids[1])
    evaluated = json.loads((repo / "metrics" / "eval.json").read_text())
    assert result["per_fold"][0]["macro_f1"]["teacher"] == round(evaluated["teacher"]["macro_f1"], 4)
    assert result["comparisons"]["teacher_vs_baseline"]["rows"] == result["rows"] and "student_keeps" in result
    shown = dvc("exp", "show", "--json", repo=work, env=env).stdout
    assert all(Path(s).stem in shown for s in result["sources"]), shown[-2000:]
    assert (work / "params.yaml").read_text() == params_before
    assert proc.stdout.startswith("2 folds") and "student keeps" in proc.stdout


def test_rebalance_change_reruns_only_rebalance_and_split(repo, env):
    with edited_params(repo, env, rebalance__target_ratio=0.8):
        out = dvc("repro", "split", repo=repo, env=env)
    assert ran_stages(out.stdout) == {"rebalance", "split"}, out.stdout


def test_train_runs_under_torchrun_with_two_processes(repo, env, tmp_path):
    """DDP on CPU (gloo): the unchanged stage, started under torchrun by itself from `train.launcher` (an argument
    list, no shell), as a user would on a multi-GPU box."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["launcher"] = "torchrun --nproc_per_node 2 --master_port 29517"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out_dir = tmp_path / "teacher"
    cmd = [sys.executable, "-m", "pipeline.stages.train", "--params", str(tmp_path / "params.yaml"),
           "--train", "data/processed/train.parquet", "--val", "data/processed/val.parquet",
           "--output", str(out_dir), "--checkpoints", str(tmp_path / "ckpt"), "--live", str(tmp_path / "live")]
    proc = run(cmd, repo, env)
    lineage = json.loads((out_dir / "lineage.json").read_text())
    assert lineage["world_size"] == 2, proc.stderr[-3000:]
    assert lineage["train_metrics"]["epoch"] > 0 and (out_dir / "model.safetensors").is_file()


def test_launcher_threads_and_resume_do_not_invalidate_the_cached_model(repo, env):
    """Earlier tests may have left upstream stages changed: compare DVC's view before and after the switch."""
    params_file = repo / "params.yaml"
    before = params_file.read_text()
    status_before = json.loads(dvc("status", "--json", repo=repo, env=env).stdout)
    params = yaml.safe_load(before)
    params["train"].update(launcher="torchrun --nproc_per_node 2", num_threads=1, resume=False)
    params["distill"]["num_threads"] = 1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert json.loads(dvc("status", "--json", repo=repo, env=env).stdout) == status_before
        params["train"]["learning_rate"] = 1e-3  # while a result-changing key does make train stale
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert "train" in json.loads(dvc("status", "--json", repo=repo, env=env).stdout)
    finally:
        params_file.write_text(before)  # only `dvc status` ran: no output to restore


def lineage(*args: str, repo: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline.commands.lineage", "--repo", str(repo), *args], ROOT, env, check)


def test_lineage_diff_trace_and_model_after_a_scripted_data_change(repo, env):
    """Issue 10: append k rows, relabel one, delete one; `dvc repro`; then `lineage diff` (HEAD, read from the DVC
    cache, vs the workspace) reports exactly that, 0 rows move split, and the other commands answer."""
    from pipeline.core.text import dedup_key

    run(["git", "checkout", "-q", "--", "."], repo, env)  # undo earlier tests' param edits and exp results
    dvc("checkout", "-q", "--force", repo=repo, env=env)
    raw_path = repo / "data" / "raw" / "sms-spam.csv"
    raw = pd.read_csv(raw_path, dtype=str, keep_default_na=False)
    keys = raw["text"].map(dedup_key)
    kept_text = set(pd.read_parquet(repo / "data" / "interim" / "clean.parquet")["text"])
    unique = raw.index[(keys.map(keys.value_counts()) == 1) & raw["text"].isin(kept_text) & (raw["spam"] == "0")
                       & ~raw["text"].str.contains("\n")]
    relabel, delete = unique[3], unique[7]
    raw.loc[relabel, "spam"] = "1"
    raw = raw.drop(index=delete)
    new = pd.DataFrame({"Unnamed: 0": "", "spam": "0",
                        "text": [f"Lineage check {i}: shall we meet at {i} pm for the quiz night?" for i in range(5)]})
    pd.concat([raw, new[raw.columns]], ignore_index=True).to_csv(raw_path, index=False)
    # Issue 22: three rows labelled from served traffic (as monitor's to_label.csv, filled in) come in through
    # `finetune ingest`, with their request ids; one is a raw row already (skipped, counted), one is unlabelled.
    labelled = pd.DataFrame({
        "text": [f"Feedback {i}: your parcel waits at the depot, confirm a delivery slot today" for i in range(3)]
        + [raw["text"].iloc[0], "not labelled yet"],
        "label": ["spam", "ham", "spam", "ham", ""], "request_id": [f"req-{i}" for i in range(5)],
        "time": "2026-11-30T01:00:00+00:00", "model_md5": "f" * 32})
    labelled.to_csv(repo / "to_label.csv", index=False)
    run([sys.executable, "-m", "pipeline.commands.ingest", str(repo / "to_label.csv"), "--params",
         str(repo / "params.yaml")], ROOT, env)
    feedback = pd.read_csv(repo / "data" / "feedback" / "labelled.csv")
    assert feedback["request_id"].tolist() == ["req-0", "req-1", "req-2"]
    dvc("repro", repo=repo, env=env)

    d = json.loads(lineage("--json", "diff", repo=repo, env=env).stdout)
    clean = {k: v for k, v in d["stages"]["clean"].items() if k != "examples"}
    assert clean == {"added": 8, "removed": 1, "relabelled": 1, "text_changed": 0}, d["stages"]
    assert [e["now"] for e in d["stages"]["clean"]["examples"]] == ["spam"]
    fb = json.loads(lineage("--json", "trace", "--request-id", "req-1", repo=repo, env=env).stdout)["rows"][0]
    assert fb["raw_row"] == -2 and fb["label"] == "ham" and fb["feedback"]["request_id"] == "req-1"
    assert fb["feedback"]["model_md5"] == "f" * 32 and fb["feedback"]["source"] == "to_label.csv:2"
    assert fb["stages"]["clean"] == "kept" and fb["split"] in ("train", "val", "test")
    traced = lineage("trace", "--text", "Feedback 1:", repo=repo, env=env).stdout
    assert "req-1" in traced and traced.startswith("1 row(s) of data/feedback/labelled.csv at ")
    assert d["moved_split"]["rows"] == 0
    assert set(d["models"]) == {"teacher", "student", "student_onnx", "baseline", "teacher_blend"}
    for m in d["models"].values():
        assert m["common_test_rows"] <= min(m["test_rows"]) and m["macro_f1_all"][1] is not None
    table = lineage("diff", repo=repo, env=env).stdout
    assert "original rows that moved split: 0" in table and "macro-F1 common rows" in table

    # A synonym variant traces back to the raw row of its source.
    train = pd.read_parquet(repo / "data" / "processed" / "train.parquet")
    variant = train[train["origin"] == "synonym"].iloc[0]
    t = json.loads(lineage("--json", "trace", variant["id"], repo=repo, env=env).stdout)
    row = t["rows"][0]
    assert row["raw_row"] == variant["raw_row"] and row["id"] == variant["source_id"]
    assert any(x["id"] == variant["id"] for x in row["derived"]) and row["split"] == "train"
    assert "teacher" in row["trained_on_by"]
    test_row = pd.read_parquet(repo / "data" / "processed" / "test.parquet").iloc[0]
    t = json.loads(lineage("--json", "trace", test_row["id"], repo=repo, env=env).stdout)
    assert t["rows"][0]["raw_row"] == test_row["raw_row"] and t["rows"][0]["split"] == "test"
    assert {p["model"] for p in t["rows"][0]["predictions"]} == {"teacher", "student", "student_onnx", "baseline",
                                                                  "teacher_blend"}
    by_row = json.loads(lineage("--json", "trace", "--raw-row", str(test_row["raw_row"]), "--limit", "1000",
                                repo=repo, env=env).stdout)
    assert test_row["id"] in {r["id"] for r in by_row["rows"]}  # restored rows share their host record's raw_row

    m = json.loads(lineage("--json", "model", "models/teacher", repo=repo, env=env).stdout)
    assert m["current"] and m["inputs"]["train"]["md5"] == m["inputs"]["train"]["workspace_md5"]
    with edited_params(repo, env, train__learning_rate=3e-4):
        m = json.loads(lineage("--json", "model", "data/models/teacher", repo=repo, env=env).stdout)
    assert not m["current"] and any("train.learning_rate" in c for c in m["changed"])

    bad = lineage("trace", "0123456789abcdef", repo=repo, env=env, check=False)
    assert bad.returncode == 1 and "no row has this id" in bad.stderr and "Traceback" not in bad.stderr
    bad = lineage("diff", "no-such-rev", repo=repo, env=env, check=False)
    assert bad.returncode == 1 and "no-such-rev: not a git revision" in bad.stderr

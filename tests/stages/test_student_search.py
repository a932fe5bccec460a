"""distill.try_first: smaller students are distilled first and the first that keeps distill.min_val_f1_ratio of the
teacher's validation macro-F1 ships; otherwise the next, and finally distill's own student. Real distillation runs
(pipeline.stages.distill.main) on a real SMS slice with a 3-layer MiniLM teacher."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from pipeline.core.params import load_params
from pipeline.core.training import fingerprint
from pipeline.stages.distill import VERDICT, main

pytestmark = pytest.mark.model  # loads real transformer models

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = ["ham", "spam"]


@pytest.fixture(scope="module")
def job(tmp_path_factory, sms_slice):
    """A teacher folder (MiniLM cut to 3 layers, head fitted a few steps), train/val splits and its logits."""
    import torch

    from pipeline.core.modeling import encoder_layers, load_classifier, load_tokenizer, predict_logits

    d = tmp_path_factory.mktemp("search")
    rows = sms_slice.assign(id=[f"r{i:04d}" for i in range(len(sms_slice))],
                            label=sms_slice["spam"].map({"0": "ham", "1": "spam"}))
    rows = rows.assign(source_id=rows["id"], origin="original", raw_row=range(2, len(rows) + 2))[
        ["id", "source_id", "origin", "raw_row", "text", "label"]]
    train, val = rows.iloc[:200], rows.iloc[200:]
    torch.manual_seed(0)
    teacher = load_classifier(MINILM, "t", num_labels=2, id2label=dict(enumerate(LABELS)),
                              label2id={n: i for i, n in enumerate(LABELS)})
    del encoder_layers(teacher)[3:]
    teacher.config.num_hidden_layers = 3
    tok = load_tokenizer(MINILM, "t")
    texts, y = train["text"].tolist(), torch.tensor((train["label"] == "spam").astype(int).to_numpy())
    opt = torch.optim.AdamW(teacher.parameters(), lr=5e-4)
    teacher.train()
    for _ in range(3):
        for i in range(0, 192, 16):
            enc = tok(texts[i:i + 16], padding=True, truncation=True, max_length=48, return_tensors="pt")
            torch.nn.functional.cross_entropy(teacher(**enc).logits, y[i:i + 16]).backward()
            opt.step()
            opt.zero_grad()
    teacher.eval()
    teacher.save_pretrained(d / "teacher", safe_serialization=True)
    tok.save_pretrained(d / "teacher")
    # As train writes it: how many tokens the teacher reads (distill scores it on validation as it was trained).
    (d / "teacher" / "lineage.json").write_text(json.dumps({"stage": "train", "label_names": LABELS, "params": {
        "max_length": 48, "truncation": "head"}}))
    # As teacher_logits writes them when it blends nothing: the teacher's logits on training and validation rows.
    logits = [predict_logits(teacher, tok, part["text"].tolist(), 64, 48, device="cpu", progress=False)
              for part in (train, val)]
    train.to_parquet(d / "train.parquet", index=False)
    val.to_parquet(d / "val.parquet", index=False)
    pd.DataFrame({"id": pd.concat([train["id"], val["id"]]), "split": ["train"] * len(train) + ["val"] * len(val),
                  "logits": [*logits[0], *logits[1]], "baseline_weight": 0.0}).to_parquet(d / "logits.parquet",
                                                                                       index=False)
    return d


def write_params(tmp_path, **distill) -> dict:
    """The repository's params with a short distillation of a [0, 2] student, and these distill keys."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["distill"].update({"max_steps": 4, "batch_size": 16, "eval_steps": 2, "early_stopping_patience": 0,
                              "max_length": 48, "layers": [0, 2], **distill})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def run(job, tmp_path, **distill) -> tuple[dict, dict]:
    """Distill with these distill params; the student's lineage and config."""
    write_params(tmp_path, **distill)
    out = tmp_path / "student"
    main(["--params", str(tmp_path / "params.yaml"), "--teacher", str(job / "teacher"),
          "--logits", str(job / "logits.parquet"), "--train", str(job / "train.parquet"),
          "--val", str(job / "val.parquet"), "--output", str(out), "--checkpoints", str(tmp_path / "ckpt"),
          "--live", str(tmp_path / "live")])
    assert not (tmp_path / "ckpt").exists()  # every student's checkpoints go once one ships
    return json.loads((out / "lineage.json").read_text()), json.loads((out / "config.json").read_text())


def test_a_smaller_student_that_loses_too_much_hands_over_to_the_next(job, tmp_path):
    lineage, config = run(job, tmp_path, try_first=[{"layers": [0], "intermediate_size": 1}], min_val_f1_ratio=1.0)
    search = lineage["student_search"]
    assert search["teacher_val_macro_f1"] > 0.8  # a teacher worth keeping up with
    first, second = search["tried"]
    assert first["key"] == "distill.try_first[0]" and first["layers"] == [0] and first["intermediate_size"] == 1
    assert not first["shipped"] and first["val_macro_f1"] < search["teacher_val_macro_f1"]
    assert first["val_f1_ratio"] == pytest.approx(first["val_macro_f1"] / search["teacher_val_macro_f1"], abs=1e-4)
    assert second["key"] == "distill" and second["shipped"] and second["layers"] == [0, 2]
    # What ships is distill's own student, and its lineage says so.
    assert config["num_hidden_layers"] == 2 and config["intermediate_size"] == 1536
    assert lineage["params"]["layers"] == [0, 2]
    # The search scores every student by predict_logits on the validation rows (the evidence's paired rows), Trainer by
    # its own batches: the same rows and reading, so the same figure up to a near-tie.
    assert lineage["val_metrics"]["eval_macro_f1"] == pytest.approx(second["val_macro_f1"], abs=0.02)
    assert second["evidence"]["rows"] == first["evidence"]["rows"] > 0 and not first["evidence"]["keeps"]


def test_a_student_reads_no_more_tokens_than_its_teacher_did(job, tmp_path):
    # The teacher read 48 tokens (its lineage); a student on `max_length: auto` under a 256 cap would read 128.
    lineage, _ = run(job, tmp_path, max_length="auto", max_length_cap=256, try_first=[])
    assert lineage["resolved"]["max_length"] == 48
    assert "lowered from 256: the tokens the teacher read" in lineage["resolved"]["length"]["how"]
    assert lineage["params"]["max_length_cap"] == 256  # the params as set, for `lineage model` to compare


def test_the_first_student_that_keeps_the_ratio_ships(job, tmp_path):
    # A student that never predicts spam would be rejected at any ratio (its spam F1 is 0): in 4 steps only a student
    # ending in the teacher's last layer learns it here.
    lineage, config = run(job, tmp_path, try_first=[{"layers": [0, 2], "hidden_weight": 0.5}], min_val_f1_ratio=0.01)
    (only,) = lineage["student_search"]["tried"]
    assert only["evidence"]["keeps"] and not only["evidence"]["classes_worse"]
    assert only["shipped"] and only["key"] == "distill.try_first[0]"
    assert config["num_hidden_layers"] == 2 and lineage["params"]["hidden_weight"] == 0.5

    # `lineage model` judges the shipped student against the entry it came from, and lists the students tried.
    from pipeline.commands.lineage import format_model, model_status

    status = model_status(tmp_path / "student", tmp_path, tmp_path / "params.yaml")
    assert status["current"], status["changed"]
    shown = format_model(status)
    assert "distill.try_first[0]   layers [0, 2], hidden_weight 0.5" in shown and "<- shipped" in shown
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["distill"]["try_first"][0]["hidden_weight"] = 0.25
    params["distill"]["intermediate_size"] = 16  # distill's own student: not the one shipped, so not a change
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    status = model_status(tmp_path / "student", tmp_path, tmp_path / "params.yaml")
    assert "param distill.try_first[0].hidden_weight: 0.5 -> 0.25" in status["changed"], status["changed"]
    assert not any(c.startswith("param distill.intermediate_size") for c in status["changed"]), status["changed"]


def test_a_student_rejected_before_an_interruption_is_not_distilled_again(job, tmp_path):
    """A kill after a smaller student was rejected: the rerun takes the recorded verdict (same params, seed and
    data) instead of distilling it again; a verdict of other params is ignored."""
    distill = {"try_first": [{"layers": [1, 2]}], "min_val_f1_ratio": 0.01}  # trained, [1, 2] would ship
    params = write_params(tmp_path, **distill)
    _, q = load_params(tmp_path / "params.yaml").distill.students()[0]
    files = [str(job / "train.parquet"), str(job / "val.parquet"), str(job / "logits.parquet")]
    earlier = {"key": "distill.try_first[0]", "shipped": False, "val_macro_f1": 0.1}
    (tmp_path / "ckpt" / "0").mkdir(parents=True)
    (tmp_path / "ckpt" / "0" / VERDICT).write_text(json.dumps({"fingerprint": fingerprint(q, params["seed"], files),
                                                               "record": earlier}))
    lineage, config = run(job, tmp_path, **distill)
    assert lineage["student_search"]["tried"][0] == earlier and lineage["params"]["layers"] == [0, 2]

    (tmp_path / "ckpt" / "0").mkdir(parents=True)
    (tmp_path / "ckpt" / "0" / VERDICT).write_text(json.dumps({"fingerprint": "another job", "record": earlier}))
    lineage, config = run(job, tmp_path, **distill)
    assert lineage["student_search"]["tried"][0]["shipped"] and lineage["params"]["layers"] == [1, 2]


def test_teacher_logits_blends_the_baseline_in_as_set_and_the_student_records_it(job, tmp_path):
    """teacher_logits (the real stage, with the real baseline stage's model): the targets of every training and
    validation row, blended with the baseline's out-of-fold probabilities at the weight set; distill learns from
    them and its lineage names the blend."""
    import numpy as np

    from pipeline.core.blend import blend
    from pipeline.core.metrics import log_softmax
    from pipeline.core.modeling import load_classifier, load_tokenizer, predict_logits
    from pipeline.stages import baseline, teacher_logits

    write_params(tmp_path, blend_baseline=0.5, try_first=[])
    common = ["--params", str(tmp_path / "params.yaml"), "--train", str(job / "train.parquet"),
              "--val", str(job / "val.parquet")]
    import sys

    argv = sys.argv
    try:
        sys.argv = ["baseline", *common, "--output", str(tmp_path / "baseline")]
        baseline.main()
        sys.argv = ["teacher_logits", *common, "--teacher", str(job / "teacher"), "--baseline",
                    str(tmp_path / "baseline"), "--output", str(tmp_path / "targets.parquet"),
                    "--blend", str(tmp_path / "blend.json")]
        teacher_logits.main()
    finally:
        sys.argv = argv
    record = json.loads((tmp_path / "blend.json").read_text())
    assert record["setting"] == 0.5 and record["baseline_weight"] == 0.5 and len(record["grid"]) == 11
    assert record["train_baseline"].startswith("out-of-fold")
    targets = pd.read_parquet(tmp_path / "targets.parquet")
    train, val = pd.read_parquet(job / "train.parquet"), pd.read_parquet(job / "val.parquet")
    assert targets["id"].tolist() == train["id"].tolist() + val["id"].tolist()
    assert targets["split"].tolist() == ["train"] * len(train) + ["val"] * len(val)
    # Validation rows: exactly the blend of the teacher's logits and the fitted baseline's probabilities.
    from pipeline.core.modeling import load_baseline

    tok, teacher = load_tokenizer(str(job / "teacher")), load_classifier(str(job / "teacher"))
    z = predict_logits(teacher, tok, val["text"].tolist(), 64, 48, device="cpu", progress=False)
    prob = load_baseline(tmp_path / "baseline").predict_proba(val["text"])
    got = np.stack(targets["logits"].to_numpy()[len(train):])
    assert np.allclose(got, blend(z, prob, 0.5), atol=1e-5)
    # Training rows: blended with out-of-fold probabilities, so not the in-sample ones of the fitted baseline.
    z_train = predict_logits(teacher, tok, train["text"].tolist(), 64, 48, device="cpu", progress=False)
    in_sample = blend(z_train, load_baseline(tmp_path / "baseline").predict_proba(train["text"]), 0.5)
    got_train = np.stack(targets["logits"].to_numpy()[:len(train)])
    assert np.allclose(np.exp(got_train).sum(1), 1, atol=1e-5) and not np.allclose(got_train, in_sample, atol=1e-3)
    assert not np.allclose(got_train, log_softmax(z_train), atol=1e-3)

    out = tmp_path / "student"
    main(["--params", str(tmp_path / "params.yaml"), "--teacher", str(job / "teacher"),
          "--logits", str(tmp_path / "targets.parquet"), "--train", str(job / "train.parquet"),
          "--val", str(job / "val.parquet"), "--output", str(out),
          "--checkpoints", str(tmp_path / "ckpt"), "--live", str(tmp_path / "live")])
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["teacher_targets"] == {"setting": 0.5, "baseline_weight": 0.5}

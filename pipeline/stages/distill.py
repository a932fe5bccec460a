"""distill: teacher + its cached logits + data/processed/{train,val} -> data/models/student (params: seed, distill).

The student learns from the teacher's softened outputs and the true labels:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, label)

(Hinton et al., 2015; T^2 keeps the soft term's gradients on the scale of the hard one). The student is either the
teacher truncated to `distill.layers`, initialised from those fine-tuned teacher layers (DistilBERT-style), or a
smaller model named in `distill.student`, fine-tuned from its own pre-trained weights. With
`distill.intermediate_size` set, the student's feed-forward blocks are first narrowed to that width, keeping the
neurons that carry the most signal on a seeded sample of training rows; the lineage records what was kept.

With `distill.hidden_weight` > 0 the teacher also runs on every training batch, and the loss gains

    hidden_weight * MSE(student's last hidden states, teacher's last hidden states)   (real tokens only)

a signal of hidden_size numbers per token instead of num_labels per text. Hidden-state matching is what lets very
small students keep up (Sun et al. 2019, "Patient KD"; Jiao et al. 2020, TinyBERT); on a 3-class tweet corpus it
lifted a 1-layer student over the 98% bar (the figures: bench/results/export-and-students.md).
It needs the student to share the teacher's hidden size and tokenizer, as a truncated teacher does.

`distill.try_first` lists smaller students to distil before the one above (each entry replaces some of `layers`,
`hidden_weight`, `intermediate_size`): the first that the validation rows show keeps `min_val_f1_ratio` of the
teacher's macro-F1 beyond their noise ships (the paired-bootstrap lower bound at `selection_confidence`, and no class
significantly below that share of the teacher's F1: stats.student_evidence), otherwise the next is distilled,
ending with distill's own student. The lineage's `student_search` records each one tried, with its evidence.

Class imbalance: with `class_weights` on (auto: from 3:1, as the teacher), each row's soft and hard loss counts by
its class's 'balanced' weight. Each student has its own checkpoint folder, and a rejected
one leaves its verdict there, so a run killed later resumes without distilling it again.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import set_seed

from pipeline.core.checks import student_layer_problems
from pipeline.core.io import DataError, read_lineage, read_table, run_stage, setup_logging, stage_args
from pipeline.core.metrics import encode_labels, macro_f1_fn
from pipeline.core.modeling import (ModelError, encoder_layers, lineage_max_length, load_tokenizer, predict_logits,
                                    read_texts)
from pipeline.core.params import DistillParams, load_params, replace
from pipeline.core.profile import resolve_epochs, resolve_max_length
from pipeline.core.stats import student_evidence
from pipeline.core.tasks import task_for
from pipeline.core.trainers import ResumableTrainer, fit
from pipeline.core.training import fingerprint, finish, lineage_record

log = logging.getLogger(__name__)
PRUNE_ROWS = 512  # training rows that score the feed-forward neurons (seeded sample)


def distillation_loss(student_logits: Any, teacher_logits: Any, labels: Any, alpha: float, temperature: float,
                      class_weights: Any = None) -> Any:
    """With `class_weights` (one per class) each row's soft and hard terms count by its true class's weight, as
    the teacher's weighted cross-entropy does (a weighted mean), so a student of an imbalanced set is not pulled back
    to the big classes by a loss that counts every row alike."""

    t = temperature
    if student_logits.dim() == 3:  # tokens: [rows, positions, labels]; the positions that carry a label count
        keep = labels != -100
        student_logits, teacher_logits, labels = student_logits[keep], teacher_logits[keep], labels[keep]
    if class_weights is None:
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean") * (t * t)
        hard = F.cross_entropy(student_logits, labels)
        return alpha * soft + (1.0 - alpha) * hard
    w = class_weights.to(student_logits.dtype)[labels]
    soft_rows = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1),
                         reduction="none").sum(-1) * (t * t)
    hard_rows = F.cross_entropy(student_logits, labels, reduction="none")
    return (w * (alpha * soft_rows + (1.0 - alpha) * hard_rows)).sum() / w.sum()


def hidden_state_loss(student_hidden: Any, teacher_hidden: Any, attention_mask: Any) -> Any:
    """Mean squared error between two [batch, tokens, hidden] tensors over the real (unmasked) tokens only:
    padding would otherwise count, and more of it in batches of short texts."""
    mask = attention_mask.unsqueeze(-1).to(student_hidden.dtype)
    diff = (student_hidden - teacher_hidden.to(student_hidden.dtype)) ** 2
    return (diff * mask).sum() / (mask.sum() * student_hidden.shape[-1]).clamp_min(1)


def check_hidden_match(student: Any, teacher: Any, student_tok: Any, teacher_tok: Any, key: str = "distill") -> None:
    """The hidden-state term compares the two encoders token by token: same width, same tokens."""
    s, t = student.config.hidden_size, teacher.config.hidden_size
    if s != t:
        raise ModelError(f"{key}.hidden_weight: the student's hidden size {s} differs from the teacher's {t}; "
                         "set it to 0 for this student")
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ModelError(f"{key}.hidden_weight: the student and teacher tokenizers differ, so their tokens do not "
                         "line up; set it to 0 for this student")


def truncate(teacher: Any, layers: list[int]) -> Any:
    """A copy of `teacher` keeping only `layers` (in that order), embeddings and head included."""

    n = teacher.config.num_hidden_layers
    if max(layers) >= n:
        raise ModelError(
            f"distill.layers: {layers} names layer {max(layers)}, but the teacher has {n} layers (0..{n - 1})"
        )
    student = copy.deepcopy(teacher)
    old = encoder_layers(student)
    kept = torch.nn.ModuleList([old[i] for i in layers])
    replace_modules(student.base_model, {id(old): kept})
    student.config.num_hidden_layers = len(layers)
    return student


def replace_modules(root: Any, new: dict[int, Any]) -> None:
    """Swap, wherever it is attached under `root`, each submodule whose id() is a key of `new` for its value."""
    for module in root.modules():
        for name, child in list(module.named_children()):
            if id(child) in new:
                setattr(module, name, new[id(child)])


def feed_forward_pairs(model: Any) -> list[tuple[Any, Any, Any]]:
    """(layer, up-projection, down-projection) per encoder layer: the Linear widening hidden -> intermediate and
    the one narrowing it back, found by shape so BERT, RoBERTa, ELECTRA, DeBERTa and the like are alike."""

    hidden, inter = model.config.hidden_size, getattr(model.config, "intermediate_size", None)
    pairs = []
    for i, layer in enumerate(encoder_layers(model)):
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        up = [m for m in linears if (m.in_features, m.out_features) == (hidden, inter)]
        down = [m for m in linears if (m.in_features, m.out_features) == (inter, hidden)]
        if inter is None or len(up) != 1 or len(down) != 1:
            raise ModelError(f"distill.intermediate_size: cannot find one feed-forward block in layer {i} of "
                             f"{type(model).__name__} (config has no intermediate_size, or the layer is unusual); "
                             "set it to 0")
        pairs.append((layer, up[0], down[0]))
    return pairs


def prune_feed_forward(model: Any, tokenizer: Any, texts: list[str], width: int, max_length: int) -> dict:
    """Keep `width` feed-forward neurons per layer, in place, and set config.intermediate_size to match (so the
    saved model is a standard config and loads anywhere).

    A neuron's importance is its mean |activation| over the real (unpadded) tokens of `texts` times the norm of its
    outgoing weights: how much it moves the layer's output on this data. Structured pruning by such a score, then
    distillation to recover (e.g. Michel et al. 2019 for heads, Sajjad et al. 2023 for layers), keeps the model
    dense, so onnxruntime's int8 kernels get the whole saving."""

    inter = model.config.intermediate_size
    if width >= inter:
        raise ModelError(f"distill.intermediate_size: {width} is not below the student's own width {inter}; "
                         "0 keeps it")
    pairs = feed_forward_pairs(model)
    scores = [torch.zeros(inter, dtype=torch.float64) for _ in pairs]
    mask: dict[str, Any] = {}

    def hook(k: int) -> Callable:
        def record(_module: Any, args: tuple) -> None:  # the down-projection's input: post-activation values
            scores[k].add_((args[0].abs() * mask["m"]).sum((0, 1)).double())
        return record

    handles = [down.register_forward_pre_hook(hook(k)) for k, (_, _, down) in enumerate(pairs)]
    was_training = model.training
    model.eval()
    try:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        with torch.inference_mode():
            for start in range(0, len(order), 32):
                enc = tokenizer([texts[i] for i in order[start:start + 32]], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
                mask["m"] = enc["attention_mask"].unsqueeze(-1).to(torch.float32)
                model(**enc)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    kept_share = []
    for k, (layer, up, down) in enumerate(pairs):
        importance = scores[k] * down.weight.detach().double().norm(dim=0)
        keep = importance.topk(width).indices.sort().values
        kept_share.append(float(importance[keep].sum() / importance.sum()))
        new_up = torch.nn.Linear(up.in_features, width, bias=up.bias is not None)
        new_down = torch.nn.Linear(width, down.out_features, bias=down.bias is not None)
        with torch.no_grad():
            new_up.weight.copy_(up.weight[keep])
            new_down.weight.copy_(down.weight[:, keep])
            if up.bias is not None:
                new_up.bias.copy_(up.bias[keep])
            if down.bias is not None:
                new_down.bias.copy_(down.bias)
        replace_modules(layer, {id(up): new_up, id(down): new_down})
    model.config.intermediate_size = width
    log.info("feed-forward pruned %d -> %d per layer on %d training rows; importance kept per layer: %s", inter,
             width, len(texts), ", ".join(f"{x:.1%}" for x in kept_share))
    return {"from": inter, "to": width, "rows": len(texts), "importance_kept": [round(x, 4) for x in kept_share]}


class DistillationTrainer(ResumableTrainer):
    """A Trainer with the distillation loss (params `distill`); evaluation batches (no teacher logits) use plain
    cross-entropy. `teacher` is needed when `distill.hidden_weight` > 0: it runs, frozen, on each training batch.
    `class_weights` (numpy, one per class) weighs each training row by its class."""

    def __init__(self, *args: Any, distill: DistillParams, teacher: Any = None, class_weights: Any = None,
                 **kwargs: Any) -> None:
        if distill.hidden_weight > 0 and teacher is None:
            raise ValueError("distill.hidden_weight > 0 needs the teacher model")
        super().__init__(*args, **kwargs)
        if teacher is not None:
            teacher.eval()  # no dropout in the targets; it runs under no_grad, so its weights never get gradients
        self.distill, self.teacher, self.class_weights = distill, teacher, class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        p, teacher = self.distill, self.teacher
        inputs = dict(inputs)
        teacher_logits = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        hidden = p.hidden_weight > 0 and teacher_logits is not None
        outputs = model(**inputs, output_hidden_states=hidden)
        if teacher_logits is None:  # [rows, labels], or [rows, positions, labels] with -100 where none
            loss = F.cross_entropy(outputs.logits.reshape(-1, outputs.logits.shape[-1]), labels.reshape(-1))
        else:
            w = None if self.class_weights is None else torch.as_tensor(self.class_weights,
                                                                        device=outputs.logits.device)
            loss = distillation_loss(outputs.logits, teacher_logits.to(outputs.logits.dtype), labels, p.alpha,
                                     p.temperature, w)
        if hidden:
            device = outputs.logits.device
            if next(teacher.parameters()).device != device:  # wherever Trainer placed the student
                teacher.to(device)
            with torch.no_grad():
                target = teacher.base_model(**inputs).last_hidden_state
            loss = loss + p.hidden_weight * hidden_state_loss(outputs.hidden_states[-1], target,
                                                              inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss


def build_student(p: DistillParams, teacher: Any, teacher_dir: str, label_names: list[str], task: Any,
                  key: str = "distill") -> tuple[Any, Any]:
    teacher_tok = load_tokenizer(teacher_dir, "teacher")
    if not p.student:
        return truncate(teacher, p.layers), teacher_tok
    tokenizer = load_tokenizer(p.student, "distill.student")
    if tokenizer.get_vocab() != teacher_tok.get_vocab():
        log.warning("student and teacher tokenizers differ: fine for logit distillation, which only needs texts")
    model = task.load_model(p.student, "distill.student", label_names, ignore_mismatched_sizes=True)
    if p.hidden_weight > 0:
        check_hidden_match(model, teacher, tokenizer, teacher_tok, key)
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "teacher", "logits", "train", "val", "output", "checkpoints", "live",
                      argv=argv)
    params = load_params(args.params)
    p, seed = params.distill, params.seed
    task = task_for(params)
    train_df, val_df, logits, val_targets, weight, teacher, label_names = load_inputs(args, params, task)
    students = task.students(p)
    # What the student learns from, on the validation rows (the teacher as evaluate scores it, or its blend with
    # the baseline): each smaller student is judged against it, row by row.
    teacher_val = (encode_labels(val_df["label"], label_names, args.val),
                   np.stack(val_targets.to_numpy()).argmax(1)) if len(students) > 1 else None
    blend_record = {"setting": p.blend_baseline, "baseline_weight": weight}  # the whole record: teacher_blend.json
    data_files = [args.train, args.val, args.logits]
    search: list[dict] = []
    for i, (key, q) in enumerate(students):
        last = i == len(students) - 1
        # One checkpoint folder per student, so resuming one never wipes the verdict on another.
        ckpt = Path(args.checkpoints) / str(i) if len(students) > 1 else Path(args.checkpoints)
        fp = fingerprint(q, seed, data_files)
        earlier = None if last else rejected_before(ckpt, fp)
        if earlier is not None:
            log.info("%s: rejected in an earlier run of this same job (%s); not distilled again", key, earlier)
            search.append(earlier)
            continue
        trainer, result, best, pruned, tokenizer, resolved = distill_one(
            q, key, seed, teacher, args, train_df, val_df, logits, label_names, str(ckpt), data_files, task)
        record = {"key": key, "layers": None if q.student else q.layers, "hidden_weight": q.hidden_weight,
                  "intermediate_size": q.intermediate_size,
                  f"val_{task.primary_metric}": round(best[f"eval_{task.primary_metric}"], 6)}
        keeps = True
        if teacher_val is not None:
            y_val, teacher_pred = teacher_val
            pred = predict_logits(trainer.model, tokenizer, val_df["text"].tolist(), q.eval_batch_size,
                                  resolved["max_length"], progress=False, truncation=q.truncation).argmax(1)
            evidence = student_evidence(y_val, pred, teacher_pred, label_names, p.min_val_f1_ratio,
                                        p.selection_confidence, seed=seed)
            record.update(val_macro_f1=evidence["student_macro_f1"], val_f1_ratio=evidence["ratio"],
                          evidence=evidence)
            keeps = evidence["keeps"]
        record["shipped"] = keeps or last
        search.append(record)
        if record["shipped"]:
            break
        ev = record["evidence"]
        log.info("%s: keeps %.1f%% of its targets' validation macro-F1 (%.0f%% lower bound %.1f%%, needs %.0f%%; "
                 "classes significantly worse: %s): trying %s", key, 100 * ev["ratio"], 100 * p.selection_confidence,
                 100 * ev["ratio_lower"], 100 * p.min_val_f1_ratio, ev["classes_worse"] or "none", students[i + 1][0])
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(parents=True)
        (ckpt / VERDICT).write_text(json.dumps({"fingerprint": fp, "record": record}, sort_keys=True))
    log.info("student %s ships, best val: %s", key, best)
    extra = {} if len(students) == 1 else {"student_search": search_record(p, teacher_val, label_names, search)}
    lineage = lineage_record("distill", q, seed, {"train": args.train, "val": args.val, "teacher_logits": args.logits},
                             label_names=label_names, teacher=args.teacher, val_metrics=best,
                             train_metrics=result, train_rows=len(train_df), pruned_feed_forward=pruned,
                             resolved=resolved, teacher_targets=blend_record, **extra)
    finish(trainer, trainer.model, tokenizer, args.output, args.checkpoints, lineage)


def load_inputs(args: Any, params: Any, task: Any) -> tuple:
    """The splits, the targets for each training and validation row (in their order), the teacher and its labels;
    every student's layers checked before any of them trains (check and the teacher's stage said so already;
    this catches a teacher swapped in by hand)."""
    train_df, val_df = read_table(args.train), read_table(args.val)
    logits_df = read_table(args.logits, ["id", "logits"])
    teacher = task.load_trained(args.teacher, "teacher")
    teacher_cfg = teacher.config
    label_names = [teacher_cfg.id2label[i] for i in range(teacher_cfg.num_labels)]
    task.check_splits({"train": train_df, "val": val_df}, label_names)
    logits = train_df[["id"]].merge(logits_df, on="id", how="left")["logits"]
    val_targets = val_df[["id"]].merge(logits_df, on="id", how="left")["logits"]
    for name, got in (("training", logits), ("validation", val_targets)):
        if got.isna().any():
            raise DataError(f"{args.logits}: no teacher logits for {int(got.isna().sum())} {name} rows; "
                            "rerun the teacher_logits stage")
    problems = student_layer_problems(params, teacher_cfg.num_hidden_layers)
    if problems:
        raise ModelError("; ".join(problems))
    weight = float(logits_df["baseline_weight"].iloc[0]) if "baseline_weight" in logits_df else 0.0
    return train_df, val_df, logits, val_targets, weight, teacher, label_names


def search_record(p: DistillParams, teacher_val: tuple, label_names: list[str], tried: list[dict]) -> dict:
    """Which students were tried, and why the last of them ships (the lineage's `student_search`)."""
    return {
        "teacher_val_macro_f1": round(macro_f1_fn(len(label_names))(*teacher_val), 6),
        "min_val_f1_ratio": p.min_val_f1_ratio, "selection_confidence": p.selection_confidence,
        "rule": "a try_first student ships when the paired-bootstrap lower bound of its validation macro-F1 / the "
                "teacher's is >= min_val_f1_ratio and no class is significantly worse; the last one ships regardless",
        "tried": tried}


VERDICT = "rejected.json"


def rejected_before(ckpt: Path, fp: str) -> dict | None:
    """The record of this very student (same params, seed and data: `fp`) rejected by an earlier, interrupted run."""
    try:
        saved = json.loads((ckpt / VERDICT).read_text())
    except (OSError, ValueError):
        return None
    return saved["record"] if saved.get("fingerprint") == fp else None


def distill_one(q: DistillParams, key: str, seed: int, teacher: Any, args: Any, train_df: Any, val_df: Any,
                logits: Any, label_names: list[str], checkpoints: str, data_files: list[str], task: Any) -> tuple:
    """Build, (prune,) and distil one student; its trainer, training summary, best validation metrics, pruning
    record, tokenizer and what was resolved from the data (max_length, class weights)."""
    # Seed before the model is built: a new classification head is initialised randomly right here, before
    # Trainer seeds anything; unseeded, two runs on the same data gave different teachers.
    set_seed(seed)
    model, tokenizer = build_student(q, teacher, args.teacher, label_names, task, key)
    max_length, length_record = resolve_max_length(q, tokenizer, model.config, train_df["text"].tolist(), key, seed)
    # On auto a student reads no more than its teacher did: the teacher's targets came from those tokens alone, and
    # reading more costs the speed a student exists for (news cut to 128 tokens for the teacher: the student read
    # 256, at half the speed). q stays as set: the lineage records it and `lineage model` compares it with params.
    teacher_reads = lineage_max_length(read_lineage(args.teacher))
    if q.max_length == "auto" and max_length > teacher_reads:
        max_length, length_record = resolve_max_length(replace(q, max_length_cap=teacher_reads), tokenizer,
                                                       model.config, train_df["text"].tolist(), key, seed)
        length_record["how"] += f" (lowered from {q.max_length_cap}: the tokens the teacher read)"
    pruned = None
    if q.intermediate_size:
        sample = train_df["text"].sample(n=min(len(train_df), PRUNE_ROWS), random_state=seed).tolist()
        pruned = prune_feed_forward(model, tokenizer, read_texts(sample, tokenizer, max_length, q.truncation),
                                    q.intermediate_size, max_length)
    train_ds = task.encode(train_df, tokenizer, label_names, max_length, q.truncation,
                           extra={"teacher_logits": list(logits)})
    val_ds = task.encode(val_df, tokenizer, label_names, max_length, q.truncation, sort_by_length=True)
    weights, weight_record = task.class_weights(q.class_weights, train_ds, label_names, key)
    epochs, epochs_record = resolve_epochs(q, len(train_ds), key)
    resolved = {"max_length": max_length, "truncation": q.truncation, "length": length_record,
                "class_weights": weight_record, "epochs": epochs_record}
    trainer, result, best = fit(
        task.trainer_class(DistillationTrainer), model, tokenizer, q, seed, train_ds, val_ds, checkpoints=checkpoints,
        data_files=data_files, resume=True, live=args.live, resolved=resolved,
        trainer_kwargs={"distill": q, "teacher": teacher if q.hidden_weight > 0 else None, "class_weights": weights},
        # teacher_logits is not a model input: keep the column (encode() already dropped the text).
        remove_unused_columns=False, num_train_epochs=epochs,
        **task.fit_recipe(tokenizer, label_names, val_df, max_length),
    )
    return trainer, result, best, pruned, tokenizer, resolved


if __name__ == "__main__":
    run_stage(main)

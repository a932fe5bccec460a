"""What a `dvc repro` will cost, before it starts: the planned work and a wall-time estimate from a short probe.

`finetune check` calls it after the data checks pass. The plan is the stages' own arithmetic on the cleaned rows
(a `split.train` sample of them, as profile_notes reads it): `max_length` as train resolves it, the rows (windows,
for tokens) an epoch holds, the optimiser steps resolve_epochs plans, the students distill tries in order. The
time is measured, not assumed: the teacher is loaded on the device training would use, and a few optimiser steps
and forward passes run on real encoded rows, in a batch as long as the length-grouped batches' mean. Each stage's
time is its count of steps or batches times the probe's; a student's step is the teacher's scaled by its share of
the teacher's layer arithmetic (its layers, and its feed-forward width), plus a teacher forward pass when
`hidden_weight` runs the teacher beside it. Early stopping can end training sooner (never before min_steps), so
the training part is an upper estimate; export and evaluation are counted as forward passes over the validation
and test rows of each model they score. Each stage is a process that imports torch and transformers first: a fresh
interpreter doing so is timed once and counted per stage of dvc.yaml. The data stages' own work (seconds on
thousands of rows; the token audit's cross-validated CRF, under a minute on 2,000 sentences) is not counted.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.progress import duration

log = logging.getLogger(__name__)
PROBE_STEPS = 3  # timed optimiser steps after one warm-up: a few seconds on a CPU for a small encoder
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass
class Probe:
    step_s: float  # one optimiser step of `batch` rows (forward, backward, AdamW)
    forward_s: float  # one forward pass of the same batch, no gradients
    batch: int
    tokens: int  # the batch's width
    device: str
    layers: int
    hidden: int
    ffn: int


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    plan: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def probe(task: Any, params: Any, frame: pd.DataFrame, label_names: list[str], max_length: int) -> tuple[Probe, Any]:
    """Time PROBE_STEPS optimiser steps and forward passes of the teacher on a batch of real rows; the encoded rows
    come back too (their count and lengths are the plan's)."""
    import torch

    from pipeline.core.modeling import load_tokenizer, pick_device

    p = params.train
    tok = load_tokenizer(p.model, "train.model")
    ds = task.encode(frame, tok, label_names, max_length, p.truncation)
    lengths = np.array([len(x) for x in ds["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    at = int(np.searchsorted(lengths[order], lengths.mean()))  # a length-grouped batch near the mean width
    start = max(0, min(at - p.batch_size // 2, len(order) - p.batch_size))
    rows = [ds[int(i)] for i in order[start:start + p.batch_size]]
    collator = task.fit_recipe(tok, label_names, frame.head(2), max_length)["collator"]
    device = pick_device("auto")
    batch = {k: v.to(device) for k, v in collator(rows).items() if k in MODEL_INPUTS}
    model = task.load_model(p.model, "train.model", label_names).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=p.learning_rate)
    times = []
    model.train()
    for _ in range(PROBE_STEPS + 1):
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    model.eval()
    fwd = []
    with torch.inference_mode():
        for _ in range(PROBE_STEPS):
            t0 = time.perf_counter()
            model(**batch)
            fwd.append(time.perf_counter() - t0)
    c = model.config
    return Probe(float(np.median(times[1:])), float(np.median(fwd)), len(rows), int(batch["input_ids"].shape[1]),
                 device, c.num_hidden_layers, c.hidden_size, getattr(c, "intermediate_size", 4 * c.hidden_size)), ds


def student_share(q: Any, pr: Probe) -> tuple[float, str]:
    """A student's arithmetic per token as a share of the teacher's: layers x (attention 4h^2 + feed-forward 2hf),
    and a few words that name it."""
    if q.student:
        from transformers import AutoConfig

        from pipeline.core.modeling import resolve_model

        c = AutoConfig.from_pretrained(resolve_model(q.student, "distill.student"))
        layers, h, f = c.num_hidden_layers, c.hidden_size, getattr(c, "intermediate_size", 4 * c.hidden_size)
        name = q.student
    else:
        layers, h, f = len(q.layers), pr.hidden, q.intermediate_size or pr.ffn
        name = f"{layers}-layer student"
    share = layers * (4 * h * h + 2 * h * f) / (pr.layers * (4 * pr.hidden ** 2 + 2 * pr.hidden * pr.ffn))
    return share, name


def fit_time(p: Any, rows: int, key: str, step_s: float, forward_s: float, val_rows: int, pr: Probe
             ) -> tuple[float, int, float]:
    """(seconds, planned optimiser steps, epochs) of one training run: steps, and the evaluations between them."""
    from pipeline.core.profile import resolve_epochs

    epochs, rec = resolve_epochs(p, rows, key)
    steps = rec["planned_steps"]
    evaluations = math.ceil(steps / p.eval_steps) if p.eval_steps else math.ceil(epochs)
    per_row = forward_s / pr.batch
    return steps * step_s * p.batch_size / pr.batch + evaluations * val_rows * per_row, steps, epochs


def stage_startups() -> tuple[float, int]:
    """(seconds for a fresh interpreter to import what a stage imports, the number of stages in dvc.yaml)."""
    import subprocess
    import sys

    from pipeline.core.project import ProjectError, workspace

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, pandas, pipeline.core.io"], check=True,
                   capture_output=True)
    took = time.perf_counter() - t0
    try:
        stages = len(workspace().dvc_yaml().get("stages", {}))
    except (FileNotFoundError, ProjectError):
        stages = 0  # not in a project: nothing to count
    return took, stages


def estimate(task: Any, params: Any, kept: pd.DataFrame) -> Estimate:
    """The plan and its time on this machine for the cleaned rows `kept`."""
    from transformers import AutoConfig

    from pipeline.core.modeling import load_tokenizer, resolve_model
    from pipeline.core.profile import resolve_max_length

    p, s = params.train, params.split
    sample = kept.sample(frac=s.train, random_state=params.seed) if len(kept) > 1 else kept
    sample = sample.head(20_000)  # the probe encodes at most this many; the counts scale to the whole split
    scale = len(kept) * s.train / max(1, len(sample))
    tok = load_tokenizer(p.model, "train.model")
    config = AutoConfig.from_pretrained(resolve_model(p.model, "train.model"))
    max_length, _ = resolve_max_length(p, tok, config, sample["text"].tolist(), "train", params.seed)
    label_names = task.label_names(sample)
    pr, ds = probe(task, params, sample, label_names, max_length)
    rows = round(len(ds) * scale)  # rows, or windows, an epoch reads
    val_rows, test_rows = round(len(ds) * scale * s.val / s.train), round(len(ds) * scale * s.test / s.train)
    per_row = pr.forward_s / pr.batch
    est = Estimate()
    est.parts["teacher"], steps, epochs = fit_time(p, rows, "train", pr.step_s, pr.forward_s, val_rows, pr)
    mean_tokens = float(np.mean([len(x) for x in ds["input_ids"]]))
    est.plan.append(f"teacher ({p.model}): {steps:,} optimiser steps ({epochs:g} epochs of {rows:,} rows) of "
                    f"{p.batch_size} rows x ~{mean_tokens:.0f} tokens (max_length {max_length})")
    est.parts["teacher_logits"] = rows * per_row
    est.plan.append(f"teacher_logits: the teacher scores {rows:,} training rows")
    students = task.students(params.distill)
    for i, (key, q) in enumerate(students):
        share, name = student_share(q, pr)
        step = pr.step_s * share + (pr.forward_s if q.hidden_weight else 0.0)
        secs, st, _ = fit_time(q, rows, key, step, pr.forward_s * share, val_rows, pr)
        beside = ", the teacher beside it" if q.hidden_weight else ""
        line = f"{key} ({name}, {share:.0%} of the teacher's arithmetic{beside}): {st:,} steps, ~{duration(secs)}"
        if i == 0:
            est.parts["student"] = secs
            est.plan.append(f"distill tries {line}")
        else:
            est.fallbacks.append(f"if the students before are refused, {line} more")
    models = 3 + (len(students) > 1)  # evaluate scores teacher, student and its ONNX copy; export tries recipes
    est.parts["export_evaluate"] = (val_rows + test_rows) * per_row * models
    startup, stages = stage_startups()
    est.parts["stage_startups"] = startup * stages
    est.plan.append(f"probe: {PROBE_STEPS} optimiser steps of the teacher at {pr.step_s:.2f} s, forward "
                    f"{pr.forward_s:.2f} s, a batch of {pr.batch} x {pr.tokens} tokens on {pr.device}; {stages} "
                    f"stages start in {startup:.1f} s each")
    return est


def estimate_notes(task: Any, params: Any, kept: pd.DataFrame) -> list[str]:
    """`finetune check`'s lines: the plan, the estimate by stage, and the knobs that cut it."""
    import torch

    est = estimate(task, params, kept)
    parts = ", ".join(f"{k} {duration(v)}" for k, v in est.parts.items())
    where = "GPU" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    knobs = (f"knobs: train.max_length_cap ({params.train.max_length_cap}), train.min_steps "
             f"({params.train.min_steps}) and distill.min_steps ({params.distill.min_steps}), a smaller student "
             "(distill.layers, distill.try_first), a GPU (train.precision auto takes bf16 there)")
    return [*(f"plan: {line}" for line in est.plan + est.fallbacks),
            f"estimate on this machine ({where}): about {duration(est.total)} for the models ({parts}); early "
            "stopping may end training sooner; the data stages' own work is not counted", knobs]

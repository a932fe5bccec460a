"""The Trainer subclasses and callbacks the teacher (train) and student (distill) stages train with.

Kept apart from training.py, which only builds their arguments: this module imports transformers, torch and dvclive
when it loads, and the baseline stage, which shares training.py's helpers, needs none of them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from dvclive.plots import Metric
from dvclive.utils import standardize_metric_name
from scmrepo.exceptions import SCMError
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback
from transformers.integrations import DVCLiveCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline.core.params import FitParams
from pipeline.core.progress import Eta
from pipeline.core.training import (
    checkpoint_step,
    fingerprint,
    is_timing,
    resume_checkpoint,
    train_summary,
    training_arguments,
    truncate_curves,
)

log = logging.getLogger(__name__)


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped batches whose shuffle is a function of (seed, epoch) alone (see ResumableTrainer)."""

    seed: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)


class ResumableTrainer(Trainer):
    """Trainer with length-grouped batches drawn from a generator seeded by (data seed, epoch).

    Trainer's LengthGroupedSampler shuffles with torch's global RNG when its iterator starts; a run resumed in the
    middle of an epoch starts that iterator from another RNG state than the uninterrupted run did, so it skipped
    the wrong batches and trained a different model. Seeding by epoch makes the order a function of the epoch."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            # Trainer builds the sampler itself (with its own length bookkeeping): retype that one rather than
            # rebuilding it, so nothing but the generator differs from the stock path.
            sampler.__class__ = EpochSeededLengthSampler
            sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler.set_epoch(0)
        return sampler


class WeightedLossTrainer(ResumableTrainer):
    """The teacher's Trainer: with `class_weights` (numpy, one per class) the cross-entropy weighs each class (a
    cost-sensitive loss for imbalanced data); without, Trainer's own loss, unchanged."""

    def __init__(self, *args: Any, class_weights: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        w = torch.as_tensor(self.class_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
        # [rows, classes] for a text, [rows, positions, classes] for tokens (-100: a position with no label)
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
        loss = torch.nn.functional.cross_entropy(logits, labels.reshape(-1), weight=w, ignore_index=-100)
        return (loss, outputs) if return_outputs else loss


class CheckpointCallback(TrainerCallback):
    """A checkpoint every `every` steps besides the evaluations' (a kill loses at most that much work), and a
    loss log at every checkpoint: Trainer averages the logged loss since the last log, and restarts that
    average at a resume, so logging exactly where checkpoints are keeps a resumed run's log (and the lineage
    computed from it) identical to an uninterrupted one's."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0:
            control.should_save = True
        if control.should_save:
            control.should_log = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control


class EtaCallback(TrainerCallback):
    """A log line with the steps done, the time spent and the time left every 5% of the planned steps (see
    core/progress.py: tqdm's bar does not survive dvc repro's log capture)."""

    def __init__(self, what: str = "training") -> None:
        self.what, self.eta = what, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.eta = Eta(self.what, state.max_steps, unit="steps", start=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.eta is not None:
            self.eta.set(state.global_step)


class StepLiveCallback(DVCLiveCallback):
    """transformers' DVCLive callback, with two fixes: the curves' x-axis is the optimiser step (the stock
    callback counts log calls: a 150-step run ended at step 17), and wall-clock timings stay out of the
    metrics file, so `dvc metrics diff` of two runs of identical models shows no change."""

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero:
            return
        self.live.step = state.global_step
        logs = dict(logs or {})
        if "train_loss" in logs:  # Trainer's averages only the steps since a resume: use the whole run's
            logs["train_loss"] = train_summary(state)["train_loss"]
        logged = self.__dict__.setdefault("_logged", set())
        for key, value in logs.items():
            if is_timing(key) or not Metric.could_log(value):
                continue
            # The evaluation of the best model after training repeats the last step: it goes to the summary
            # (metrics.json shows the kept model's figures), not as a second point at that step.
            again = (key, state.global_step) in logged
            logged.add((key, state.global_step))
            self.live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value, plot=not again)
        self.live.sync()


class SafeLive(Live):
    """dvclive 3.x asks git for HEAD before checking that the repo has a commit, so a first `dvc repro` right
    after `git init` crashed; there is no experiment to attach to then anyway: log to files only."""

    def _init_dvc(self) -> None:
        try:
            super()._init_dvc()
        except SCMError as e:
            log.warning("DVCLive: %s; logging metrics and plots to files only", e)
            self._dvc_repo = None
            self._dvc_file = None


class FloorEarlyStopping(EarlyStoppingCallback):
    """Early stopping that cannot end training before `min_steps` optimiser steps (or the planned steps, if fewer).

    `min_steps` raises epochs on small data because a new head needs that many updates; early stopping judged on a
    small validation split is noisy enough to undo it: on 610 German speeches (79 validation rows) it ended a
    200-step plan after 100 steps while the validation loss was still falling. Patience is still counted from the
    start, and the best evaluation's model is still the one kept (load_best_model_at_end): a longer run only adds
    candidates."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0,
                 min_steps: int = 0):
        super().__init__(early_stopping_patience=early_stopping_patience,
                         early_stopping_threshold=early_stopping_threshold)
        self.min_steps = min_steps

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        already = control.should_training_stop  # the end of the plan, or another callback: not ours to undo
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if not already and control.should_training_stop and state.global_step < min(self.min_steps,
                                                                                     state.max_steps):
            log.info("early stopping: no better validation %s for %d evaluations, but training runs to min_steps "
                     "%d (step %d of %d)", args.metric_for_best_model, self.early_stopping_patience_counter,
                     self.min_steps, state.global_step, state.max_steps)
            control.should_training_stop = False

    def state(self) -> dict:
        out = super().state()
        out["args"]["min_steps"] = self.min_steps  # a resumed run rebuilds the callback from these
        return out


def callbacks(p: FitParams, live_dir: str | None, resumed_step: int | None, what: str = "training") -> list:
    cbs: list = [CheckpointCallback(p.checkpoint_steps), EtaCallback(what)]
    if p.early_stopping_patience:
        cbs.append(FloorEarlyStopping(early_stopping_patience=p.early_stopping_patience,
                                      min_steps=p.min_steps if p.max_steps <= 0 else 0))
    if live_dir and int(os.environ.get("RANK", "0")) == 0:
        if resumed_step is not None:
            truncate_curves(Path(live_dir), resumed_step)
        live = SafeLive(dir=live_dir, save_dvc_exp=False, dvcyaml=None, resume=resumed_step is not None)
        cbs.append(StepLiveCallback(live=live))
    return cbs


def fit(trainer_cls: type[ResumableTrainer], model: Any, tokenizer: Any, p: FitParams, seed: int, train_ds: Any,
        val_ds: Any, *, collator: Any, compute_metrics: Any, checkpoints: str, data_files: list[str], resume: bool,
        live: str | None, trainer_kwargs: dict | None = None, resolved: dict | None = None,
        **arg_overrides: Any) -> tuple[Any, Any, dict]:
    """Train (resuming this very job's checkpoints if any), then evaluate the best model on validation.
    `trainer_kwargs` go to `trainer_cls` (a ResumableTrainer: a resume must replay the same batches). The task
    supplies `collator`, `compute_metrics` and, among the overrides, `metric_for_best_model` (its fit recipe)."""
    if not issubclass(trainer_cls, ResumableTrainer):
        raise TypeError(f"{trainer_cls.__name__} must derive from ResumableTrainer")
    ckpt = Path(checkpoints)
    resume_from = resume_checkpoint(ckpt, fingerprint(p, seed, data_files, resolved), resume)
    resumed_step = checkpoint_step(resume_from) if resume_from else None
    trainer = trainer_cls(
        model=model,
        args=training_arguments(p, ckpt, seed, **arg_overrides),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=callbacks(p, live, resumed_step, what=f"training {ckpt.name}"),
        **(trainer_kwargs or {}),
    )
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer, train_summary(trainer.state), trainer.evaluate()

"""What the teacher (train) and student (distill) stages share: datasets, TrainingArguments, resume, saving.

Throughput choices (see bench/): dynamic padding per batch (DataCollatorWithPadding) and length-grouped
batches, instead of padding every row to max_length as the Hugging Face example does; on SMS-length texts
most of a 128-token batch would be padding.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.io import DataError, file_md5, stable_id
from pipeline.modeling import classification_metrics, precision_flags
from pipeline.params import FitParams, as_dict, launcher_prefix

log = logging.getLogger(__name__)

LINEAGE_FILE = "lineage.json"


def label_names_of(train: pd.DataFrame) -> list[str]:
    return sorted(train["label"].unique().tolist())


def check_splits(splits: dict[str, pd.DataFrame], label_names: list[str]) -> None:
    """Fail before any model is loaded: empty splits, or labels the model would never have seen."""
    for name, df in splits.items():
        if df.empty:
            raise DataError(f"{name} split is empty: the data is too small for the split ratios")
        unseen = sorted(set(df["label"]) - set(label_names))
        if unseen:
            raise DataError(f"{name} split has label(s) {unseen} never seen in the train split {label_names}")
    if len(label_names) < 2:
        raise DataError(f"train split has a single class {label_names}: nothing to learn")


def encode(df: pd.DataFrame, tokenizer: Any, label_names: list[str], max_length: int,
           extra: dict[str, list] | None = None, sort_by_length: bool = False) -> Any:
    """A `datasets.Dataset` of token ids (unpadded: the collator pads each batch) and integer labels.

    `sort_by_length` is for evaluation sets: metrics do not depend on order, and sorted batches need little padding.
    """
    import datasets

    label2id = {n: i for i, n in enumerate(label_names)}
    data = {"text": df["text"].tolist(), "label": [label2id[x] for x in df["label"]], **(extra or {})}
    ds = datasets.Dataset.from_dict(data)
    ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True,
                remove_columns=["text"], desc="tokenise")
    if sort_by_length:
        ds = ds.select(np.argsort([len(x) for x in ds["input_ids"]], kind="stable"))
    return ds


def compute_metrics_fn(label_names: list[str]):
    def compute(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        m = classification_metrics(np.asarray(pred.label_ids), np.argmax(logits, axis=-1), label_names)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}

    return compute


def training_arguments(p: FitParams, output_dir: Path, seed: int, **overrides: Any) -> Any:
    import torch
    from transformers import TrainingArguments

    if p.num_threads:
        torch.set_num_threads(p.num_threads)
    strategy = "steps" if p.eval_steps else "epoch"
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=p.epochs,
        max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.eval_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        learning_rate=p.learning_rate,
        weight_decay=p.weight_decay,
        warmup_steps=p.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type=p.lr_scheduler,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=p.eval_steps or None,
        save_steps=p.eval_steps or None,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        train_sampling_strategy="group_by_length" if p.group_by_length else "random",
        logging_steps=10,
        logging_first_step=True,
        report_to=[],  # DVCLive is added explicitly, writing where dvc.yaml expects it
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **precision_flags(p.precision),
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Under torchrun without a GPU, accelerate sets up DDP (gloo) only when told the run is on CPU;
        # otherwise every rank silently trains alone on all the data.
        kwargs["use_cpu"] = True
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def launch_argv(launcher: str, module: str, args: list[str]) -> list[str] | None:
    """The argument list that runs `module` under `launcher`, or None to run it in this process (never a shell)."""
    prefix = launcher_prefix(launcher)
    return None if prefix is None else [*prefix, "-m", module, *args]


def relaunch_if_needed(launcher: str, module: str, args: list[str]) -> None:
    """Called at the start of a stage: under a launcher param, start the same stage under it and exit with its
    status. A process that a launcher started (it has LOCAL_RANK) runs the stage itself."""
    if "LOCAL_RANK" in os.environ:
        return
    argv = launch_argv(launcher, module, args)
    if argv is None:
        return
    log.info("launching: %s", " ".join(shlex.quote(a) for a in argv))
    sys.exit(subprocess.run(argv, check=False).returncode)


def callbacks(p: FitParams, live_dir: str | None) -> list:
    from transformers import EarlyStoppingCallback

    cbs: list = []
    if p.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=p.early_stopping_patience))
    if live_dir and int(os.environ.get("RANK", "0")) == 0:
        cbs.append(_step_live_callback()(live=_live_class()(dir=live_dir, save_dvc_exp=False, dvcyaml=None)))
    return cbs


def is_timing(key: str) -> bool:
    """Wall-clock figures (Trainer's `*_runtime`, `*_per_second`): they differ between identical runs."""
    return key.endswith(("runtime", "_per_second"))


def _step_live_callback() -> type:
    from transformers.integrations import DVCLiveCallback

    class StepLiveCallback(DVCLiveCallback):
        """transformers' DVCLive callback, with two fixes: the curves' x-axis is the optimiser step (the stock
        callback counts log calls: a 150-step run ended at step 17), and wall-clock timings stay out of the
        metrics file, so `dvc metrics diff` of two runs of identical models shows no change."""

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if not self._initialized:
                self.setup(args, state, model)
            if not state.is_world_process_zero:
                return
            from dvclive.plots import Metric
            from dvclive.utils import standardize_metric_name

            self.live.step = state.global_step
            logged = self.__dict__.setdefault("_logged", set())
            for key, value in (logs or {}).items():
                if is_timing(key) or not Metric.could_log(value):
                    continue
                # The evaluation of the best model after training repeats the last step: it goes to the summary
                # (metrics.json shows the kept model's figures), not as a second point at that step.
                again = (key, state.global_step) in logged
                logged.add((key, state.global_step))
                self.live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value, plot=not again)
            self.live.sync()

    return StepLiveCallback


def _live_class() -> type:
    from dvclive import Live
    from scmrepo.exceptions import SCMError

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

    return SafeLive


def fingerprint(params: Any, seed: int, data_files: list[str]) -> str:
    """Identifies one training job: resume only from checkpoints of the very same params and data."""
    return stable_id(json.dumps(as_dict(params), sort_keys=True), seed, *[file_md5(f) for f in data_files])


def resume_checkpoint(checkpoint_dir: Path, fp: str, enabled: bool) -> bool:
    """True if `checkpoint_dir` holds checkpoints of this same job; otherwise start it afresh."""
    stamp = checkpoint_dir / "fingerprint"
    has_ckpt = any(checkpoint_dir.glob("checkpoint-*"))
    if enabled and has_ckpt and stamp.is_file() and stamp.read_text().strip() == fp:
        log.info("resuming from the last checkpoint in %s", checkpoint_dir)
        return True
    # Only the main process touches the folder (under torchrun every rank gets here); the others reach the same
    # decision, since a job that resumes deletes nothing.
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fp)
    return False


def save_model(trainer: Any, model: Any, tokenizer: Any, out_dir: Path, lineage: dict) -> None:
    """Save on the main process only, to a temporary folder renamed into place (never half-written)."""
    from pipeline.io import atomic_path

    if not trainer.is_world_process_zero():
        return
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")


def fit(trainer_cls: type, model: Any, tokenizer: Any, p: FitParams, seed: int, train_ds: Any, val_ds: Any,
        label_names: list[str], *, checkpoints: str, data_files: list[str], resume: bool, live: str | None,
        **arg_overrides: Any) -> tuple[Any, Any, dict]:
    """Train (resuming this very job's checkpoints if any), then evaluate the best model on validation."""
    from transformers import DataCollatorWithPadding

    ckpt = Path(checkpoints)
    resuming = resume_checkpoint(ckpt, fingerprint(p, seed, data_files), resume)
    trainer = trainer_cls(
        model=model,
        args=training_arguments(p, ckpt, seed, **arg_overrides),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics_fn(label_names),
        callbacks=callbacks(p, live),
    )
    result = trainer.train(resume_from_checkpoint=resuming or None)
    return trainer, result, trainer.evaluate()


def finish(trainer: Any, model: Any, tokenizer: Any, output: str, checkpoints: str, lineage: dict) -> None:
    """Save the model with its lineage (main process only), then drop the finished job's checkpoints."""
    args = trainer.args
    lineage.update(world_size=args.world_size, precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32")
    save_model(trainer, model, tokenizer, Path(output), lineage)
    if trainer.is_world_process_zero():
        shutil.rmtree(checkpoints, ignore_errors=True)  # the next run of this job starts from scratch


def _without_timings(value: Any) -> Any:
    """Drop wall-clock figures: a model folder's hash must depend only on params, data and seed."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not is_timing(k)}
    return value


def lineage_record(stage: str, params: Any, seed: int, data_files: dict[str, str], **extra: Any) -> dict:
    extra = {k: _without_timings(v) for k, v in extra.items()}
    return {
        "stage": stage,
        "seed": seed,
        "params": as_dict(params),
        "data": {name: {"path": path, "md5": file_md5(path)} for name, path in data_files.items()},
        **extra,
    }

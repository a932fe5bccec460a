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

from pipeline.core.io import DataError, file_md5, stable_id, write_lineage
from pipeline.core.metrics import classification_metrics, encode_labels
from pipeline.core.modeling import precision_flags
from pipeline.core.params import FitParams, launcher_prefix, result_params

log = logging.getLogger(__name__)



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
           extra: dict[str, list] | None = None, sort_by_length: bool = False, truncation: str = "head") -> Any:
    """A `datasets.Dataset` of token ids (unpadded: the collator pads each batch) and integer labels; a text longer
    than `max_length` tokens is cut as `truncation` says (modeling.read_texts).

    `sort_by_length` is for evaluation sets: metrics do not depend on order, and sorted batches need little padding.
    """
    import datasets

    from pipeline.core.modeling import read_texts

    data = {"text": read_texts(df["text"].tolist(), tokenizer, max_length, truncation),
            "label": encode_labels(df["label"], label_names, "training rows").tolist(), **(extra or {})}
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


def truncate_curves(live_dir: Path, step: int) -> None:
    """Resuming at `step`: keep the curves' points up to it (the run logged past it before the kill, and will log
    those steps again), so the resumed curves continue the earlier ones without duplicates."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        col = lines[0].rstrip("\n").split("\t").index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) <= step]
        tsv.write_text("".join(kept))


def train_summary(state: Any) -> dict:
    """Training loss and progress from the log history (restored from the checkpoint at a resume), so it is the
    same for a resumed run; Trainer's own `train_loss` averages only the steps since the resume."""
    losses = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h]
    total, prev = 0.0, 0
    for step, loss in losses:
        total, prev = total + loss * (step - prev), step
    return {"train_loss": total / prev if prev else None, "global_step": state.global_step,
            "epoch": state.epoch}


def is_timing(key: str) -> bool:
    """Wall-clock figures (Trainer's `*_runtime`, `*_per_second`): they differ between identical runs."""
    return key.endswith(("runtime", "_per_second"))


def fingerprint(params: Any, seed: int, data_files: list[str], resolved: dict | None = None) -> str:
    """Identifies one training job: resume only from checkpoints of the very same params, data and `resolved`
    settings (what `auto` became: a code change that makes a job read other tokens must not resume it; a 256-token
    checkpoint was resumed at 128 once). A student search's other candidates (`try_first`) are not part of a job:
    editing a later one neither restarts nor re-judges an earlier one."""
    own = {k: v for k, v in result_params(params).items() if k != "try_first"}
    return stable_id(json.dumps(own, sort_keys=True), seed, *[file_md5(f) for f in data_files],
                     json.dumps(resolved or {}, sort_keys=True, default=str))


WEIGHTS = ("model.safetensors", "adapter_model.safetensors")
STATE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def complete(ckpt: Path) -> bool:
    """Trainer writes a checkpoint's weights, optimizer, scheduler and RNG state, and its trainer_state.json last:
    a checkpoint is complete when all are there and the state file parses (a kill mid-save leaves it short)."""
    if not all((ckpt / f).is_file() for f in STATE_FILES) or not any((ckpt / w).is_file() for w in WEIGHTS):
        return False
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (ValueError, OSError):
        return False
    return True


def checkpoint_step(ckpt: Path) -> int:
    try:
        return int(ckpt.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def resume_checkpoint(checkpoint_dir: Path, fp: str, enabled: bool) -> Path | None:
    """The newest complete checkpoint of this same job, or None to start it afresh.

    Incomplete checkpoints (a kill while saving) are deleted and logged; a folder of another job (other params,
    seed or data) is emptied."""
    stamp = checkpoint_dir / "fingerprint"
    main_process = int(os.environ.get("RANK", "0")) == 0
    if enabled and stamp.is_file() and stamp.read_text().strip() == fp:
        best = None
        for ckpt in sorted(checkpoint_dir.glob("checkpoint-*"), key=checkpoint_step, reverse=True):
            if best is None and complete(ckpt):
                best = ckpt
            elif best is None:
                log.warning("%s is incomplete (killed while saving?): discarded", ckpt)
                if main_process:
                    shutil.rmtree(ckpt, ignore_errors=True)
        if best is not None:
            log.info("resuming from %s", best)
            return best
    # Only the main process touches the folder (under torchrun every rank gets here); the others reach the same
    # decision, since a job that resumes deletes nothing it resumes from.
    if main_process:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fp)
    return None


def save_model(trainer: Any, model: Any, tokenizer: Any, out_dir: Path, lineage: dict) -> None:
    """Save on the main process only, to a temporary folder renamed into place (never half-written)."""
    from pipeline.core.io import atomic_path

    if not trainer.is_world_process_zero():
        return
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_lineage(tmp, lineage)


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
        "params": result_params(params),
        "data": {name: {"path": path, "md5": file_md5(path)} for name, path in data_files.items()},
        **extra,
    }

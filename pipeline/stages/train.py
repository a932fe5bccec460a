"""train: data/processed/{train,val}.parquet -> data/models/teacher (params: seed, train).

Fine-tunes the teacher with `transformers.Trainer`: dynamic padding, length-grouped batches, early stopping on
validation macro-F1, optional class-weighted loss (weights from the train split), optional freezing of the
embeddings / lower layers, optional LoRA (merged into the saved weights), bf16/fp16 on a GPU that supports it,
resume from the last checkpoint of the same job, DVCLive curves. Runs unchanged under
`torchrun --nproc_per_node N -m pipeline.stages.train …`: set `train.launcher` and the stage starts itself under it
(an argument list, never a shell; see training.launch_argv).
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from transformers import set_seed

from pipeline.core.checks import check_student_layers
from pipeline.core.io import read_table, run_stage, setup_logging, stage_args
from pipeline.core.modeling import ModelError, encoder_layers, load_tokenizer
from pipeline.core.params import TrainParams, load_params
from pipeline.core.profile import (
    class_weights,  # noqa: F401 - re-exported: the teacher's weights are the ones this module documents
    resolve_epochs,
    resolve_max_length,
)
from pipeline.core.tasks import task_for
from pipeline.core.trainers import WeightedLossTrainer, fit
from pipeline.core.training import finish, lineage_record, relaunch_if_needed

log = logging.getLogger(__name__)


def build_model(p: TrainParams, label_names: list[str], task: Any) -> Any:
    model = task.load_model(
        p.model, "train.model", label_names,
        ignore_mismatched_sizes=True,  # a checkpoint with a head for other labels gets a new head
    )
    if p.freeze_layers > model.config.num_hidden_layers:
        n = model.config.num_hidden_layers
        raise ModelError(f"train.freeze_layers: {p.freeze_layers} > the model's {n} layers")
    if p.freeze_embeddings:
        for param in model.base_model.embeddings.parameters():
            param.requires_grad = False
    if p.freeze_layers:
        for layer in list(encoder_layers(model))[: p.freeze_layers]:
            for param in layer.parameters():
                param.requires_grad = False
    if p.lora.enabled:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType[task.peft_task_type], r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
            target_modules=p.lora.target_modules,
        ))
    return model


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "train", "val", "output", "checkpoints", "live", argv=argv)
    params = load_params(args.params)
    p, seed = params.train, params.seed
    relaunch_if_needed(p.launcher, "pipeline.stages.train", sys.argv[1:] if argv is None else argv)
    task = task_for(params)
    train_df, val_df = read_table(args.train), read_table(args.val)
    label_names = task.label_names(train_df)
    task.check_splits({"train": train_df, "val": val_df}, label_names)

    # Seed before the model is built: a new classification head is initialised randomly right here, before
    # Trainer seeds anything; unseeded, two runs on the same data gave different teachers.
    set_seed(seed)
    tokenizer = load_tokenizer(p.model, "train.model")
    model = build_model(p, label_names, task)
    check_student_layers(params, model.config.num_hidden_layers)  # before training, not after
    max_length, length_record = resolve_max_length(p, tokenizer, model.config, train_df["text"].tolist(),
                                                   "train", seed)
    train_ds = task.encode(train_df, tokenizer, label_names, max_length, p.truncation)
    val_ds = task.encode(val_df, tokenizer, label_names, max_length, p.truncation, sort_by_length=True)
    weights, weight_record = task.class_weights(p.class_weights, train_ds, label_names, "train")
    epochs, epochs_record = resolve_epochs(p, len(train_ds), "train")
    resolved = {"max_length": max_length, "truncation": p.truncation, "length": length_record,
                "class_weights": weight_record, "epochs": epochs_record}

    trainer, result, best = fit(
        task.trainer_class(WeightedLossTrainer), model, tokenizer, p, seed, train_ds, val_ds,
        checkpoints=args.checkpoints, data_files=[args.train, args.val], resume=p.resume, live=args.live,
        trainer_kwargs={"class_weights": weights}, num_train_epochs=epochs, resolved=resolved,
        **task.fit_recipe(tokenizer, label_names, val_df, max_length),
    )
    log.info("train: %s; best val: %s", result, best)
    final = trainer.model.merge_and_unload() if p.lora.enabled else trainer.model
    lineage = lineage_record("train", p, seed, {"train": args.train, "val": args.val}, label_names=label_names,
                             base_model=p.model, val_metrics=best, train_metrics=result,
                             train_rows=len(train_df), resolved=resolved)
    finish(trainer, final, tokenizer, args.output, args.checkpoints, lineage)

if __name__ == "__main__":
    run_stage(main)

"""train: data/processed/{train,val}.parquet -> data/models/teacher (params: seed, train).

Fine-tunes the teacher with `transformers.Trainer`: dynamic padding, length-grouped batches, early stopping on
validation macro-F1, optional class-weighted loss (weights from the train split), optional freezing of the
embeddings / lower layers, optional LoRA (merged into the saved weights), bf16/fp16 on a GPU that supports it,
resume from the last checkpoint of the same job, DVCLive curves. Runs unchanged under
`torchrun --nproc_per_node N -m pipeline.train …` (set train.launcher).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import read_table, setup_logging
from pipeline.modeling import ModelError, load_classifier, load_tokenizer
from pipeline.params import TrainParams, load_params
from pipeline.training import (callbacks, check_splits, compute_metrics_fn, encode, fingerprint, label_names_of,
                               lineage_record, resume_checkpoint, save_model, training_arguments)

log = logging.getLogger(__name__)


def class_weights(labels: list[int], n_classes: int) -> np.ndarray:
    """'balanced' weights, n_samples / (n_classes * count), as scikit-learn computes them."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return len(labels) / (n_classes * np.maximum(counts, 1))


def weighted_trainer_class(weights: np.ndarray | None) -> type:
    import torch
    from transformers import Trainer

    if weights is None:
        return Trainer

    class WeightedLossTrainer(Trainer):
        """Trainer whose cross-entropy weighs each class (a cost-sensitive loss for imbalanced data)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            w = torch.as_tensor(weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=w)
            return (loss, outputs) if return_outputs else loss

    return WeightedLossTrainer


def encoder_layers(model: Any) -> Any:
    """The transformer's ModuleList of layers (BERT/RoBERTa `encoder.layer`, DistilBERT `transformer.layer`, …)."""
    import torch

    n = model.config.num_hidden_layers
    for _, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ModelError(f"cannot find the {n} transformer layers of {type(model).__name__}")


def build_model(p: TrainParams, label_names: list[str]) -> Any:
    model = load_classifier(
        p.model, "train.model", num_labels=len(label_names),
        id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)},
        ignore_mismatched_sizes=True,  # a checkpoint with a head for other labels gets a new head
    )
    if p.freeze_layers > model.config.num_hidden_layers:
        raise ModelError(f"train.freeze_layers: {p.freeze_layers} > the model's {model.config.num_hidden_layers} layers")
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
            task_type=TaskType.SEQ_CLS, r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
            target_modules=p.lora.target_modules,
        ))
    return model


def precision_name(args: Any) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("params", "train", "val", "output", "checkpoints", "live"):
        ap.add_argument(f"--{name}", required=name != "params", default="params.yaml" if name == "params" else None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(argv)
    params = load_params(args.params)
    p, seed = params.train, params.seed
    train_df, val_df = read_table(args.train), read_table(args.val)
    label_names = label_names_of(train_df)
    check_splits({"train": train_df, "val": val_df}, label_names)

    tokenizer = load_tokenizer(p.model, "train.model")
    model = build_model(p, label_names)
    train_ds = encode(train_df, tokenizer, label_names, p.max_length)
    val_ds = encode(val_df, tokenizer, label_names, p.max_length, sort_by_length=True)
    weights = class_weights(train_ds["label"], len(label_names)) if p.class_weights else None
    if weights is not None:
        log.info("class weights %s", dict(zip(label_names, weights.round(3))))

    ckpt = Path(args.checkpoints)
    fp = fingerprint(p, seed, [args.train, args.val])
    resume = resume_checkpoint(ckpt, fp, p.resume)
    from transformers import DataCollatorWithPadding

    trainer = weighted_trainer_class(weights)(
        model=model,
        args=training_arguments(p, ckpt, seed),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics_fn(label_names),
        callbacks=callbacks(p, args.live),
    )
    result = trainer.train(resume_from_checkpoint=resume or None)
    best = trainer.evaluate()
    log.info("train: %s; best val: %s", result.metrics, best)
    final = trainer.model.merge_and_unload() if p.lora.enabled else trainer.model
    lineage = lineage_record("train", p, seed, {"train": args.train, "val": args.val}, label_names=label_names,
                             base_model=p.model, val_metrics=best, train_metrics=result.metrics,
                             train_rows=len(train_df), world_size=trainer.args.world_size,
                             precision=precision_name(trainer.args))
    save_model(trainer, final, tokenizer, Path(args.output), lineage)
    if trainer.is_world_process_zero():
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)  # finished: the next run of this job starts from scratch


if __name__ == "__main__":
    main()

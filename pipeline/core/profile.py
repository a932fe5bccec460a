"""What a dataset looks like to the model and the baseline, and the settings chosen from it.

Tokenizer coverage, script, class balance, token lengths; `max_length: auto`, `class_weights: auto` and the
baseline's `analyzer: auto` are resolved here. Used by `check` (before any training, with the very functions the
stages run) and by train, distill, baseline and evaluate. Each measurement reads a seeded sample, so the cost stays
flat as rows grow.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.core.params import FitParams

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5_000
# Below this share of whitespace characters the text does not separate words with spaces (Chinese, Japanese, Thai):
# measured 0.15-0.18 on English SMS, news and German speeches, 0.11 on tweets (URLs), 0.0 on Chinese reviews.
WORD_SPACE_SHARE = 0.05
# Tokenizer coverage (bundled MiniLM, uncased English WordPiece), characters per token: English SMS 2.8, English news
# 4.0, English tweets 2.6, German speeches 2.5; Russian, Greek and Arabic 1.0 (spelled letter by letter); Chinese 71%
# unknown tokens, Thai 100%.
POOR_CHARS_PER_TOKEN = 1.5
SPLIT_CHARS_PER_TOKEN = 2.5
POOR_UNKNOWN_SHARE = 0.01
# A class with fewer training rows than this is learned from too few examples to trust its F1 (nor its test score,
# which rests on a tenth as many rows).
SMALL_CLASS_ROWS = 20


def sample(texts: list[str], n: int = SAMPLE_ROWS, seed: int = 0) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in idx]


def space_share(texts: list[str]) -> float:
    chars = sum(len(t) for t in texts)
    return sum(sum(c.isspace() for c in t) for t in texts) / chars if chars else 0.0


def words_separated(texts: list[str]) -> bool:
    """Does this text separate words with spaces? (A word analyzer sees a Chinese clause as one token.)"""
    return space_share(sample(texts)) >= WORD_SPACE_SHARE


def tokenizer_coverage(tokenizer: Any, texts: list[str]) -> dict:
    """Share of unknown tokens and characters (spaces excluded) per token, on a sample, no special tokens."""
    texts = sample(texts)
    ids = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    n = sum(len(x) for x in ids)
    unk_id = tokenizer.unk_token_id
    unk = sum(x.count(unk_id) for x in ids) if unk_id is not None else 0
    chars = sum(len("".join(t.split())) for t in texts)
    return {"rows": len(texts), "tokens": n, "unknown_share": round(unk / n, 4) if n else 0.0,
            "chars_per_token": round(chars / n, 2) if n else 0.0}


def coverage_warning(cov: dict, model: str) -> str | None:
    """A sentence for the user when the tokenizer covers the text poorly, else None."""
    if not cov.get("tokens"):
        return None
    unk, cpt = cov["unknown_share"], cov["chars_per_token"]
    if unk > POOR_UNKNOWN_SHARE or cpt < POOR_CHARS_PER_TOKEN:
        return (f"the tokenizer of {model} covers this text poorly: {unk:.1%} unknown tokens, {cpt:.2f} characters "
                f"per token (English text: 2.6-4.0, no unknown tokens); the model has not learned this language. "
                "Use a multilingual model (train.model, e.g. a multilingual MiniLM, XLM-R or mBERT) or one "
                "trained on your language (docs/your-data.md)")
    if cpt < SPLIT_CHARS_PER_TOKEN:
        return (f"the tokenizer of {model} splits many words of this text into pieces ({cpt:.2f} characters per "
                "token; English text: 2.6-4.0): if it is not English, a model trained on its language will "
                "likely do better")
    return None


def class_balance(counts: dict[str, int], train_share: float) -> dict:
    """Largest/smallest ratio and the classes too small to learn, from rows per class before the split."""
    if not counts:
        return {"classes": 0}
    values = list(counts.values())
    small = {k: v for k, v in counts.items() if v * train_share < SMALL_CLASS_ROWS}
    return {"classes": len(counts), "largest": max(values), "smallest": min(values),
            "ratio": round(max(values) / max(min(values), 1), 2), "small": small}


# ---------------------------------------------------------------------------------------------- settings from data
# class_weights: auto turns the weighted loss on at this ratio of the largest training class to the smallest. Measured
# (docs/your-data.md, "Imbalance", bench/results/ABLATION.md): at 2.3:1 (tweets) weighting changed nothing; at 7:1
# (SMS) it was better or no different; at 100:1 over 16 classes it is the difference between learning the small
# classes or not.
AUTO_CLASS_WEIGHT_RATIO = 3.0
# max_length: auto reads enough tokens for this share of the training rows, in multiples of 64, never fewer than
# AUTO_MAX_LENGTH_FLOOR (below it truncation saves nothing: batches are padded only to their longest row).
AUTO_MAX_LENGTH_COVER = 0.99
AUTO_MAX_LENGTH_FLOOR = 128
LENGTH_SAMPLE_ROWS = 20_000  # token lengths are measured on a seeded sample: cost flat as rows grow


def class_weights(labels: list[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """'balanced' weights, n_samples / (n_classes * count), as scikit-learn computes them."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    return len(labels) / (n_classes * np.maximum(counts, 1))


def class_weights_on(setting: bool | str, ratio: float) -> bool:
    """Is the loss class-weighted? `setting` true/false, or auto: at AUTO_CLASS_WEIGHT_RATIO or more."""
    return setting if isinstance(setting, bool) else ratio >= AUTO_CLASS_WEIGHT_RATIO


def resolve_class_weights(setting: bool | str, labels: list[int], label_names: list[str], key: str
                          ) -> tuple[np.ndarray | None, dict]:
    """The class weights of the loss (None: unweighted) and the record of the decision for the lineage."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(label_names))
    ratio = float(counts.max() / max(counts.min(), 1))
    on = class_weights_on(setting, ratio)
    weights = class_weights(labels, len(label_names)) if on else None
    record = {"setting": setting, "used": bool(on), "imbalance_ratio": round(ratio, 3),
              "rule": f"auto: on when largest/smallest training class >= {AUTO_CLASS_WEIGHT_RATIO:g}",
              "weights": None if weights is None else {n: round(float(w), 4) for n, w in zip(label_names, weights)}}
    log.info("%s.class_weights %s: largest/smallest class %.1f -> %s", key, setting, ratio,
             record["weights"] or "unweighted")
    return weights, record


def model_max_tokens(tokenizer: Any, config: Any = None) -> int:
    """The longest input the model takes: the tokenizer's model_max_length where it is set (transformers puts a
    huge sentinel when it is not), and the config's position embeddings (RoBERTa's 514 include 2 offsets)."""
    limits = [int(tokenizer.model_max_length)] if 0 < tokenizer.model_max_length < 1_000_000 else []
    n = getattr(config, "max_position_embeddings", None) if config is not None else None
    if n:
        limits.append(int(n) - (2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert")
                                else 0))
    return min(limits) if limits else 512


def token_lengths(tokenizer: Any, texts: list[str], seed: int = 0, sample: int = LENGTH_SAMPLE_ROWS) -> np.ndarray:
    """Token counts (special tokens included) of `texts`, or of a seeded sample of `sample` of them."""
    if len(texts) > sample:
        idx = np.random.default_rng(seed).choice(len(texts), size=sample, replace=False)
        texts = [texts[i] for i in np.sort(idx)]
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "longer than the maximum sequence length": that is the point
    try:
        out = []
        for start in range(0, len(texts), 1000):
            out += [len(x) for x in tokenizer(texts[start:start + 1000], truncation=False)["input_ids"]]
    finally:
        transformers.logging.set_verbosity(verbosity)
    return np.asarray(out, dtype=np.int64)


def length_report(lengths: np.ndarray, max_length: int) -> dict:
    """What reading `max_length` tokens per text does to these texts: the distribution and what is cut."""
    if not len(lengths):
        return {"rows": 0}
    over = lengths > max_length
    return {"rows": int(len(lengths)), "max_length": int(max_length),
            "percentiles": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)} | {
                "max": int(lengths.max())},
            "truncated_rows": round(float(over.mean()), 4),
            "tokens_not_read": round(float(np.maximum(lengths - max_length, 0).sum() / lengths.sum()), 4)}


def resolve_epochs(p: FitParams, train_rows: int, key: str, world_size: int | None = None) -> tuple[float, dict]:
    """The epochs to train (p.epochs, raised on small data until there are p.min_steps optimiser steps, at most
    p.max_epochs) and the record for the lineage."""
    import math
    import os

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    per_step = p.batch_size * p.gradient_accumulation_steps * world
    steps_per_epoch = max(1, math.ceil(train_rows / per_step))
    epochs = float(p.epochs)
    if p.max_steps <= 0 and p.min_steps and steps_per_epoch * epochs < p.min_steps:
        epochs = float(max(epochs, min(math.ceil(p.min_steps / steps_per_epoch), p.max_epochs)))
    record = {"setting": p.epochs, "value": epochs, "steps_per_epoch": steps_per_epoch,
              "planned_steps": p.max_steps if p.max_steps > 0 else math.ceil(steps_per_epoch * epochs),
              "rule": f"at least {key}.min_steps {p.min_steps} optimiser steps, at most {key}.max_epochs "
                      f"{p.max_epochs:g} epochs; early stopping may end sooner, not before min_steps"}
    if epochs != p.epochs:
        log.info("%s.epochs %g -> %g: %d rows make %d optimiser steps per epoch, %s.min_steps is %d", key, p.epochs,
                 epochs, train_rows, steps_per_epoch, key, p.min_steps)
    return epochs, record


def resolve_max_length(p: FitParams, tokenizer: Any, config: Any, texts: list[str], key: str, seed: int = 0
                       ) -> tuple[int, dict]:
    """`max_length` as a number (auto: from the training rows' token lengths) and the record for the lineage."""
    limit = model_max_tokens(tokenizer, config)
    lengths = token_lengths(tokenizer, texts, seed)
    if p.max_length == "auto":
        cover = int(np.percentile(lengths, 100 * AUTO_MAX_LENGTH_COVER)) if len(lengths) else 0
        want = max(AUTO_MAX_LENGTH_FLOOR, -(-cover // 64) * 64)
        value = min(want, limit, p.max_length_cap)
        how = (f"auto: {want} tokens cover {AUTO_MAX_LENGTH_COVER:.0%} of the training rows; model limit {limit}, "
               f"{key}.max_length_cap {p.max_length_cap}")
    else:
        value = int(p.max_length)
        if value > limit:
            from pipeline.core.modeling import ModelError

            raise ModelError(f"{key}.max_length: {value} is more than the model reads ({limit} tokens); use auto "
                             f"or at most {limit}")
        how = "set in params"
    record = {"setting": p.max_length, "value": value, "how": how, **length_report(lengths, value)}
    log.info("%s.max_length %s -> %d (%s); %.1f%% of the training rows are cut, %.1f%% of their tokens not read",
             key, p.max_length, value, how, 100 * record.get("truncated_rows", 0), 100 * record.get(
                 "tokens_not_read", 0))
    return value, record

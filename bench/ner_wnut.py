"""Does a fine-tuned encoder beat the CRF on entity F1? The token task's first measurement (issue 33), on the real
WNUT-16 tweets, before any stage is wired: the CRF baseline (pipeline/core/crf.py) and a MiniLM token classifier
trained with the pipeline's own Trainer machinery (pipeline/core/token_training.py, trainers.fit: min_steps, early
stopping on validation entity F1) on one hash split of the de-duplicated tweets, both scored on the same test
sentences: entity F1 with bootstrap CIs over sentences and the paired difference.

    python -m bench.ner_wnut            # about 6 minutes on 2 cores; writes bench/results/ner_wnut.json, NER_WNUT.md
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import time

from bench.common import OUT, ROOT, fmt_ci, fmt_diff, measured, record
from bench.corpora import wnut16

WORK = ROOT / "bench" / "work" / "ner_wnut"
STEM = "ner_wnut"


def hash_split(frame, seed: int = 42):
    """80/10/10 by a hash of each sentence's words: a sentence's split never depends on the others."""
    u = frame["tokens"].map(lambda t: int(hashlib.sha1(f"{seed}\x1f{' '.join(t)}".encode()).hexdigest()[:12], 16)
                            / 16 ** 12)
    return frame[u < 0.8], frame[(u >= 0.8) & (u < 0.9)], frame[u >= 0.9]


def load(seed: int):
    from pipeline.core.token_io import read_tokens

    table = read_tokens(wnut16())
    frame = table.frame
    repeats = frame["tokens"].map(lambda t: " ".join(t).lower()).duplicated()
    return hash_split(frame[~repeats].reset_index(drop=True), seed), int(repeats.sum())


def crf_counts(train, test):
    from pipeline.core.crf import CrfTagger, train_crf
    from pipeline.core.entities import entity_counts

    WORK.mkdir(parents=True, exist_ok=True)
    path, start = WORK / "model.crfsuite", time.perf_counter()
    train_crf(train["tokens"].tolist(), train["tags"].tolist(), path)
    seconds = time.perf_counter() - start
    tagger = CrfTagger(path)
    return entity_counts(test["tags"].tolist(), [tagger.tag(w) for w in test["tokens"]]), seconds


def teacher_counts(train, val, test, seed: int, max_length: int, stride: int):
    from transformers import set_seed

    from pipeline.core.entities import entity_counts
    from pipeline.core.metrics import label_config
    from pipeline.core.modeling import load_token_classifier, load_tokenizer
    from pipeline.core.params import TrainParams
    from pipeline.core.profile import resolve_epochs
    from pipeline.core.tags import bio_labels
    from pipeline.core.token_encoding import predicted_tags
    from pipeline.core.token_training import (
        PRIMARY,
        TokenTrainer,
        collator,
        encode_frame,
        metrics_fn,
        predict_word_logits,
        window_dataset,
    )
    from pipeline.core.trainers import fit

    p = TrainParams()
    names = bio_labels(train["tags"].tolist())
    set_seed(seed)
    tok = load_tokenizer(p.model, "train.model")
    model = load_token_classifier(p.model, "train.model", **label_config(names))
    train_enc = encode_frame(train, tok, names, max_length, stride)
    val_enc = encode_frame(val, tok, names, max_length, stride, with_labels=True)
    epochs, plan = resolve_epochs(p, len(train_enc.sentence), "train")
    shutil.rmtree(WORK / "ckpt", ignore_errors=True)
    start = time.perf_counter()
    trainer, result, best = fit(TokenTrainer, model, tok, p, seed, window_dataset(train_enc),
                                window_dataset(val_enc), checkpoints=str(WORK / "ckpt"), data_files=[],
                                resume=False, live=None, collator=collator(tok),
                                compute_metrics=metrics_fn(val_enc, val["tags"].tolist(), names),
                                metric_for_best_model=PRIMARY, num_train_epochs=epochs)
    seconds = time.perf_counter() - start
    test_enc = encode_frame(test, tok, names, max_length, stride, with_labels=False)
    per_word, unread = predict_word_logits(trainer.model, test_enc)
    pred = [predicted_tags(x, names)[0] for x in per_word]
    return entity_counts(test["tags"].tolist(), pred), seconds, {"plan": plan, "train": result, "val": best,
                                                                  "unread_words": unread}


def markdown(results: dict) -> str:
    lines = ["# Token classification: a fine-tuned encoder against the CRF (WNUT-16 tweets)", "",
             measured(results["machine"]) + ".", "", __doc__.split("\n\n")[0].replace("\n", " "), "",
             "| data | test sentences | CRF entity F1 | teacher entity F1 | teacher − CRF "
             "| training s (CRF, teacher) |",
             "|---|---|---|---|---|---|"]
    for name, r in results["datasets"].items():
        lines.append(f"| {name} | {r['crf']['sentences']} | {fmt_ci(r['crf'])} | {fmt_ci(r['teacher'])} | "
                     f"{fmt_diff(r['teacher_vs_crf'])} | {r['seconds']['crf']:.0f}, {r['seconds']['teacher']:.0f} |")
    lines += ["", "Entity F1 is strict (type and both boundaries), micro over types, with 95% BCa bootstrap CIs over "
              "test sentences; the difference is paired on the same sentences (* = its CI excludes 0). Per type: "
              "`ner_wnut.json`.", ""]
    for name, r in results["datasets"].items():
        lines.append(f"{name}: {r['rows']}. Teacher: {r['teacher_run']['plan']['planned_steps']} planned steps, "
                     f"best validation entity F1 {r['teacher_run']['val']['eval_entity_f1']:.3f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    from pipeline.core.entities import entity_f1_ci, entity_report, paired_entity_f1

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--stride", type=int, default=32)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    (train, val, test), repeats = load(args.seed)
    crf, crf_s = crf_counts(train, test)
    teacher, teacher_s, run = teacher_counts(train, val, test, args.seed, args.max_length, args.stride)
    row = {"rows": f"{len(train)}/{len(val)}/{len(test)} sentences (train/val/test) after {repeats} repeated "
                   f"tweets were dropped", "crf": entity_f1_ci(crf, seed=args.seed),
           "teacher": entity_f1_ci(teacher, seed=args.seed),
           "teacher_vs_crf": paired_entity_f1(teacher, crf, seed=args.seed),
           "per_type": {"crf": entity_report(crf)["per_type"], "teacher": entity_report(teacher)["per_type"]},
           "seconds": {"crf": round(crf_s, 1), "teacher": round(teacher_s, 1)}, "teacher_run": run,
           "settings": {"seed": args.seed, "max_length": args.max_length, "stride": args.stride}}
    print(record(OUT, STEM, "WNUT-16 tweets", row, markdown))


if __name__ == "__main__":
    main()

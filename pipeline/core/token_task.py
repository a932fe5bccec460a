"""The token task: one tag per word (named entities), the sequence task's members answered for sentences of words.

A row is a sentence: `tokens` and their BIO `tags` (lists), `text` the tokens joined by one space, and `label` its
stratum, the rarest entity type it holds (token_clean.py), which the split and the class counts read as they read a
text's label. The model reads sub-words: the first sub-word of each word carries its tag and the rest are ignored
(-100), as transformers' run_ner.py does by default, so a word is one decision whatever its sub-word count and entity
F1 counts words, not sub-words. A sentence longer than the window is read in overlapping windows (`tokens.stride`).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.core.entities import PRIMARY
from pipeline.core.io import DataError
from pipeline.core.metrics import label_config
from pipeline.core.token_clean import NO_ENTITY


class TokenTask:
    name = "token"
    primary_metric = PRIMARY  # strict entity micro-F1 (seqeval's definition)
    rebalance_exempt = frozenset({NO_ENTITY})  # sentences with no entity are not a class to balance
    peft_task_type = "TOKEN_CLS"

    def __init__(self, params: Any) -> None:
        self.params = params
        self.stride = params.tokens.stride

    def clean_file(self, path: str, params: Any, feedback: str | None = None) -> Any:
        from pipeline.core.token_clean import clean_token_file

        return clean_token_file(path, params, feedback)

    def feedback_classes(self, clean_table: Any, p: Any) -> list[str]:
        """What `finetune ingest` checks a span-labelled row against: the data's entity types."""
        from pipeline.core.token_feedback import entity_types

        return entity_types(clean_table)

    def feedback_label(self, value: Any, text: str, known: list[str], p: Any, where: str) -> str:
        """A row's entities (JSON spans over its text) as the feedback file stores them, checked."""
        from pipeline.core.token_feedback import stored_label

        return stored_label(value, text, known, p, where)

    def feedback_key(self, text: str, p: Any) -> str:
        """A raw text as clean compares sentences: its words (the serving pre-tokeniser's), normalised."""
        from pipeline.core.token_clean import text_key

        return text_key(text, p)

    def raw_keys(self, raw_path: Any, params: Any) -> set[str]:
        from pipeline.core.token_clean import raw_keys

        return raw_keys(raw_path, params)

    def diff_key(self, frame: pd.DataFrame) -> pd.Series:
        """What `lineage diff` compares to call a sentence relabelled: its entities (`start:end:type` over words),
        not its stratum, which stays put when one of two entities changes."""
        from pipeline.core.token_evaluate import entity_text

        return frame["tags"].map(lambda tags: entity_text(list(tags)))

    def check_data(self, raw: str, params: Any) -> Any:
        """`finetune check`'s data part for a token file: problems, then sentences, types, sub-words, windows."""
        from pipeline.core.token_clean import check_token_file

        return check_token_file(raw, params)

    def clean_metrics(self, result: Any) -> dict:
        from pipeline.core.token_clean import clean_metrics

        return clean_metrics(result)

    def audit(self, df: pd.DataFrame, p: Any, seed: int) -> Any:
        """Likely mistagged words (cleanlab's token module on out-of-fold CRF probabilities)."""
        from pipeline.core.token_audit import audit_tokens

        return audit_tokens(df, p, seed)

    def audit_metrics(self, df: pd.DataFrame, result: Any, p: Any) -> dict:
        from pipeline.core.sequence_audit import stage_metrics

        sentences = int(result.issues["id"].nunique())
        # `flagged` counts words; the share is of sentences, as the rows the stage passes on are sentences
        return {**stage_metrics(df, result, p), "flagged_sentences": sentences,
                "flagged_share": round(sentences / max(1, len(df)), 4)}

    def check_augment(self, p: Any) -> None:
        """Mention replacement and synonym swap on O words carry the tags word by word; back-translation cannot."""
        if p.back_translation.enabled:
            from pipeline.core.param_errors import ParamsError

            raise ParamsError("augment.back_translation.enabled: true, but a translation reorders and merges words "
                              "and nothing carries the tags over to them (the token task augments with "
                              "augment.mentions and augment.synonym); set it to false")

    def augment(self, df: pd.DataFrame, p: Any, seed: int) -> Any:
        """Entity-safe variants: mention replacement (its mentions from the training sentences only), synonyms on O
        words (token_augment.py)."""
        from pipeline.core.token_augment import augment_tokens

        return augment_tokens(df, p, seed, self.params.split)

    def label_names(self, train: pd.DataFrame) -> list[str]:
        from pipeline.core.tags import bio_labels

        return bio_labels(train["tags"].tolist())

    def check_splits(self, splits: dict[str, pd.DataFrame], label_names: list[str]) -> None:
        known = set(label_names)
        for name, df in splits.items():
            if df.empty:
                raise DataError(f"{name} split is empty: the data is too small for the split ratios")
            unseen = sorted({t for tags in df["tags"] for t in tags} - known)
            if unseen:
                raise DataError(f"{name} split has tag(s) {unseen} never seen in the train split")
        if len(label_names) < 3:
            raise DataError(f"train split tags no entity ({label_names}): nothing to learn")

    def load_model(self, name: str, key: str, label_names: list[str], **kwargs: Any) -> Any:
        from pipeline.core.modeling import load_token_classifier

        return load_token_classifier(name, key, **label_config(label_names), **kwargs)

    def load_trained(self, folder: str, key: str) -> Any:
        from pipeline.core.modeling import load_token_classifier

        return load_token_classifier(folder, key)

    def windows(self, frame: pd.DataFrame, tokenizer: Any, label_names: list[str], max_length: int,
                with_labels: bool = True) -> Any:
        """Sentences -> their windows (token_encoding.Encoded)."""
        from pipeline.core.token_training import encode_frame

        return encode_frame(frame, tokenizer, label_names, max_length, self.stride, with_labels)

    def encode(self, frame: pd.DataFrame, tokenizer: Any, label_names: list[str], max_length: int,
               truncation: str, sort_by_length: bool = False, extra: dict[str, list] | None = None) -> Any:
        """Sentences -> a dataset of windows with sub-word label ids; never cut (`truncation` is the sequence task's),
        and kept in sentence order (the metric reads each word from its best window by position)."""
        from pipeline.core.token_training import per_window, window_dataset

        enc = self.windows(frame, tokenizer, label_names, max_length)
        ds = window_dataset(enc)
        for name, values in (extra or {}).items():  # per sentence, per word -> per window, per position
            ds = ds.add_column(name, per_window(values, enc))
        return ds

    def trainer_class(self, base: type) -> type:
        from pipeline.core.token_training import EvalInOrder

        return type(f"Token{base.__name__}", (EvalInOrder, base), {})

    def class_weights(self, setting: Any, ds: Any, label_names: list[str], key: str) -> tuple[Any, dict]:
        """Unweighted unless `true`: on tags O outnumbers every entity tag by far, so `auto`'s imbalance rule would
        always fire, and the token recipe measured in bench/results/NER_WNUT.md is unweighted."""
        from pipeline.core.profile import resolve_class_weights

        if setting is True:
            labels = [x for row in ds["labels"] for x in row if x >= 0]
            return resolve_class_weights(True, labels, label_names, key)
        return None, {"setting": setting, "used": False,
                      "rule": "token task: weighted only when set to true (O outnumbers every entity tag)"}

    def fit_recipe(self, tokenizer: Any, label_names: list[str], val: Any = None, max_length: int = 0
                   ) -> dict[str, Any]:
        """DataCollatorForTokenClassification (labels padded with -100) and entity F1 on `val`'s sentences, each word
        read from its best window, as evaluate reads them."""
        from pipeline.core.token_training import KDCollator, metrics_fn

        enc = self.windows(val, tokenizer, label_names, max_length)
        gold = [list(t) for t in val["tags"]]
        return {"collator": KDCollator(tokenizer), "compute_metrics": metrics_fn(enc, gold, label_names),
                "metric_for_best_model": self.primary_metric}

    def student_targets(self, args: Any, params: Any, train: pd.DataFrame, val: pd.DataFrame) -> tuple[list, dict]:
        """Each word's logits from the teacher (read from its best window), per training then validation sentence:
        stored per word, not per window, so a student that reads other windows still finds its targets."""
        from pipeline.core.io import read_lineage
        from pipeline.core.modeling import lineage_max_length, load_tokenizer, pick_device
        from pipeline.core.param_errors import ParamsError
        from pipeline.core.token_training import predict_word_logits

        if params.distill.blend_baseline != 0:
            raise ParamsError(f"distill.blend_baseline: {params.distill.blend_baseline!r}: the token task's "
                              "targets are the teacher's alone (the CRF gives no word logits to blend); set 0")
        label_names = read_lineage(args.teacher)["label_names"]
        self.check_splits({"val": val}, label_names)
        model, tokenizer = self.load_trained(args.teacher, "teacher"), load_tokenizer(args.teacher, "teacher")
        max_length = lineage_max_length(read_lineage(args.teacher))
        out = []
        for frame in (train, val):
            enc = self.windows(frame, tokenizer, label_names, max_length, with_labels=False)
            per_word, _ = predict_word_logits(model, enc, params.train.eval_batch_size, pick_device())
            out += [x.tolist() for x in per_word]
        return out, {"setting": params.distill.blend_baseline, "baseline_weight": 0.0,
                     "rule": "token task: each word's teacher logits, from the window where it has most context"}

    def students(self, p: Any) -> list:
        """distill's own student only: the try_first search judges a smaller student by macro-F1 evidence, which
        entity F1 has no rule for yet."""
        tried = p.students()
        if len(tried) > 1:
            import logging

            logging.getLogger(__name__).info(
                "token task: distilling distill's own student only; the %d smaller distill.try_first student(s) "
                "are chosen by a macro-F1 rule that entity F1 has no counterpart of yet", len(tried) - 1)
        return tried[-1:]

    def export_models(self, sources: dict, out: Any, params: Any, train: pd.DataFrame, val: pd.DataFrame,
                      test: pd.DataFrame, test_path: str) -> dict:
        """Each model of `sources` to ONNX in out/<name>, int8 behind the entity-F1 parity gate; figures per model."""
        from pipeline.core.token_export import export_token_models

        return export_token_models(sources, out, params, train, val, test)

    def evaluate(self, args: Any, params: Any) -> None:
        """evaluate's work: entity F1 of the four models on the test sentences, compared, timed, packaged."""
        from pipeline.core.token_evaluate import evaluate_tokens

        evaluate_tokens(args, params)

    def fit_baseline(self, params: Any, train: pd.DataFrame, val: pd.DataFrame, label_names: list[str],
                     folder: Any) -> tuple[Any, dict, dict]:
        """A linear-chain CRF on word features (crf.CRF_FILE in `folder`), with its validation entity F1."""
        from pipeline.core.crf import CRF_FILE, CrfTagger, train_crf
        from pipeline.core.entities import entity_counts, entity_f1

        c = params.crf
        train_crf([list(w) for w in train["tokens"]], [list(t) for t in train["tags"]], folder / CRF_FILE,
                  c1=c.c1, c2=c.c2, max_iterations=c.max_iterations)
        tagger = CrfTagger(folder / CRF_FILE)
        pred = [tagger.tag(list(w)) for w in val["tokens"]]
        return c, {PRIMARY: entity_f1(entity_counts([list(t) for t in val["tags"]], pred))}, {"model": "crf"}

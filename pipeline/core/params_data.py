"""The data stages' params sections (clean, audit, augment, rebalance, split) and the base every section shares."""
from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.core.param_errors import KeyedError

ClassSelector = Union[Literal["all", "minority"], list[str]]


class Section(BaseModel):
    """Frozen, no unknown keys, no silent type conversion (a quoted "32" is not an integer), except that a numeric
    string is a number where a float is expected: PyYAML reads `1e-5` (no dot) as a string."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numeric_strings(cls, v: Any, info: Any) -> Any:
        if isinstance(v, str) and is_float(cls.model_fields[info.field_name].annotation):
            try:
                return float(v)
            except ValueError:
                return v
        return v


def is_float(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(is_float(a) for a in typing.get_args(tp) if a is not type(None))
    return tp is float


# Columns the stages write themselves; a kept raw column may not take one of these names.
RESERVED_COLUMNS = frozenset({"id", "source_id", "origin", "text", "label", "raw_row", "reason", "similarity"})


class CleanParams(Section):
    text_column: str = Field("text", description="the raw file's text column")
    label_column: str = Field("spam", description="the raw file's label column (the bundled SMS file's is `spam`)")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="auto: from the file's extension (`.gz` too)")
    encoding: str = Field("utf-8", description="e.g. latin-1 or cp1252 for legacy exports; a wrong one is an "
                                               "error naming the line")
    label_names: dict[str, str] = Field(
        {"0": "ham", "1": "spam"},
        description="raw label -> name; unmapped labels keep their own text; {} keeps every label as written. "
                    "The default is the SMS file's: on another file it is an error unless confirm_label_names")
    confirm_label_names: bool = Field(
        False, description="true: label_names are meant for this file even though they are the SMS file's names")
    allowed_labels: list[str] = Field([], description="non-empty: any other label (after label_names) is an "
                                                      "error naming the row")
    missing_label: Literal["error", "drop"] = Field("error", description="drop: counted as missing_label")
    fix_unicode: bool = Field(True, description="ftfy: repair mojibake such as `donâ€™t`")
    strip_html: bool = True
    mask_emails: bool = False
    mask_urls: bool = False
    mask_phones: bool = False
    lowercase: bool = False
    min_chars: int = Field(2, ge=1, description="shorter texts are dropped, counted as too_short")
    max_chars: int = Field(100_000, ge=1, description="a safety cap only (counted as too_long): long documents are "
                                                      "kept, and train/distill choose how many tokens to read")
    dedup: Literal["none", "exact", "normalised"] = Field(
        "normalised", description="normalised: case, punctuation and spacing ignored")
    keep_columns: list[str] = Field([], description="extra raw columns carried to the test split; evaluate "
                                                    "reports metrics per value of each")
    multiline_records: Literal["error", "recover", "allow"] = Field(
        "recover", description="CSV/TSV records folded into one field by a stray quote (the bundled file has 8, "
                               "hiding 737 messages): error stops naming the row, recover splits them back into "
                               "rows (counted), allow keeps what the reader parsed")

    @field_validator("label_names", mode="before")
    @classmethod
    def _labels_as_text(cls, v: Any) -> Any:
        # YAML reads `0: ham` with an int key; raw labels are compared as text.
        if isinstance(v, dict):
            return {str(k): x if isinstance(x, (dict, list)) else str(x) for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CleanParams:
        if self.min_chars > self.max_chars:
            raise KeyedError("min_chars", f"{self.min_chars} is larger than max_chars {self.max_chars}")
        clash = sorted(set(self.keep_columns) & RESERVED_COLUMNS)
        if clash:
            raise KeyedError("keep_columns", f"{clash} are names the pipeline uses itself; rename the column(s)")
        if len(set(self.keep_columns)) != len(self.keep_columns):
            raise KeyedError("keep_columns", f"lists a column twice: {self.keep_columns}")
        return self


class AuditParams(Section):
    """Label-noise audit: confident learning (cleanlab) on out-of-fold probabilities of TF-IDF + logistic reg.

    The features are the `features` most frequent word n-grams (hashed into 2^22 buckets, so no vocabulary is
    built), with TF-IDF weights fitted once on every row (no labels involved), and each fold's model is fitted
    with the saga solver on at most `max_train_rows` rows of the other folds: a million rows cost minutes, not an
    hour (bench/results/SCALE.md, which also measures how the flags compare with the per-fold vocabulary and
    lbfgs the audit used first)."""

    enabled: bool = True
    action: Literal["report", "drop"] = Field("report", description="report: rows flow on unchanged | drop: "
                                                                    "flagged rows removed, counted as label_issue")
    folds: int = Field(5, ge=2, le=20)
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = Field("prune_by_noise_rate",
                                                      description="cleanlab's find_label_issues filter")
    ngram_max: int = Field(2, ge=1, le=6)
    features: int = Field(100_000, ge=1024, le=2**22, description="the most frequent word n-grams kept as "
                                                                  "features")
    C: float = Field(10.0, gt=0)
    max_iter: int = Field(100, ge=1, description="saga epochs at most (it stops earlier at a relative change of "
                                                 "1e-3)")
    max_train_rows: int = Field(100_000, ge=0, description="rows each fold's model trains on at most (a seeded "
                                                           "sample of the other folds); 0 = all of them")
    jobs: int = Field(0, ge=0, description="processes for the folds and the hashing; 0 = every core. Does not "
                                           "change the result, so not tracked by dvc.yaml")


class SynonymParams(Section):
    """nlpaug SynonymAug over WordNet 3.0, POS from textblob's offline tagger. Off by default, as back-translation:
    the ablation found no gain from either on two datasets at 1k-3.6k training rows, and synonym swap significantly
    worse at 1k (bench/results/ablation-notes.md). Measure yours before enabling."""

    enabled: bool = Field(False, description="off: the ablation found no gain (bench/results/ablation-notes.md)")
    variants: int = Field(1, ge=1, le=20, description="variants per source row")
    classes: ClassSelector = Field("minority", description="all | minority | a list of labels")
    aug_p: float = Field(0.1, gt=0, le=1, description="fraction of tokens considered for a swap")
    aug_min: int = Field(1, ge=1)
    aug_max: int = Field(10, ge=1)
    pos_tagger: Literal["textblob", "none"] = "textblob"


class MentionParams(Section):
    """Token task only: mention replacement (Dai and Adel, 2020): each entity mention of a sentence, with probability
    `p` (at least one per variant), becomes another mention of the same type found in the training sentences; its
    tags follow it word by word. `auto` switches it on where entities are spans among untagged words (most words `O`,
    as in NER) and off where nearly every word carries a tag (parts of speech, chunks): measured +0.076 teacher
    entity F1 on tweets, a small loss on a treebank (docs/ner.md). The sequence task has no mentions: off."""

    enabled: Union[bool, Literal["auto"]] = Field(
        "auto", description="auto: on where at least half the words are O (entity spans, as NER), off otherwise")
    variants: int = Field(1, ge=1, le=20, description="variants per source sentence")
    classes: ClassSelector = Field("minority", description="all | minority | a list of entity types (a sentence's "
                                                           "class is its rarest type)")
    p: float = Field(0.5, gt=0, le=1, description="chance that each mention is replaced (at least one is)")


class BackTranslationParams(Section):
    enabled: bool = Field(False, description="off: the ablation found no gain (bench/results/ablation-notes.md)")
    backend: Literal["apertium", "hf"] = Field(
        "apertium", description="apertium (offline, rule-based) | hf (a Hugging Face seq2seq pair, GPU if present)")
    classes: ClassSelector = "minority"
    source_lang: str = "eng"
    pivots: list[str] = Field(["spa"], description="apertium: one variant per pivot, eng -> pivot -> eng")
    variants: int = Field(1, ge=1, le=20)
    hf_forward_model: str = "Helsinki-NLP/opus-mt-en-es"
    hf_backward_model: str = "Helsinki-NLP/opus-mt-es-en"
    temperature: float = Field(0.9, gt=0, description="hf with variants > 1 samples at this temperature")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(256, ge=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> BackTranslationParams:
        if not self.pivots:
            raise KeyedError("pivots", "needs at least one pivot language")
        if self.backend == "apertium" and self.variants > len(self.pivots):
            raise KeyedError("variants", f"apertium is deterministic, so it gives one variant per pivot; "
                                         f"variants={self.variants} but pivots has {len(self.pivots)}")
        return self


class VariantFilterParams(Section):
    """Drop variants that drift from their source (cosine similarity of sentence embeddings, length ratio)."""

    enabled: bool = True
    model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="a sentence-transformers encoder")
    min_similarity: float = Field(0.7, ge=0, le=1, description="cosine of sentence embeddings, variant vs source "
                                                              "(bench/results/augmentation-notes.md)")
    min_length_ratio: float = Field(0.5, gt=0, le=1, description="variant characters / source characters")
    max_length_ratio: float = Field(2.0, ge=1)
    batch_size: int = Field(64, ge=1)


class AugmentParams(Section):
    minority_ratio: float = Field(0.8, gt=0, le=1, description="`classes: minority` = classes with fewer than this "
                                                              "x the largest class's rows")
    max_ratio: float = Field(1.0, gt=0, le=10, description="add variants to a class only until it has this x the "
                                                          "largest class's rows (and never past a larger class)")
    max_rows: int = Field(0, ge=0, description="skip augmentation above this many cleaned rows; 0 = no limit")
    protect_tokens: bool = Field(True, description="URLs, e-mails, @handles, #hashtags, numbers and amounts are "
                                                   "never changed")
    filter: VariantFilterParams = VariantFilterParams()
    synonym: SynonymParams = SynonymParams()
    mentions: MentionParams = MentionParams()
    back_translation: BackTranslationParams = BackTranslationParams()


class RebalanceParams(Section):
    strategy: Literal["oversample", "undersample", "none"] = Field(
        "none", description="the ablation: oversampling no better, once worse (class weights handle imbalance)")
    target_ratio: float = Field(0.5, gt=0, le=1, description="smallest class / largest class after rebalancing")


class TokenParams(Section):
    """How a token-classification file is laid out (task: token); pipeline/core/token_io.py reads it."""

    format: Literal["auto", "conll", "jsonl", "spans"] = Field("auto", description=(
        "auto: from the extension (.conll/.bio/.iob/.txt/.tsv: one token per line) and, for JSONL, the first record "
        "(token and tag lists, or `text` with character spans as Doccano and Label Studio export)"))
    scheme: Literal["auto", "bio", "iob1", "bioes", "bmes", "plain"] = Field("auto", description=(
        "the tag scheme the file is written in; every scheme is read into BIO. plain: one class per word (parts of "
        "speech; a .conllu file's UPOS under auto), each tag its own one-word span"))
    columns: list[str] = Field([], description="CoNLL column names, so token_column / tag_column can name them")
    token_column: Union[int, str] = Field(0, description="CoNLL: the token's column (a position or a name)")
    tag_column: Union[int, str] = Field(-1, description="CoNLL: the tag's column; -1 = the last")
    tokens_key: str = "tokens"
    tags_key: str = "tags"
    text_key: str = "text"
    spans_key: str = Field("entities", description='span JSONL: the key of the [start, end, type] list (Doccano '
                                                   'calls it "label")')
    tag_names: list[str] = Field([], description="integer tags (as Hugging Face datasets store them) -> these names")
    stride: int = Field(32, ge=0, description=(
        "sub-words two windows share when a sentence is longer than the model's window (it is read in overlapping "
        "windows, never cut); each word is read from the window where it has the most context"))


class SplitParams(Section):
    method: Literal["hash", "exact"] = Field(
        "hash", description="hash: a row's split depends only on its id and the seed, so rows never move between "
                            "splits when data is added, removed or relabelled | exact: exact counts per class")
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    fold: int = Field(0, ge=0, description=(
        "hash only: which slice of the hash is test (0 = the last `test` share). Folds 0..k-1 (k = 1/test) have "
        "disjoint test rows: run them as experiments and pool their test predictions with `finetune kfold` when "
        "one test split is too small to settle a comparison"))

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise KeyedError("", f"train + val + test must sum to 1, got {total:g}")
        if self.fold and self.method != "hash":
            raise KeyedError("fold", "folds rotate the hash split; with method: exact only fold 0 exists")
        if self.fold >= self.folds:
            raise KeyedError("fold", f"test {self.test:g} gives {self.folds} disjoint folds (0..{self.folds - 1}), "
                                     f"got {self.fold}")
        return self

    @property
    def folds(self) -> int:
        """How many disjoint test slices the hash holds at this test share."""
        return max(1, int(1 / self.test + 1e-9))

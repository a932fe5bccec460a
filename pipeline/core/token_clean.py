"""The token task's clean (one tag per word): a CoNLL or JSONL file -> kept sentences and dropped sentences with
their reasons (the sequence task's is pipeline/core/sequence_clean.py; both answer a CleanResult).

Each token is normalised as a text is (`clean`'s switches: ftfy, NFKC, HTML entities, masking, case), one token at a
time so every tag stays on its word; serving normalises the words of a raw text with the same function. A token
left empty is dropped and counted, and its tag's entity repaired the conlleval way. Sentences are dropped by
reason: too short or long, the same words seen with two taggings (every copy: no way to tell which is right), a
repeat. `label` holds the sentence's stratum, the rarest entity type in it (`O`: none), which the split stratifies
by and the rebalance counts, so the split keeps every type in every slice while no sentence depends on another's.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.feedback import read_feedback
from pipeline.core.io import DataError, class_counts, drop_counts
from pipeline.core.params import CleanParams, Params, TokenParams
from pipeline.core.sequence_clean import CleanResult, content_ids, dedup_reasons
from pipeline.core.tags import spans, split_tag, to_bio
from pipeline.core.text import SPACE, dedup_key, normalise_text
from pipeline.core.token_io import TokenFormat, read_tokens, words

log = logging.getLogger(__name__)

NO_ENTITY = "O"  # the stratum of a sentence that holds no entity
COLUMNS = ["id", "source_id", "origin", "text", "tokens", "tags", "label", "raw_row"]


def token_format(p: TokenParams) -> TokenFormat:
    return TokenFormat(format=p.format, scheme=p.scheme, columns=tuple(p.columns), token_column=p.token_column,
                       tag_column=p.tag_column, tokens_key=p.tokens_key, tags_key=p.tags_key, text_key=p.text_key,
                       spans_key=p.spans_key, tag_names=tuple(p.tag_names))


def normalise_tokens(tokens: list[str], p: CleanParams) -> list[str]:
    """Each token as clean normalises a text, with no white space left inside it ("" = the token is gone)."""
    return [SPACE.sub("", normalise_text(t, p)) for t in tokens]


def _retype(tags: list[str], p: CleanParams, where: str) -> list[str]:
    """Entity types renamed by clean.label_names and checked against clean.allowed_labels."""
    out = []
    for tag in tags:
        prefix, kind = split_tag(tag)
        if kind is None:
            out.append(tag)
            continue
        kind = p.label_names.get(kind, kind)
        if p.allowed_labels and kind not in p.allowed_labels:
            raise DataError(f"{where}: entity type {kind!r} is not in clean.allowed_labels {p.allowed_labels}")
        out.append(f"{prefix}-{kind}")
    return out


def _sentence(tokens: list[str], tags: list[str], p: CleanParams, where: str, repairs: Counter
              ) -> tuple[list[str], list[str], int]:
    """Normalised tokens and their BIO tags, without tokens normalisation emptied (and how many there were)."""
    norm = normalise_tokens(tokens, p)
    kept = [(t, g) for t, g in zip(norm, _retype(tags, p, where)) if t]
    toks, tags = [t for t, _ in kept], [g for _, g in kept]
    if len(kept) < len(norm):  # an entity that lost its first token now opens with I-: repaired, counted
        tags = to_bio(tags, "bio", repairs)
    return toks, tags, len(norm) - len(kept)


def strata(tags: pd.Series, min_rows: int = 1) -> list[str]:
    """Per sentence, its rarest entity type (by sentences holding it, ties by name), or O. A stratum of fewer than
    `min_rows` sentences cannot be split, though its type may be common (VERB is the rarest type of a sentence
    holding only nouns and verbs): its sentences move to their next rarer-to-commoner type, and what is still too
    small joins the largest stratum. The split only needs strata it can cut; the types are checked on their own."""
    types = [sorted({s.type for s in spans(t)}) for t in tags]
    held = Counter(t for ts in types for t in ts)
    order = [sorted(ts, key=lambda t: (held[t], t)) or [NO_ENTITY] for ts in types]
    pick = [0] * len(order)
    while True:
        size = Counter(o[k] for o, k in zip(order, pick))
        movable = [i for i, (o, k) in enumerate(zip(order, pick)) if size[o[k]] < min_rows and k < len(o) - 1]
        if not movable:
            break
        for i in movable:
            pick[i] += 1
    label = [o[k] for o, k in zip(order, pick)]
    size = Counter(label)
    largest = max(size, key=lambda t: (size[t], t)) if size else NO_ENTITY
    return [t if size[t] >= min_rows else largest for t in label]


def type_size_problems(tags: pd.Series, params: Params, where: str) -> list[str]:
    """Each entity type held by too few sentences to have one in each of train/val/test."""
    from pipeline.core.checks import splittable

    held = Counter(t for ts in tags for t in {s.type for s in spans(ts)})
    s = params.split
    return [f"{where}: entity type {t!r} has only {n} row(s) (sentences holding it): too few to put one in each of "
            f"train/val/test with split {s.method} {s.train:g}/{s.val:g}/{s.test:g}; add sentences, merge the type "
            "into another (clean.label_names) or change the split" for t, n in sorted(held.items())
            if not splittable(n, s)]


def min_split_rows(params: Params) -> int:
    """The fewest sentences a stratum needs to be cut into train/val/test."""
    from pipeline.core.checks import splittable

    return next(n for n in range(1, 1000) if splittable(n, params.split))


def drop_reasons(frame: pd.DataFrame, p: CleanParams) -> pd.Series:
    """Per sentence, why it is dropped (None: kept): empty, too short or long, its words seen with another
    tagging (all copies), a repeat."""
    reason = pd.Series([None] * len(frame), dtype=object)
    n_chars = frame["text"].str.len()
    reason[n_chars.eq(0).to_numpy()] = "empty_text"
    reason[reason.isna() & n_chars.between(1, p.min_chars - 1)] = "too_short"
    reason[reason.isna() & n_chars.gt(p.max_chars)] = "too_long"
    return dedup_reasons(frame["text"], frame["tags"].map(" ".join), reason, p)


def clean_tokens(raw: pd.DataFrame, p: CleanParams, source_name: str) -> tuple[CleanResult, dict]:
    """Pure core: sentences as token_io reads them (raw_row, tokens, tags) -> kept and dropped sentences, and the
    token counts (tokens in, out, dropped by reason; tag repairs by reason)."""
    if p.keep_columns:
        raise DataError(f"clean.keep_columns: {p.keep_columns}: a token file has no extra columns to keep")
    repairs: Counter = Counter()
    cleaned = [_sentence(t, g, p, f"{source_name}:{n}", repairs)
               for n, t, g in zip(raw["raw_row"], raw["tokens"], raw["tags"])]
    frame = pd.DataFrame({
        "id": content_ids(raw["tokens"].map(" ".join)), "raw_row": raw["raw_row"].to_numpy(),
        "text": [" ".join(t) for t, _, _ in cleaned], "tokens": [t for t, _, _ in cleaned],
        "tags": [g for _, g, _ in cleaned]})
    reason = drop_reasons(frame, p)
    keep = reason.isna().to_numpy()
    kept = frame[keep].reset_index(drop=True)
    kept = kept.assign(source_id=kept["id"], origin="original", label=strata(kept["tags"]))[COLUMNS]
    dropped = frame[~keep].assign(reason=reason[~keep].to_numpy(), label=None)
    dropped = dropped[["id", "raw_row", "reason", "text", "label"]].reset_index(drop=True)
    tokens = {"tokens_in": int(raw["tokens"].map(len).sum()), "tokens_out": int(kept["tokens"].map(len).sum()),
              "tokens_dropped": {"empty_token": sum(n for _, _, n in cleaned)} if any(n for _, _, n in cleaned)
              else {}, "tag_repairs": dict(sorted(repairs.items()))}
    return CleanResult(kept=kept, dropped=dropped, rows_in=len(raw)), tokens


def clean_token_file(path: str, params: Params, feedback: str | None = None) -> CleanResult:
    """Read a token file (every bad line stops with file:line), clean it, check every entity type can be split, and
    give each sentence a stratum the split can cut."""
    table = read_tokens(path, token_format(params.tokens))
    log.info("read %d sentences from %s (%s tags)", len(table.frame), path, table.scheme)
    fb = read_feedback(Path(feedback)) if feedback else None
    if fb is not None and len(fb):  # span-labelled rows `finetune ingest` appended, after the file's sentences
        from pipeline.core.token_feedback import feedback_sentences

        log.info("read %d feedback rows from %s", len(fb), feedback)
        table.frame = pd.concat([table.frame, feedback_sentences(fb, feedback, table.repairs)], ignore_index=True)
    result, tokens = clean_tokens(table.frame, params.clean, path)
    empty = pd.DataFrame({"id": None, "raw_row": None, "reason": "empty_sentence", "text": "", "label": None},
                         index=range(table.dropped.get("empty_sentence", 0)))
    result.dropped = pd.concat([result.dropped, empty], ignore_index=True) if len(empty) else result.dropped
    result.rows_in += len(empty)
    reader_repairs = Counter(table.repairs)
    reader_repairs.update(tokens["tag_repairs"])
    result.extra = {**tokens, "tag_repairs": dict(sorted(reader_repairs.items())), "scheme": table.scheme}
    result.feedback_rows = 0 if fb is None else len(fb)
    if (result.kept["label"] == NO_ENTITY).all():
        raise DataError(f"{path}: no entity is tagged in any kept sentence: nothing for a token model to learn")
    problems = type_size_problems(result.kept["tags"], params, path)
    if problems:
        raise DataError("\n  ".join(problems))
    result.kept["label"] = strata(result.kept["tags"], min_split_rows(params))
    return result


def clean_metrics(result: CleanResult) -> dict:
    from pipeline.core.tags import entity_types

    kept = result.kept
    return {
        "rows_in": result.rows_in,
        "rows_out": len(kept),
        **drop_counts(result.dropped),
        **result.extra,
        "feedback_rows_in": result.feedback_rows,
        "feedback_rows_kept": int((kept["raw_row"] < 0).sum()),
        "entities": dict(sorted(entity_types(kept["tags"].tolist()).items())),
        "per_class": class_counts(kept["label"]),
    }


def check_token_file(raw: str, params: Params) -> Any:
    """`finetune check` for a token file: every problem clean would stop on, then what it will see: sentences,
    tokens, entity types and their counts, repairs and drops, sub-words per sentence and the windows it will read."""
    from pipeline.core.io import KnownError
    from pipeline.core.raw_checks import Report

    rep = Report()
    try:
        result = clean_token_file(raw, params)
    except KnownError as e:
        rep.errors.append(str(e))
        return rep
    m = clean_metrics(result)
    rep.notes.append(f"{raw}: {m['rows_in']} sentences, {m['tokens_in']} tokens, tags in {m['scheme']} (read as BIO)"
                     + (f"; tags repaired: {m['tag_repairs']}" if m["tag_repairs"] else ""))
    if m["dropped_total"]:
        rep.notes.append(f"{raw}: clean will drop {m['dropped_total']} sentences, each counted with its reason: "
                         f"{m['dropped']}" + (f"; tokens emptied by normalisation: {m['tokens_dropped']}"
                                              if m["tokens_dropped"] else ""))
    rep.notes.append("entity types (entities in the kept sentences): "
                     + ", ".join(f"{t} {n}" for t, n in sorted(m["entities"].items(), key=lambda kv: -kv[1])))
    few = [t for t, n in m["entities"].items() if n * params.split.test < 5]
    if few:
        rep.notes.append(f"entity type(s) with under 5 expected test entities: {few}; their own F1 will be noise "
                         "(the micro entity F1 still counts them)")
    rep.notes += window_notes(result.kept, params)
    return rep


def window_notes(kept: pd.DataFrame, params: Params, sample: int = 2000) -> list[str]:
    """Sub-words per sentence with train.model's tokenizer, and how many sentences the window does not hold."""
    import numpy as np

    from pipeline.core.profile import resolve_max_length

    try:
        from transformers import AutoConfig

        from pipeline.core.modeling import load_tokenizer, resolve_model

        tok = load_tokenizer(params.train.model, "train.model")
        config = AutoConfig.from_pretrained(resolve_model(params.train.model, "train.model"))
    except Exception as e:  # an offline Hub name: train names the problem; here it is only a note
        return [f"train.model: could not load its tokenizer to count sub-words ({type(e).__name__})"]
    rows = kept.sample(n=min(sample, len(kept)), random_state=params.seed)
    words = [list(w) for w in rows["tokens"]]
    n = np.array([len(x) for x in tok(words, is_split_into_words=True)["input_ids"]])
    value, _ = resolve_max_length(params.train, tok, config, rows["text"].tolist(), "train", params.seed)
    over = int((n > value).sum())
    return [f"sub-words per sentence ({params.train.model}, {len(rows)} sentences): median {int(np.median(n))}, p99 "
            f"{int(np.percentile(n, 99))}, max {int(n.max())}; train.max_length {params.train.max_length} reads "
            f"{value}: {over} of them ({over / len(n):.1%}) are longer and will be read in overlapping windows "
            f"(tokens.stride {params.tokens.stride} sub-words shared), none cut"]


def text_key(text: str, p: CleanParams) -> str:
    """A raw text as clean compares sentences: its tokens normalised, joined by one space, then the dedup key."""
    return tokens_key([w for w, _, _ in words(text)], p)


def raw_keys(raw_path: Path, params: Params) -> set[str]:
    """The raw file's sentences as clean compares them."""
    frame = read_tokens(raw_path, token_format(params.tokens)).frame
    return {tokens_key(toks, params.clean) for toks in frame["tokens"]}


def tokens_key(tokens: list[str], p: CleanParams) -> str:
    """Tokens as clean compares sentences: normalised, the emptied ones gone, joined by one space, dedup key."""
    return dedup_key(" ".join(t for t in normalise_tokens(tokens, p) if t))

"""Span-labelled rows for the token task: a raw text and its entities, read from the feedback file that `finetune
ingest` appends to, as `clean` reads the raw file's sentences.

A feedback row's `label` holds the text's entities as JSON, in the forms people have at hand: the list `finetune
predict` and `monitor --to-label` write (`[{"start": 0, "end": 5, "type": "person", ...}]`, so a person corrects
the prediction in place), or Doccano's and Label Studio's `[[start, end, "label"], ...]`; `[]` says the text holds
no entity. `ingest` checks each row and stores the entities in the second form. The text is cut into tokens by
`token_io.words`, the pre-tokeniser serving uses, so the row is the sentence the model was asked about.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.core.io import DataError, KnownError
from pipeline.core.params import CleanParams
from pipeline.core.token_io import span_list, spans_to_tokens

FORMS = '[[start, end, "type"], ...] or [{"start": .., "end": .., "type": ..}, ...]'


def parse_entities(value: object, text: str, where: str) -> list[tuple[int, int, str]]:
    """A feedback row's label -> its entities over `text`, checked (inside the text, on tokens, none overlapping)."""
    try:
        items = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: label is not JSON entities ({FORMS}): {e.msg} at character {e.pos}") from None
    try:
        entities = span_list(items, text, where)
        spans_to_tokens(text, entities, where, Counter())
    except KnownError as e:
        raise DataError(str(e)) from None
    return entities


def stored_label(value: object, text: str, known: list[str], p: CleanParams, where: str) -> str:
    """The label `ingest` writes for a row: its entities as `[[start, end, type], ...]`, every type one of the data's
    (or one that clean.label_names renames to one)."""
    entities = parse_entities(value, text, where)
    for start, end, etype in entities:
        if p.label_names.get(etype, etype) not in known:
            raise DataError(f"{where}: entity [{start}, {end}, {etype!r}] has a type not among the data's {known}")
    return json.dumps([list(e) for e in entities], ensure_ascii=False)


def entity_types(clean_table: Path) -> list[str]:
    """The entity types rows may have: the cleaned data's."""
    from pipeline.core.tags import entity_types as count_types

    if not clean_table.is_file():
        raise DataError(f"no known entity types: run `dvc repro` first (no {clean_table})")
    return sorted(count_types(pd.read_parquet(clean_table, columns=["tags"])["tags"].map(list).tolist()))


def feedback_sentences(feedback: pd.DataFrame, name: str, repairs: Counter) -> pd.DataFrame:
    """The feedback file's rows as token_io reads a file's sentences (raw_row -k for data row k of the file)."""
    rows = []
    for k, (text, label) in enumerate(zip(feedback["text"], feedback["label"]), start=1):
        where = f"{name}: data row {k}"
        if not isinstance(text, str) or not isinstance(label, str):
            raise DataError(f"{where}: a feedback row needs a text and its entities (label), e.g. []")
        toks, tags = spans_to_tokens(text, parse_entities(label, text, where), where, repairs)
        rows.append((-k, text, [t for t, _, _ in toks], [(s, e) for _, s, e in toks], tags))
    return pd.DataFrame(rows, columns=["raw_row", "text", "tokens", "offsets", "tags"])

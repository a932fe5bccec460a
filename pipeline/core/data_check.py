"""The sequence task's data check (`finetune check`): every problem of a raw table at once, what clean would drop,
the class sizes after it, and the profile the data-driven defaults will see."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core.checks import class_size_problems
from pipeline.core.io import DataError, KnownError
from pipeline.core.params import CleanParams, Params
from pipeline.core.raw_checks import Report, raw_table_problems


def check_table(raw: str | Path, params: Params) -> Report:
    """Read the raw table as clean does and list what is wrong with it."""
    from pipeline.core.records import read_records

    rep = Report()
    try:
        table = read_records(raw, params.clean)
    except KnownError as e:
        rep.errors.append(str(e))
        return rep
    if table.restored_rows or table.bare_cr:
        rep.notes.append(f"{raw}: {table.restored_rows} row(s) restored from quote-swallowed records, "
                         f"{table.bare_cr} bare carriage return(s) replaced (clean.multiline_records: recover)")
    d = data_problems(table.df, table.raw_row, str(raw), params)
    rep.errors += d.errors
    rep.notes += d.notes
    return rep


def data_problems(df: pd.DataFrame, raw_row: list[int], source: str, params: Params) -> Report:
    """Every problem of a raw table that is already read: the checks clean runs first, then what clean would drop,
    the class sizes after it, and the profile the data-driven defaults will see."""
    from pipeline.core.sequence_clean import clean

    rep = raw_table_problems(df, raw_row, source, params)
    p: CleanParams = params.clean
    if rep.errors:
        return rep
    try:
        result = clean(df, p, source, raw_row)
    except DataError as e:
        rep.errors.append(str(e))
        return rep
    if len(result.dropped):
        rep.notes.append(f"{source}: clean will drop {len(result.dropped)} of {len(df)} rows, each counted with its "
                         f"reason: {result.dropped['reason'].value_counts().to_dict()}")
    rep.errors += class_size_problems(result.kept["label"], params, source, result.dropped)
    rep.notes += profile_notes(result.kept, params)
    return rep


def profile_notes(kept: pd.DataFrame, params: Params) -> list[str]:
    """What the cleaned rows look like to the pipeline's data-driven defaults: class balance (class_weights: auto,
    classes too small to learn), token lengths (max_length: auto, what is cut) and how well the model's tokenizer
    covers the text (language), and the baseline's analyzer."""
    from pipeline.core.profile import (
        class_balance,
        class_weights_on,
        coverage_warning,
        resolve_max_length,
        tokenizer_coverage,
        words_separated,
    )

    notes = []
    texts = kept["text"].tolist()
    bal = class_balance({str(k): int(v) for k, v in kept["label"].value_counts().items()}, params.split.train)
    if bal["classes"]:
        cw = params.train.class_weights
        on = class_weights_on(cw, bal["ratio"])
        notes.append(f"classes: {bal['classes']}, largest {bal['largest']} rows, smallest {bal['smallest']} (ratio "
                     f"{bal['ratio']:g}); train.class_weights {cw}: the loss is {'weighted' if on else 'unweighted'}")
        if bal["small"]:
            notes.append(f"class(es) with fewer than ~20 training rows (split.train {params.split.train:g} of these "
                         f"rows), learned from few examples and judged on a handful of test rows: {bal['small']}; "
                         "add rows or merge them if you can")
    if not words_separated(texts):
        notes.append("the text does not separate words with spaces (e.g. Chinese, Japanese, Thai): baseline.analyzer "
                     "auto uses character n-grams")
    model = params.train.model
    try:
        from transformers import AutoConfig

        from pipeline.core.modeling import load_tokenizer, resolve_model

        tok = load_tokenizer(model, "train.model")
        config = AutoConfig.from_pretrained(resolve_model(model, "train.model"))
    except Exception as e:  # an offline Hub name: train names the problem; here it is only a note
        return [*notes, f"train.model: could not load its tokenizer to profile the text ({type(e).__name__})"]
    train_rows = kept.sample(frac=params.split.train, random_state=params.seed)["text"].tolist() or texts
    try:
        value, rec = resolve_max_length(params.train, tok, config, train_rows, "train", params.seed)
    except KnownError as e:
        notes.append(str(e))
    else:
        pct = rec.get("percentiles", {})
        notes.append(f"tokens per text ({model}): median {pct.get('p50')}, p90 {pct.get('p90')}, p99 "
                     f"{pct.get('p99')}, max {pct.get('max')}; train.max_length {rec['setting']} reads {value}: "
                     f"{rec.get('truncated_rows', 0):.1%} of the rows are cut, {rec.get('tokens_not_read', 0):.1%} "
                     "of their tokens not read")
    warning = coverage_warning(tokenizer_coverage(tok, texts), model)
    if warning:
        notes.append(warning)
    return notes

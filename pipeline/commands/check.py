"""check: every problem with the raw data and params.yaml, listed at once, in seconds, before any heavy work.

    finetune check [--params params.yaml] [--raw data/raw/your.csv]      (or python -m pipeline.commands.check)

Reads params.yaml (every section: a typo under `train:` is found even when only `clean` would run) and the raw
file once, then lists: params errors; unreadable files and encodings; missing columns; records a stray quote
folded together; empty labels and labels outside clean.allowed_labels; label_names that map none of the labels,
or the bundled SMS names applied to another file; classes too small for the split (after cleaning); student layers
the teacher does not have. `clean` runs the data checks at its start, so `dvc repro` fails on all of them at once.
Exit status 1 if there is an error; notes (things that are counted and dropped, not errors) do not fail.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd
import yaml

from pipeline.core.checks import class_size_problems, student_layer_problems
from pipeline.core.io import DataError, KnownError
from pipeline.core.params import CleanParams, Params, load_params_all_errors
from pipeline.core.raw_checks import (  # noqa: F401 - BUNDLED_*: part of this command's interface (tests)
    BUNDLED_LABEL_NAMES,
    BUNDLED_RAW,
    Report,
    raw_table_problems,
)

log = logging.getLogger(__name__)

def raw_path_from_dvc_yaml(dvc_yaml: Path = Path("dvc.yaml")) -> str | None:
    """The `raw` var of dvc.yaml (the file the pipeline reads), if there is one."""
    try:
        for v in yaml.safe_load(dvc_yaml.read_text()).get("vars", []):
            if isinstance(v, dict) and "raw" in v:
                return str(v["raw"])
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return None


def data_problems(df: pd.DataFrame, raw_row: list[int], source: str, params: Params) -> Report:
    """Every problem of a raw table that is already read: the checks clean runs first, then what clean would drop,
    the class sizes after it, and the profile the data-driven defaults will see."""
    from pipeline.stages.clean import clean

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


def model_problems(params: Params) -> Report:
    """distill.layers against the teacher's layer count, and a hidden-state term's need for a student as wide as
    the teacher, read from their configs (no weights loaded)."""
    rep = Report()
    d = params.distill
    if d.student and not any(q.hidden_weight for _, q in d.students()):
        return rep
    from transformers import AutoConfig

    from pipeline.core.modeling import resolve_model

    configs = {}
    for key, name in (("train.model", params.train.model), ("distill.student", d.student)):
        if not name:
            continue
        try:
            configs[key] = AutoConfig.from_pretrained(resolve_model(name, key))
        except Exception as e:  # offline Hub name, bad path: the stage names it; here it is only a note
            rep.notes.append(f"{key}: could not read its config to check distill settings ({type(e).__name__})")
            return rep
    teacher = configs["train.model"]
    n = getattr(teacher, "num_hidden_layers", None)
    if n is not None:
        rep.errors += student_layer_problems(params, n)
    if d.student:
        a, b = getattr(configs["distill.student"], "hidden_size", None), getattr(teacher, "hidden_size", None)
        for key, q in d.students():
            if a != b and q.hidden_weight:
                rep.errors.append(f"{key}.hidden_weight: {q.hidden_weight:g} compares hidden states, but "
                                  f"distill.student ({d.student}) has hidden size {a} and train.model "
                                  f"({params.train.model}) {b}; set it to 0 for this student")
    return rep


def check(params_path: str, raw: str | None) -> Report:
    from pipeline.core.records import read_records

    params, errors = load_params_all_errors(params_path)
    rep = Report(errors=list(errors))
    if params is None:
        return rep
    raw = raw or raw_path_from_dvc_yaml(Path(params_path).parent / "dvc.yaml")
    if raw is None:
        rep.errors.append("no raw file: pass --raw, or run in the project folder (dvc.yaml's `raw` var)")
        return rep
    try:
        table = read_records(raw, params.clean)
    except KnownError as e:
        rep.errors.append(str(e))
    else:
        if table.restored_rows or table.bare_cr:
            rep.notes.append(f"{raw}: {table.restored_rows} row(s) restored from quote-swallowed records, "
                             f"{table.bare_cr} bare carriage return(s) replaced (clean.multiline_records: recover)")
        d = data_problems(table.df, table.raw_row, raw, params)
        rep.errors += d.errors
        rep.notes += d.notes
    m = model_problems(params)
    rep.errors += m.errors
    rep.notes += m.notes
    return rep


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    from pipeline.core.io import setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", help="the raw data file (default: dvc.yaml's `raw` var)")
    args = ap.parse_args(argv)
    rep = check(args.params, args.raw)
    sys.stdout.write(rep.text() + "\n")
    raise SystemExit(1 if rep.errors else 0)


if __name__ == "__main__":
    main()

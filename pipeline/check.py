"""check: every problem with the raw data and params.yaml, listed at once, in seconds, before any heavy work.

    finetune check [--params params.yaml] [--raw data/raw/your.csv]      (or python -m pipeline.check)

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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pipeline.checks import class_size_problems, student_layer_problems
from pipeline.io import DataError, KnownError
from pipeline.params import CleanParams, Params, load_params_all_errors
from pipeline.text import raw_label_key

log = logging.getLogger(__name__)

# The label names params.yaml ships with: the bundled SMS file's. On another file with 0/1 labels they would
# silently call its classes "ham" and "spam".
BUNDLED_RAW = "data/raw/sms-spam.csv"
BUNDLED_LABEL_NAMES = {"0": "ham", "1": "spam"}


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"ERROR {e}" for e in self.errors] + [f"note  {n}" for n in self.notes]
        head = (f"{len(self.errors)} error(s), {len(self.notes)} note(s)" if lines else "no problems found")
        return "\n".join([head, *lines])


def raw_path_from_dvc_yaml(dvc_yaml: Path = Path("dvc.yaml")) -> str | None:
    """The `raw` var of dvc.yaml (the file the pipeline reads), if there is one."""
    try:
        for v in yaml.safe_load(dvc_yaml.read_text()).get("vars", []):
            if isinstance(v, dict) and "raw" in v:
                return str(v["raw"])
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return None


def data_problems(df: pd.DataFrame, raw_row: list[int], source: str, params: Params, run_clean: bool = True
                  ) -> Report:
    """Every problem of a raw table that is already read (clean's params apply). Pure: no I/O. Without
    `run_clean`, the checks that need the cleaned rows (class sizes) are left to the caller (clean itself)."""
    from pipeline.clean import clean

    rep = Report()
    p: CleanParams = params.clean
    missing = [f"{col!r} (clean.{key})" for col, key in
               [(p.text_column, "text_column"), (p.label_column, "label_column"),
                *[(c, "keep_columns") for c in p.keep_columns]] if col not in df.columns]
    if missing:
        rep.errors.append(f"{source}: no column {', '.join(missing)}; columns are {list(df.columns)}")
        return rep
    if df.empty:
        rep.errors.append(f"{source}: no data rows")
        return rep
    labels = df[p.label_column]
    empty = labels.isna() | labels.astype(str).str.strip().eq("")
    rows = pd.Series(raw_row)
    if empty.any():
        msg = (f"{source}: column {p.label_column!r} is empty in {int(empty.sum())} row(s), first at data row(s) "
               f"{rows[empty.to_numpy()].head(5).tolist()}")
        (rep.errors if p.missing_label == "error" else rep.notes).append(
            msg + ("; fix the file or set clean.missing_label: drop" if p.missing_label == "error" else
                   " (dropped and counted as missing_label)"))
    raw_labels = {raw_label_key(x) for x in labels[~empty]}
    if p.label_names and not raw_labels & set(p.label_names):
        rep.errors.append(f"clean.label_names: maps {sorted(p.label_names)} but the labels of {source} are "
                          f"{sorted(raw_labels)[:10]}; fix the keys or set label_names: {{}}")
    elif (p.label_names == BUNDLED_LABEL_NAMES and Path(source).name != Path(BUNDLED_RAW).name
          and raw_labels <= set(BUNDLED_LABEL_NAMES) and not p.confirm_label_names):
        rep.errors.append(f"clean.label_names: the bundled SMS names {BUNDLED_LABEL_NAMES} would rename the labels "
                          f"{sorted(raw_labels)} of {source}; set your own names, label_names: {{}} to keep them, "
                          "or clean.confirm_label_names: true if ham/spam is what they are")
    if p.allowed_labels:
        names = {p.label_names.get(x, x) for x in raw_labels}
        unknown = sorted(names - set(p.allowed_labels))
        if unknown:
            rep.errors.append(f"{source}: label(s) {unknown} not in clean.allowed_labels {p.allowed_labels}")
    texts = df[p.text_column]
    non_string = [not isinstance(t, str) and not pd.isna(t) for t in texts]
    if any(non_string):
        where = rows[pd.Series(non_string).to_numpy()].head(5).tolist()
        rep.notes.append(f"{source}: {sum(non_string)} non-string text(s) in column {p.text_column!r} (data rows "
                         f"{where}): dropped and counted as non_string_text")
    if rep.errors or not run_clean:
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
    from pipeline.profile import (
        AUTO_CLASS_WEIGHT_RATIO,
        class_balance,
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
        on = cw if isinstance(cw, bool) else bal["ratio"] >= AUTO_CLASS_WEIGHT_RATIO
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

        from pipeline.modeling import load_tokenizer, resolve_model

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

    from pipeline.modeling import resolve_model

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
    from pipeline.records import read_records

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
    from pipeline.io import setup_logging

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

"""check: every problem with the raw data and params.yaml, listed at once, in seconds, before any heavy work.

    finetune check [--params params.yaml] [--raw data/raw/your.csv] [--no-estimate]
                                                                         (or python -m pipeline.commands.check)

Reads params.yaml (every section: a typo under `train:` is found even when only `clean` would run) and the raw
file once, then lists: params errors; unreadable files and encodings; missing columns; records a stray quote
folded together; empty labels and labels outside clean.allowed_labels; label_names that map none of the labels,
or the bundled SMS names applied to another file; classes too small for the split (after cleaning); student layers
the teacher does not have. `clean` runs the data checks at its start, so `dvc repro` fails on all of them at once.
When there is no error, what the run will cost: the planned steps of teacher and students, tokens per step, and an
estimated wall time on this machine from a probe of a few real training steps (pipeline/core/estimate.py; about
half a minute on a CPU, skipped with --no-estimate), with the knobs that cut it.
Exit status 1 if there is an error; notes (things that are counted and dropped, not errors) do not fail.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from pipeline.core.checks import student_layer_problems
from pipeline.core.data_check import data_problems, profile_notes  # noqa: F401 - the sequence checks, re-exported
from pipeline.core.params import Params, load_params_all_errors
from pipeline.core.raw_checks import (  # noqa: F401 - BUNDLED_*: part of this command's interface (tests)
    BUNDLED_LABEL_NAMES,
    BUNDLED_RAW,
    Report,
    raw_table_problems,
)
from pipeline.core.tasks import task_for

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


def check(params_path: str, raw: str | None, estimate: bool = False) -> Report:
    params, errors = load_params_all_errors(params_path)
    rep = Report(errors=list(errors))
    if params is None:
        return rep
    raw = raw or raw_path_from_dvc_yaml(Path(params_path).parent / "dvc.yaml")
    if raw is None:
        rep.errors.append("no raw file: pass --raw, or run in the project folder (dvc.yaml's `raw` var)")
        return rep
    d = task_for(params).check_data(raw, params)  # read as clean reads it, every problem listed
    rep.errors += d.errors
    rep.notes += d.notes
    m = model_problems(params)
    rep.errors += m.errors
    rep.notes += m.notes
    if estimate and not rep.errors:
        rep.notes += cost_notes(params, raw)
    return rep


def cost_notes(params: Params, raw: str) -> list[str]:
    """The plan and the estimated time of the run (core/estimate.py), or a note saying why there is none."""
    from pipeline.core.estimate import estimate_notes

    task = task_for(params)
    try:
        return estimate_notes(task, params, task.clean_file(raw, params).kept)
    except Exception as e:  # noqa: BLE001 - an estimate that cannot be made is a note, never a failed check
        log.debug("estimate failed", exc_info=True)
        return [f"estimate: not made ({type(e).__name__}: {e})"]


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    from pipeline.core.io import setup_logging

    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", help="the raw data file (default: dvc.yaml's `raw` var)")
    ap.add_argument("--no-estimate", action="store_true",
                    help="skip the run's cost estimate (it loads the teacher and times a few training steps)")
    args = ap.parse_args(argv)
    rep = check(args.params, args.raw, estimate=not args.no_estimate)
    sys.stdout.write(rep.text() + "\n")
    raise SystemExit(1 if rep.errors else 0)


if __name__ == "__main__":
    main()

"""tune: choose the teacher's learning rate and epochs (and, for long texts, its token budget) on validation rows.

    python -m pipeline.commands.tune --trials 6 [--budget-minutes 60] [--apply]

Each trial is a DVC experiment (`dvc exp run --name tune-<study>-<n> -S train.learning_rate=… train`), so every
trial is in `dvc exp show` with its params and metrics, and any of them can be restored with `dvc exp apply`. The
search strategy is Optuna's TPE sampler (seeded by `seed`), asked for one trial at a time (ask/tell): the first
trial is the params as they are, the reference. A trial is scored by the macro-F1 of its teacher on the validation
rows; test rows are never read.

A best trial found on a few hundred validation rows may be luck: the choice is adopted only when the paired
bootstrap lower bound (one-sided, `--confidence`) of its validation macro-F1 minus the reference's is above 0.
Otherwise the params stay as they are. Everything is written to metrics/tune.json (trials, the evidence, the
decision); `--apply` then applies the chosen experiment to the workspace (params.yaml and outputs, as
`dvc exp apply` does), and `dvc repro` continues from its teacher. Without `--apply` the workspace is put back as
it was.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import KnownError, read_lineage, setup_logging, write_json
from pipeline.core.metrics import encode_labels
from pipeline.core.project import run_dvc, workspace

log = logging.getLogger(__name__)

LR_RANGE = (1e-5, 3e-4)
EPOCH_RANGE = (2, 12)
CAPS = (128, 256, 512)  # max_length_cap choices, offered only when the reference cuts a share of the training rows
LONG_TEXT_SHARE = 0.05


def val_predictions(root: Path) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(labels, the workspace teacher's predictions) on the validation rows, its label names and lineage."""
    from pipeline.core.io import read_table
    from pipeline.core.scoring import open_model

    project = workspace(root)
    teacher = root / project.path("train", "output")
    lineage = read_lineage(teacher)
    names = lineage["label_names"]
    val = read_table(root / project.path("train", "val"))
    # The split's texts are already clean: proba() scores them as given, reading as the teacher was trained to.
    pred = open_model(teacher).proba(val["text"].tolist(), 64).argmax(1)
    y = encode_labels(val["label"], names, "validation rows")
    return y, pred, names, lineage


def improvement(y: np.ndarray, best: np.ndarray, ref: np.ndarray, n_classes: int, confidence: float,
                seed: int) -> dict:
    """Paired bootstrap of (best - reference) validation macro-F1: its point value and one-sided lower bound."""
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.stats import bootstrap_class_f1

    fb, fr = bootstrap_class_f1(y, [best, ref], n_classes, 2000, seed)
    diff = fb.mean(1) - fr.mean(1)
    metric = macro_f1_fn(n_classes)
    return {"delta": round(metric(y, best) - metric(y, ref), 4),
            "delta_lower": round(float(np.quantile(diff, 1 - confidence)), 4), "confidence": confidence,
            "rows": int(len(y))}


def suggest(trial: Any, long_texts: bool) -> dict[str, Any]:
    params = {"train.learning_rate": trial.suggest_float("learning_rate", *LR_RANGE, log=True),
              "train.epochs": trial.suggest_int("epochs", *EPOCH_RANGE),
              # The epochs a trial names are the epochs it trains: min_steps would raise them on small data.
              "train.min_steps": 0}
    if long_texts:
        params["train.max_length_cap"] = trial.suggest_categorical("max_length_cap", list(CAPS))
    return params


def run_trial(root: Path, name: str, overrides: dict[str, Any]) -> float:
    t0 = time.time()
    args = ["exp", "run", "--name", name, "train"]
    for k, v in overrides.items():
        args += ["-S", f"{k}={v}"]
    log.info("trial %s: %s", name, overrides or "the params as they are (reference)")
    run_dvc(*args, cwd=root)
    return round(time.time() - t0, 1)


def tune(root: Path, trials: int, budget_minutes: float, confidence: float, apply: bool, out: Path) -> dict:
    import optuna

    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.params import load_params

    params = load_params(root / "params.yaml")
    study_id = time.strftime("%Y%m%d%H%M%S")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=params.seed))
    start = time.time()
    ref_name = f"tune-{study_id}-0"
    seconds = run_trial(root, ref_name, {})
    y, ref_pred, names, lineage = val_predictions(root)
    metric = macro_f1_fn(len(names))
    long_texts = lineage.get("resolved", {}).get("length", {}).get("truncated_rows", 0) > LONG_TEXT_SHARE
    records = [{"name": ref_name, "params": {}, "val_macro_f1": round(metric(y, ref_pred), 6), "seconds": seconds}]
    preds = {ref_name: ref_pred}
    for n in range(1, trials):
        if (time.time() - start) / 60 > budget_minutes:
            log.info("budget of %g minutes spent after %d trials", budget_minutes, n)
            break
        trial = study.ask()
        overrides = suggest(trial, long_texts)
        name = f"tune-{study_id}-{n}"
        seconds = run_trial(root, name, overrides)
        _, pred, _, _ = val_predictions(root)
        score = metric(y, pred)
        study.tell(trial, score)
        preds[name] = pred
        records.append({"name": name, "params": overrides, "val_macro_f1": round(score, 6), "seconds": seconds})
    best = max(records, key=lambda r: r["val_macro_f1"])
    evidence = improvement(y, preds[best["name"]], ref_pred, len(names), confidence, params.seed)
    adopt = best["name"] != ref_name and evidence["delta_lower"] > 0
    chosen = best if adopt else records[0]
    result = {"trials": records, "reference": ref_name, "best": best["name"], "evidence": evidence,
              "adopted": adopt, "chosen": chosen["name"], "chosen_params": chosen["params"],
              "rule": f"adopt the best trial when the {confidence:.0%} one-sided paired-bootstrap lower bound of its "
                      "validation macro-F1 minus the reference's is above 0",
              "minutes": round((time.time() - start) / 60, 1), "applied": apply}
    # The workspace holds the last trial's outputs: put the chosen one (or, without --apply, the reference) back.
    run_dvc("exp", "apply", chosen["name"] if apply else ref_name, cwd=root)
    write_json(result, out)
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6, help="trials in all, the reference included")
    ap.add_argument("--budget-minutes", type=float, default=float("inf"), help="no new trial after this long")
    ap.add_argument("--confidence", type=float, default=0.9, help="of the lower bound that decides adoption")
    ap.add_argument("--apply", action="store_true", help="apply the chosen trial to the workspace")
    ap.add_argument("--output", default="metrics/tune.json")
    ap.add_argument("--root", default=".")
    args = ap.parse_args(argv)
    if args.trials < 2:
        ap.error("--trials: at least 2 (the reference and one candidate)")
    root = Path(args.root).resolve()
    if not (root / "dvc.yaml").is_file():
        raise SystemExit(f"{root}: no dvc.yaml; run tune in the project folder")
    try:
        result = tune(root, args.trials, args.budget_minutes, args.confidence, args.apply, root / args.output)
    except KnownError as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    ev = result["evidence"]
    sys.stdout.write(
        "".join(f"{r['name']}: val macro-F1 {r['val_macro_f1']:.4f} {r['params'] or '(reference)'}\n"
                for r in result["trials"])
        + f"best {result['best']}: {ev['delta']:+.4f} over the reference, lower bound {ev['delta_lower']:+.4f} "
          f"({ev['confidence']:.0%}, {ev['rows']} validation rows) -> "
        + ("adopted" if result["adopted"] else "not adopted (the reference stays)")
        + ("" if result["applied"] else "; workspace restored (use --apply to apply the choice)") + "\n")


if __name__ == "__main__":
    main()

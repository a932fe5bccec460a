"""monitor: does the traffic a model sees still look like the data it was tested on?

    finetune monitor --model models/student-onnx --current logs/            # a serve --log-dir folder
    finetune monitor --current new.csv [--since 2026-11-01] [--last 5000] [--json] [--out reports/monitor]
    finetune monitor --current logs/ --to-label 200          # + reports/monitor/to_label.csv for a person

Compares a window of traffic (a prediction-log folder, or any CSV/TSV/JSONL/Parquet file with a text column) with
the model's test rows (dvc.yaml's split `--test`; `--reference` for another file): input drift (text length, rare
tokens under the model's tokenizer, script mix, the model's own sentence embeddings) and prediction drift (the
predicted class mix and the confidence distribution against the model's predictions on the test rows). Each check
is a two-sample test; the verdict holds the false-alarm rate over all checks at `--alpha` (pipeline/core/drift.py
says which tests and why). Writes `<out>/monitor.json`, `<out>/report.md` and its plots.

Exit status: 0 no drift, 3 drift (for schedulers and CI to alert on), 1 bad input, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import DataError, atomic_path, iter_chunks, run_stage, setup_logging
from pipeline.core.monitoring import MIN_ROWS, rows_to_label, run_checks
from pipeline.core.names import ONNX_NAME
from pipeline.core.project import ProjectError, packaged_model, workspace
from pipeline.core.scoring import TorchModel

log = logging.getLogger(__name__)

DRIFT_EXIT = 3


def read_any(path: Path, text_column: str = "text") -> pd.DataFrame:
    """A prediction-log folder (serve/predict --log-dir) or a table file."""
    from pipeline.core.predlog import read_log

    if path.is_dir():
        df = read_log(path)
        if df.empty:
            raise DataError(f"{path}: no prediction-log files (predictions-*.parquet) in this folder")
        return df
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")

    df = pd.concat(list(iter_chunks(path, "auto", "utf-8", 200_000)), ignore_index=True)
    if text_column != "text" and text_column in df:
        df = df.rename(columns={text_column: "text"})
    if "text" not in df and "text_chars" not in df:
        raise DataError(f"{path}: no `{text_column}` column (found {list(df.columns)}); pass --text-column")
    return df


def _utc(when: str) -> pd.Timestamp:
    """An ISO time; one without a zone is UTC, as the log's times are."""
    t = pd.Timestamp(when)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def window(df: pd.DataFrame, since: str | None, until: str | None, last: int | None) -> pd.DataFrame:
    """The rows between `since` and `until` (ISO times, on a log's `time` column), then the last `last` of them."""
    if (since or until) and "time" not in df:
        raise DataError("--since/--until: the input has no `time` column (a prediction log has)")
    if since or until:
        t = pd.to_datetime(df["time"], utc=True, format="ISO8601")
        keep = np.ones(len(df), dtype=bool)
        if since:
            keep &= (t >= _utc(since)).to_numpy()
        if until:
            keep &= (t < _utc(until)).to_numpy()
        df = df[keep]
    if last:
        df = df.tail(last)
    return df.reset_index(drop=True)


def default_paths(root: Path) -> dict[str, str]:
    """The test and train split paths, from dvc.yaml (the single source of paths)."""
    try:
        paths = workspace(root).stage_paths("split")
    except (FileNotFoundError, KeyError):
        return {}
    return {k: paths[k] for k in ("train", "test") if k in paths}


def find_embedder(scorer: Any, explicit: str | None) -> Path | None:
    """The transformers folder whose encoder embeds texts: --embedder; else the model's own encoder folder (itself
    for a torch model, the torch student an ONNX export sits beside), or None."""
    if explicit:
        if not TorchModel.holds(Path(explicit)):
            raise DataError(f"--embedder {explicit}: not a transformers model folder (config.json + weights)")
        return Path(explicit)
    return scorer.encoder_folder()


def write_report(result: dict, out: Path, meta: dict) -> None:
    """monitor.json, report.md and the plots it shows, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    plots = result.pop("plots")
    figures = write_plots(plots, out)
    with atomic_path(out / "monitor.json") as tmp:
        tmp.write_text(json.dumps({**meta, **result}, indent=2, default=float) + "\n")
    lines = [f"# Drift report: {'**DRIFT**' if result['drift'] else 'no drift'}", "",
             f"Model `{meta['model']}` (md5 {meta['model_md5'][:12]}), current `{meta['current']}`, reference "
             f"`{meta['reference']}`. {result['counts']['current_rows_tested']} current and "
             f"{result['counts']['reference_rows_tested']} reference rows tested. Each check fires at p < "
             f"{result['per_check_threshold']:.4g} (alpha {result['alpha']} over {result['checks_run']} checks).", "",
             "| check | test | statistic | p-value | verdict | effect |", "|---|---|---|---|---|---|"]
    for c in result["checks"]:
        if c["skipped"]:
            lines.append(f"| {c['name']} | {c['test']} | | | skipped: {c['skipped']} | |")
            continue
        effect = ", ".join(f"{k} {v}" for k, v in c["effect"].items() if not isinstance(v, dict))
        lines.append(f"| {c['name']} | {c['test']} | {c['statistic']:.4g} | {c['p_value']:.3g} | "
                     f"{'**drift**' if c['drift'] else 'ok'} | {effect} |")
    lines += ["", f"Counts: `{json.dumps(result['counts'])}`", ""] + [f"![{f}]({f}.png)" for f in figures]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_plots(plots: dict, out: Path) -> list[str]:
    """Reference vs current: histograms of text length and confidence, bars of the predicted class mix."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: the report has no plots")
        return []
    made = []
    for name in ("text_length", "confidence"):
        ref, cur = (np.asarray(x, dtype=float) for x in plots[name])
        fig, ax = plt.subplots(figsize=(6, 3.2))
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=30)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference (test rows)")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label="current")
        ax.set_xlabel(name.replace("_", " ")), ax.legend()
        made.append(name)
        with atomic_path(out / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    ref_mix, cur_mix = plots["predicted_class_mix"]
    labels = sorted(set(ref_mix) | set(cur_mix), key=str)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for off, mix, name in ((-0.2, ref_mix, "reference (test rows)"), (0.2, cur_mix, "current")):
        total = max(1, sum(mix.values()))
        ax.bar(x + off, [mix.get(k, 0) / total for k in labels], width=0.4, label=name)
    ax.set_xticks(x, [str(k) for k in labels], rotation=30, ha="right"), ax.set_ylabel("share"), ax.legend()
    with atomic_path(out / "predicted_class_mix.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return made + ["predicted_class_mix"]


def parser(prog: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--model", help="the packaged model that serves the traffic (default: the ONNX student "
                                    "evaluate packages, from dvc.yaml)")
    ap.add_argument("--current", required=True, help="a prediction-log folder or a CSV/TSV/JSONL/Parquet file")
    ap.add_argument("--reference", help="rows the model was tested on (default: dvc.yaml's split --test)")
    ap.add_argument("--train", help="training rows, for the rare-token check (default: dvc.yaml's split --train)")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--since", help="ISO time: log rows from then on")
    ap.add_argument("--until", help="ISO time: log rows before then")
    ap.add_argument("--last", type=int, help="the last N rows of the window")
    ap.add_argument("--alpha", type=float, default=0.01,
                    help="false-alarm rate over all checks together on undrifted traffic (default 0.01)")
    ap.add_argument("--max-rows", type=int, default=2000, help="rows per side a check tests (a seeded sample)")
    ap.add_argument("--embedder", help="transformers folder for the embedding check (default: see --help)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/monitor", help="folder for monitor.json, report.md, plots")
    ap.add_argument("--json", action="store_true", help="print monitor.json to stdout")
    ap.add_argument("--to-label", type=int, default=0, metavar="N",
                    help="also write <out>/to_label.csv: the N window rows most worth a label")
    ap.add_argument("--teacher", default="auto",
                    help="for --to-label: a model whose disagreement with --model marks rows (auto: the packaged "
                         "teacher when it exists; none: off)")
    ap.add_argument("--max-candidates", type=int, default=5000,
                    help="for --to-label: window rows considered at most (a seeded sample)")
    return ap


def write_to_label(args: argparse.Namespace, scorer: Any, current: pd.DataFrame, train_texts: list[str] | None,
                   reference: pd.DataFrame, embedder: Path | None) -> None:
    """<out>/to_label.csv: the --to-label rows most worth a label, with the teacher's disagreement when asked."""
    from pipeline.core.scoring import open_model

    teacher = None
    if args.teacher == "auto":
        with contextlib.suppress(ProjectError):  # outside a project there is no packaged teacher to ask
            t_path = packaged_model("teacher")
            teacher = open_model(t_path) if t_path.is_dir() else None
    elif args.teacher != "none":
        teacher = open_model(Path(args.teacher))
    picked = rows_to_label(scorer, current, train_texts or [], reference["text"].tolist()[:args.max_rows],
                           embedder, teacher, args.to_label, args.max_candidates, args.seed)
    with atomic_path(Path(args.out) / "to_label.csv") as tmp:
        picked.to_csv(tmp, index=False)
    log.info("%d rows to label in %s (%s)", len(picked), Path(args.out) / "to_label.csv",
             {k: int(v) for k, v in picked["reason"].value_counts().items()})


def monitor(args: argparse.Namespace) -> int:
    """The checks over the window the args name, their report, the --to-label rows; the exit code."""
    from pipeline.core.io import read_table
    from pipeline.core.scoring import open_model

    defaults = default_paths(Path.cwd())
    ref_path = args.reference or defaults.get("test")
    if not ref_path:
        raise DataError("no reference rows: pass --reference, or run in the project folder (dvc.yaml's split)")
    model = Path(args.model) if args.model else packaged_model(ONNX_NAME)
    scorer = open_model(model)
    reference = read_any(Path(ref_path))
    current = window(read_any(Path(args.current), args.text_column), args.since, args.until, args.last)
    train_path = args.train or defaults.get("train")
    train_texts = None
    if train_path and Path(train_path).is_file():
        train = read_table(train_path, ["text"])
        train_texts = train["text"].sample(n=min(len(train), 200_000), random_state=args.seed).tolist()
    embedder = find_embedder(scorer, args.embedder)
    result = run_checks(scorer, reference, current, train_texts, embedder, args.alpha, args.max_rows, args.seed)
    meta = {"model": str(model), "model_md5": scorer.hash, "current": args.current, "reference": ref_path,
            "window": {"since": args.since, "until": args.until, "last": args.last},
            "embedder": str(embedder) if embedder else None}
    write_report(result, Path(args.out), meta)
    if args.to_label:
        write_to_label(args, scorer, current, train_texts, reference, embedder)
    log.info("%s: %s (%s); report in %s", args.current, "DRIFT" if result["drift"] else "no drift",
             ", ".join(result["fired"]) or "no check fired", args.out)
    if args.json:
        print((Path(args.out) / "monitor.json").read_text(), end="")
    return DRIFT_EXIT if result["drift"] else 0


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    ap = parser(prog)
    args = ap.parse_args(argv)
    if not 0 < args.alpha < 1:
        ap.error(f"--alpha: {args.alpha} is not between 0 and 1")
    if args.max_rows < MIN_ROWS:
        ap.error(f"--max-rows: at least {MIN_ROWS}")
    setup_logging()
    code = {"value": 0}

    def _run() -> None:
        code["value"] = monitor(args)

    run_stage(_run)
    raise SystemExit(code["value"])


if __name__ == "__main__":
    main()

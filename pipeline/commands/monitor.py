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
import functools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import pipeline.core.drift as drift
from pipeline.core.io import DataError, atomic_path, run_stage, setup_logging
from pipeline.core.predlog import text_sha256 as sha

log = logging.getLogger(__name__)

DRIFT_EXIT = 3
MIN_ROWS = 20  # fewer rows than this and no two-sample test says anything useful


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
    from pipeline.commands.predict import iter_chunks

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
    from pipeline.commands.lineage import open_revision

    try:
        paths = open_revision(None, root).stage_paths("split")
    except (FileNotFoundError, KeyError):
        return {}
    return {k: paths[k] for k in ("train", "test") if k in paths}


def find_embedder(model: Path, scorer: Any, explicit: str | None) -> Path | None:
    """The transformers folder whose encoder embeds texts: --embedder; else the model itself (transformers); else
    for an ONNX export, its sibling without `-onnx` (models/student for models/student-onnx, as evaluate packages
    them) when that holds a transformers model."""
    from pipeline.core.modeling import BASELINE_FILE
    from pipeline.core.onnx_model import ONNX_FILE

    def is_hf(p: Path) -> bool:
        return (p / "config.json").is_file() and not (p / ONNX_FILE).is_file() and not (p / BASELINE_FILE).is_file()

    if explicit:
        if not is_hf(Path(explicit)):
            raise DataError(f"--embedder {explicit}: not a transformers model folder (config.json + weights)")
        return Path(explicit)
    if scorer.kind == "transformers":
        return model
    if model.name.endswith("-onnx") and is_hf(model.with_name(model.name[:-5])):
        return model.with_name(model.name[:-5])
    return None


@functools.lru_cache(maxsize=2)
def _encoder(folder: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tok = AutoTokenizer.from_pretrained(folder)
    was = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the classifier head's weights are "unexpected" for the bare encoder: fine
    try:
        return tok, AutoModel.from_pretrained(folder).eval()
    finally:
        hf_logging.set_verbosity(was)


def embed(folder: Path, texts: list[str], batch_size: int = 32, max_length: int = 128) -> np.ndarray:
    """Mean-pooled last hidden states of the model's encoder (the body the classifier head sits on)."""
    import torch

    tok, enc_model = _encoder(str(folder))
    out = []
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = enc_model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy())
    emb = np.zeros((len(texts), out[0].shape[1]), dtype=np.float32) if out else np.zeros((0, 1), np.float32)
    if out:
        emb[order] = np.vstack(out)
    return emb


def token_ids(tok: Any, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] if texts else []


def token_counts(tok: Any, texts: list[str], chunk: int = 10_000) -> Counter:
    counts: Counter = Counter()
    for s in range(0, len(texts), chunk):
        for ids in token_ids(tok, texts[s:s + chunk]):
            counts.update(ids)
    return counts


def memoised(cache: dict, texts: list[str], fn: Any) -> list:
    """fn(texts) per text, computing only the texts not already in `cache`."""
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    if todo:
        cache.update(zip(todo, fn(todo)))
    return [cache[t] for t in texts]


def sample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return df if len(df) <= n else df.iloc[np.sort(rng.choice(len(df), n, replace=False))].reset_index(drop=True)


def run_checks(scorer: Any, reference: pd.DataFrame, current: pd.DataFrame, train_texts: list[str] | None,
               embedder: Path | None, alpha: float, max_rows: int, seed: int, embed_rows: int = 1000,
               memo: dict | None = None) -> dict:
    """Pure core: the checks of a current window against reference rows (both with `text`; current may instead
    have only `text_chars`, and may carry `prediction`/`confidence` from a log). `memo`: a dict kept between calls
    with the same model, reference and training rows (repeated windows) to reuse their embeddings and scores."""
    memo = {} if memo is None else memo
    rng = np.random.default_rng(seed)
    counts = {"current_rows": len(current), "reference_rows": len(reference)}
    if "status" in current:
        counts["current_not_scored"] = {str(k): int(v) for k, v in current.loc[current["status"] != "ok", "status"]
                                        .value_counts().items()}
        current = current[current["status"] == "ok"].reset_index(drop=True)
    # A log written with --no-log-text has no text at all; a file may have a few empty cells (scored as empty).
    has_text = "text" in current and bool(current["text"].notna().any())
    if has_text:
        norm, status = scorer.normalise(current["text"].tolist())
        current = current.assign(text=norm)[np.asarray(status) == "ok"].reset_index(drop=True)
        # A replay of reference rows is compared with the other reference rows: two samples, no row in both.
        overlap = set(map(sha, current["text"])) & set(map(sha, reference["text"]))
        if overlap:
            reference = reference[~reference["text"].map(sha).isin(overlap)].reset_index(drop=True)
        counts["reference_rows_also_in_current"] = len(overlap)
    if len(current) < MIN_ROWS or len(reference) < MIN_ROWS:
        raise DataError(f"too few rows to test: {len(current)} current and {len(reference)} reference rows that "
                        f"can be scored (at least {MIN_ROWS} each)")
    cur, ref = sample(current, max_rows, rng), sample(reference, max_rows, rng)
    counts.update({"current_rows_tested": len(cur), "reference_rows_tested": len(ref)})
    checks: list[drift.Check] = []

    ref_len = ref["text"].str.len().to_numpy()
    cur_len = cur["text"].str.len().to_numpy() if has_text else cur["text_chars"].to_numpy(dtype=float)
    checks.append(drift.ks_check("text_length", ref_len, cur_len, "chars"))

    tok = getattr(scorer, "_tok", None) or getattr(getattr(scorer, "_onnx", None), "tokenizer", None)
    if not has_text:
        why = "the window has no text (logged with --no-log-text)"
        checks += [drift.skipped("rare_tokens", "Kolmogorov-Smirnov", why),
                   drift.skipped("script_mix", "chi-square", why)]
    else:
        if tok is None or not train_texts:
            checks.append(drift.skipped("rare_tokens", "Kolmogorov-Smirnov",
                                        "no tokenizer (baseline model) or no training rows"))
        else:
            if "train_counts" not in memo:
                memo["train_counts"] = token_counts(tok, train_texts)
            special = set(tok.all_special_ids)
            share = [drift.rare_token_share(token_ids(tok, t), memo["train_counts"], special)
                     for t in (ref["text"].tolist(), cur["text"].tolist())]
            checks.append(drift.ks_check("rare_tokens", share[0], share[1], "share"))
        checks.append(drift.chi2_check("script_mix", [drift.script_of(t) for t in ref["text"]],
                                       [drift.script_of(t) for t in cur["text"]]))
    if not has_text:
        checks.append(drift.skipped("embedding", "MMD", "the window has no text (logged with --no-log-text)"))
    elif embedder is None:
        checks.append(drift.skipped("embedding", "MMD", "no transformers encoder for this model: pass --embedder"))
    else:
        e_ref, e_cur = sample(ref, embed_rows, rng), sample(cur, embed_rows, rng)
        emb = memoised(memo.setdefault("embedding", {}), e_ref["text"].tolist() + e_cur["text"].tolist(),
                       lambda texts: list(embed(embedder, texts)))
        emb = np.vstack(emb) if emb else np.zeros((0, 1))
        # Bonferroni over the six checks: the permutation p-value must be able to go below alpha / 6.
        checks.append(drift.mmd_check("embedding", emb[:len(e_ref)], emb[len(e_ref):], rng,
                                      drift.permutations_for(alpha / 6)))

    ref_scored = memoised(memo.setdefault("scores", {}), ref["text"].tolist(), scorer.score)
    ref_pred = [r["label"] for r in ref_scored]
    ref_conf = np.array([r["confidence"] for r in ref_scored], dtype=float)
    if "prediction" in cur and "confidence" in cur and cur["prediction"].notna().all():
        cur_pred, cur_conf = cur["prediction"].tolist(), cur["confidence"].to_numpy(dtype=float)
    elif has_text:
        scored = scorer.score(cur["text"].tolist())
        cur_pred, cur_conf = [r["label"] for r in scored], np.array([r["confidence"] for r in scored], dtype=float)
    else:
        raise DataError("the window has neither text nor predictions: nothing to test")
    checks.append(drift.chi2_check("predicted_class_mix", ref_pred, cur_pred))
    conf = drift.ks_check("confidence", ref_conf, cur_conf, "confidence")
    conf.effect["psi"] = round(drift.psi(ref_conf, cur_conf), 4)
    checks.append(conf)

    summary = drift.verdict(checks, alpha)
    return {**summary, "counts": counts, "checks": [c.as_dict() for c in checks],
            "plots": {"text_length": [ref_len.tolist(), np.asarray(cur_len).tolist()],
                      "confidence": [ref_conf.tolist(), cur_conf.tolist()],
                      "predicted_class_mix": [Counter(ref_pred), Counter(cur_pred)]}}


LABEL_COLUMNS = ["rank", "reason", "score", "text", "prediction", "confidence", "teacher_prediction", "request_id",
                 "time", "model_md5", "label"]


def rows_to_label(scorer: Any, current: pd.DataFrame, train_texts: list[str], reference_texts: list[str],
                  embedder: Path | None, teacher: Any, n: int, max_candidates: int, seed: int) -> pd.DataFrame:
    """The `n` window rows most worth a label, taken in turn from three rankings, each row once:

    - least_confident: the served model's lowest top-class probability;
    - teacher_disagrees: the largest total-variation distance between the teacher's and the served model's
      probabilities (when a teacher is given);
    - novel: the farthest (cosine) from every reference row in the model's embedding space, where drift lives.

    Rows whose normalised text is in the training rows, or already chosen, are skipped. `label` is left empty for
    a person to fill; `finetune ingest` reads the file back."""
    if "text" not in current or current["text"].isna().all():
        raise DataError("--to-label: the window has no text (logged with --no-log-text): nothing a person can label")
    norm, status = scorer.normalise(current["text"].tolist())
    cand = current.assign(text=norm)[np.asarray(status) == "ok"]
    cand = cand.drop_duplicates("text")
    known = set(map(sha, train_texts))
    cand = cand[~cand["text"].map(sha).isin(known)].reset_index(drop=True)
    if len(cand) > max_candidates:
        cand = cand.iloc[np.sort(np.random.default_rng(seed).choice(len(cand), max_candidates, replace=False))]
        cand = cand.reset_index(drop=True)
    if cand.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    texts = cand["text"].tolist()
    probs = scorer.proba(texts)
    names = scorer.label_names
    cand["prediction"] = [names[i] for i in probs.argmax(1)]
    cand["confidence"] = probs.max(1)
    rankings: list[tuple[str, np.ndarray]] = [("least_confident", 1.0 - probs.max(1))]
    cand["teacher_prediction"] = None
    if teacher is not None:
        t_probs = teacher.proba(texts)
        order = [teacher.label_names.index(nm) for nm in names]
        t_probs = t_probs[:, order]
        cand["teacher_prediction"] = [names[i] for i in t_probs.argmax(1)]
        rankings.append(("teacher_disagrees", 0.5 * np.abs(t_probs - probs).sum(1)))
    if embedder is not None and reference_texts:
        emb = embed(embedder, texts + reference_texts)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        c, r = emb[:len(texts)], emb[len(texts):]
        nearest = np.max(c @ r.T, axis=1)
        rankings.append(("novel", 1.0 - nearest))
    chosen: list[tuple[int, str, float]] = []
    taken: set[int] = set()
    orders = [(name, np.argsort(-score, kind="stable"), score) for name, score in rankings]
    pos = [0] * len(orders)
    while len(chosen) < min(n, len(cand)):
        for j, (name, order, score) in enumerate(orders):
            while pos[j] < len(order) and int(order[pos[j]]) in taken:
                pos[j] += 1
            if pos[j] < len(order) and len(chosen) < n:
                i = int(order[pos[j]])
                taken.add(i)
                chosen.append((i, name, float(score[i])))
    out = cand.iloc[[i for i, _, _ in chosen]].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    out["reason"] = [r for _, r, _ in chosen]
    out["score"] = np.round([s for _, _, s in chosen], 4)
    out["confidence"] = out["confidence"].round(4)
    out["label"] = ""
    for col in ("request_id", "time", "model_md5"):
        if col not in out:
            out[col] = None
    return out[LABEL_COLUMNS]


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


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--model", default="models/student-onnx", help="the packaged model that serves the traffic")
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
                    help="for --to-label: a model whose disagreement with --model marks rows (auto: models/teacher "
                         "when it exists; none: off)")
    ap.add_argument("--max-candidates", type=int, default=5000,
                    help="for --to-label: window rows considered at most (a seeded sample)")
    args = ap.parse_args(argv)
    if not 0 < args.alpha < 1:
        ap.error(f"--alpha: {args.alpha} is not between 0 and 1")
    if args.max_rows < MIN_ROWS:
        ap.error(f"--max-rows: at least {MIN_ROWS}")
    setup_logging()
    code = {"value": 0}

    def _run() -> None:
        from pipeline.core.io import read_table
        from pipeline.core.scoring import Scorer

        defaults = default_paths(Path.cwd())
        ref_path = args.reference or defaults.get("test")
        if not ref_path:
            raise DataError("no reference rows: pass --reference, or run in the project folder (dvc.yaml's split)")
        scorer = Scorer(args.model)
        reference = read_any(Path(ref_path))
        current = window(read_any(Path(args.current), args.text_column), args.since, args.until, args.last)
        train_path = args.train or defaults.get("train")
        train_texts = None
        if train_path and Path(train_path).is_file():
            train = read_table(train_path, ["text"])
            train_texts = train["text"].sample(n=min(len(train), 200_000), random_state=args.seed).tolist()
        embedder = find_embedder(Path(args.model), scorer, args.embedder)
        result = run_checks(scorer, reference, current, train_texts, embedder, args.alpha, args.max_rows, args.seed)
        meta = {"model": args.model, "model_md5": scorer.hash, "current": args.current, "reference": ref_path,
                "window": {"since": args.since, "until": args.until, "last": args.last},
                "embedder": str(embedder) if embedder else None}
        write_report(result, Path(args.out), meta)
        if args.to_label:
            teacher = None
            t_path = Path("models/teacher") if args.teacher == "auto" else None if args.teacher == "none" \
                else Path(args.teacher)
            if t_path is not None and (t_path.is_dir() or args.teacher != "auto"):
                teacher = Scorer(t_path)
            picked = rows_to_label(scorer, current, train_texts or [], reference["text"].tolist()[:args.max_rows],
                                   embedder, teacher, args.to_label, args.max_candidates, args.seed)
            with atomic_path(Path(args.out) / "to_label.csv") as tmp:
                picked.to_csv(tmp, index=False)
            log.info("%d rows to label in %s (%s)", len(picked), Path(args.out) / "to_label.csv",
                     {k: int(v) for k, v in picked["reason"].value_counts().items()})
        log.info("%s: %s (%s); report in %s", args.current, "DRIFT" if result["drift"] else "no drift",
                 ", ".join(result["fired"]) or "no check fired", args.out)
        if args.json:
            print((Path(args.out) / "monitor.json").read_text(), end="")
        code["value"] = DRIFT_EXIT if result["drift"] else 0

    run_stage(_run)
    raise SystemExit(code["value"])


if __name__ == "__main__":
    main()

"""lineage: trace a row from its raw line to the models, check a model against the workspace, diff two revisions.

    lineage trace ID | --text SUBSTRING | --raw-row N | --request-id R   [--rev REV] [--json]
    lineage model PATH                                    [--json]      (e.g. models/teacher)
    lineage diff [REV_A [REV_B]]                          [--json]      (default: HEAD vs the workspace)

Every table the stages write carries `id` (derived from the raw text, so it survives edits of other rows),
`source_id` (the original row a variant or copy came from), `origin` and `raw_row` (the 1-based data row of the raw
file). The paths come from dvc.yaml (the stages' `--name path` arguments), so this command reads exactly what the
pipeline wrote. Old revisions (git revisions or `dvc exp` names) are read through `dvc.api` from the DVC cache or
remote, without a checkout.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.core.io import LINEAGE_FILE, file_md5, read_lineage, run_stage, setup_logging
from pipeline.core.metrics import accuracy, encode_labels, macro_f1, prediction_labels
from pipeline.core.params import load_params
from pipeline.core.project import TABLES, ProjectError, Revision, open_revision
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)

DATA_STAGES = ["clean", "audit", "augment", "rebalance", "split"]
MODEL_STAGES = {"train": "teacher", "distill": "student", "baseline": "baseline"}


# ---------------------------------------------------------------------------------------------- trace
def find_sources(r: Revision, row_id: str | None, text: str | None, raw_row: int | None,
                 key: Callable[[pd.DataFrame], pd.Series] | None = None) -> pd.DataFrame:
    """The original rows (id, raw_row, text, label, status) a query names, kept or dropped by clean; a kept row's
    label as `key` reads it (the task's `diff_key`: a class, or a sentence's entities)."""
    kept, dropped = r.table("clean", "kept"), r.table("clean", "dropped")
    if key is not None:
        kept = kept.assign(label=key(kept))
    rows = pd.concat([kept.assign(status="kept")[["id", "raw_row", "text", "label", "status"]],
                      dropped.assign(status="dropped: " + dropped["reason"])[["id", "raw_row", "text", "label",
                                                                               "status"]]], ignore_index=True)
    if raw_row is not None:
        hit = rows[rows["raw_row"] == raw_row]
        if hit.empty:
            where = r.raw_path() if raw_row > 0 else f"the feedback file {r.feedback_path()} (row {-raw_row})"
            raise ProjectError(f"data row {raw_row}: not in {where} at {r.label}")
        return hit
    if text is not None:
        hit = rows[rows["text"].astype(str).str.contains(text, case=False, regex=False)]
        if hit.empty:
            raise ProjectError(f"no row's text contains {text!r} at {r.label}")
        return hit
    hit = rows[rows["id"] == row_id]
    if hit.empty:  # a variant or copy: find its source through the tables that hold derived rows
        for stage in ("split", "rebalance", "augment"):
            for role in ("train", "kept", "dropped"):
                t = r.table(stage, role) if role in dict((b, a) for a, b in TABLES[stage]) else None
                if t is not None and "source_id" in t.columns and (t["id"] == row_id).any():
                    return find_sources(r, str(t.loc[t["id"] == row_id, "source_id"].iloc[0]), None, None, key)
        raise ProjectError(f"{row_id}: no row has this id at {r.label} (ids are 16 hex characters; try --text)")
    return hit


def trace_one(r: Revision, source_id: str) -> dict:
    """Each stage's fate of one original row, its derived rows, its split, the models and their predictions."""
    out: dict[str, Any] = {"id": source_id, "stages": {}, "derived": [], "split": None, "trained_on_by": [],
                           "predictions": []}
    for stage in DATA_STAGES:
        kept_roles = [role for _, role in TABLES[stage] if role not in ("dropped", "issues")]
        fate = "absent (dropped earlier)"
        for role in kept_roles:
            t = r.table(stage, role)
            if t is not None and (t["id"] == source_id).any():
                fate = "kept" if stage != "split" else f"kept ({role})"
                if stage == "split":
                    out["split"] = role
        d = r.table(stage, "dropped")
        if d is not None and (d["id"] == source_id).any():
            fate = f"dropped: {d.loc[d['id'] == source_id, 'reason'].iloc[0]}"
        issues = r.table(stage, "issues") if stage == "audit" else None
        if issues is not None and (issues["id"] == source_id).any():
            s = issues[issues["id"] == source_id].iloc[0]
            fate += f" (flagged as a label issue: suggested {s['suggested_label']!r}, quality {s['label_quality']:.3f})"
        out["stages"][stage] = fate
    derived = []
    for stage in ("augment", "rebalance", "split"):
        for role in [r2 for _, r2 in TABLES[stage] if r2 != "issues"]:
            t = r.table(stage, role)
            if t is None or "source_id" not in t.columns:
                continue
            rows = t[(t["source_id"] == source_id) & (t["origin"] != "original")]
            for _, x in rows.iterrows():
                fate = f"dropped at {stage}: {x['reason']}" if role == "dropped" else (
                    f"in {role}" if stage == "split" else f"kept at {stage}")
                derived.append({"id": x["id"], "origin": x["origin"], "text": x["text"], "fate": fate})
    seen: dict[str, dict] = {}
    for d in derived:  # a variant appears at every stage it passes: keep its last fate
        seen[d["id"]] = d
    out["derived"] = list(seen.values())
    if out["split"] == "train":
        out["trained_on_by"] = [m for s, m in MODEL_STAGES.items() if s in r.dvc_yaml()["stages"]]
        if "export" in r.dvc_yaml()["stages"]:
            out["trained_on_by"].append("student_onnx (exported student)")
    preds = r.table("evaluate", "predictions") if out["split"] == "test" else None
    if preds is not None:
        for _, x in preds[preds["id"] == source_id].iterrows():
            out["predictions"].append({"model": x["model"], "label": x["label"], "prediction": x["prediction"],
                                       "confidence": float(x["confidence"]), "correct": x["label"] == x["prediction"]})
    return out


def feedback_source(r: Revision, raw_row: int) -> dict | None:
    """A feedback row's provenance (raw_row -k is data row k of the feedback file): the request it came from."""
    fb = r.feedback()
    if raw_row >= 0 or fb is None or -raw_row > len(fb):
        return None
    row = fb.iloc[-raw_row - 1]
    return {"file": r.feedback_path(), "data_row": -raw_row,
            **{k: (None if pd.isna(row.get(k)) else row.get(k))
               for k in ("request_id", "time", "model_md5", "ingested_at", "source")}}


def trace(r: Revision, row_id: str | None, text: str | None, raw_row: int | None, limit: int = 10,
          request_id: str | None = None, key: Callable[[pd.DataFrame], pd.Series] | None = None) -> dict:
    if request_id is not None:
        fb = r.feedback()
        hits = [] if fb is None or "request_id" not in fb else [i + 1 for i in
                                                                 np.flatnonzero(fb["request_id"] == request_id)]
        if not hits:
            raise ProjectError(f"request {request_id}: not in the feedback file {r.feedback_path()} at {r.label}")
        sources = pd.concat([find_sources(r, None, None, -k, key) for k in hits], ignore_index=True)
    else:
        sources = find_sources(r, row_id, text, raw_row, key)
    result = {"revision": r.label, "raw_file": r.raw_path(), "matches": len(sources), "rows": []}
    for _, s in sources.head(limit).iterrows():
        result["rows"].append({"raw_row": int(s["raw_row"]), "text": s["text"], "label": s["label"],
                               "clean": s["status"], "feedback": feedback_source(r, int(s["raw_row"])),
                               **trace_one(r, str(s["id"]))})
    return result


def format_trace(t: dict) -> str:
    files = dict.fromkeys(row["feedback"]["file"] if row.get("feedback") else t["raw_file"] for row in t["rows"])
    lines = [f"{t['matches']} row(s) of {' and '.join(files) or t['raw_file']} at {t['revision']}" +
             (f" (first {len(t['rows'])} shown)" if t["matches"] > len(t["rows"]) else "")]
    for row in t["rows"]:
        fb = row.get("feedback")
        where = (f"{fb['file']}, data row {fb['data_row']} (feedback)" if fb else
                 f"{t['raw_file']}, data row {row['raw_row']}")
        lines += ["", f"{where}  id {row['id']}  label {row['label']!r}", f"  text: {_short(row['text'])}"]
        if fb:
            lines.append(f"  request   {fb['request_id']} at {fb['time']}, scored by model md5 {fb['model_md5']}; "
                         f"ingested {fb['ingested_at']} from {fb['source']}")
        lines += [f"  {stage:<9} {fate}" for stage, fate in row["stages"].items()]
        for d in row["derived"]:
            lines.append(f"  derived   {d['id']} {d['origin']:<16} {d['fate']}: {_short(d['text'], 70)}")
        if row["trained_on_by"]:
            lines.append(f"  models    trained on by: {', '.join(row['trained_on_by'])}")
        for p in row["predictions"]:
            mark = "right" if p["correct"] else "WRONG"
            lines.append(f"  predicted {p['model']:<9} {p['prediction']!r} ({p['confidence']:.3f}) {mark}")
    return "\n".join(lines)


def _short(text: Any, n: int = 100) -> str:
    s = str(text).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------- model
def model_status(model_dir: Path, root: Path, params_path: Path) -> dict:
    """The model's recorded inputs and params vs the workspace, and the commits whose dvc.lock holds those inputs."""
    from pipeline.core.params import load_params, result_params

    if not (model_dir / LINEAGE_FILE).is_file():
        raise ProjectError(f"{model_dir}: no {LINEAGE_FILE} (not a model this pipeline wrote; try models/teacher)")
    lin = read_lineage(model_dir)
    stage = lin.get("stage")
    inputs, changed = {}, []
    for role, d in lin.get("data", {}).items():
        p = root / d["path"]
        now = file_md5(p) if p.is_file() else None
        inputs[role] = {"path": d["path"], "md5": d["md5"], "workspace_md5": now}
        if now != d["md5"]:
            changed.append(f"input {role} ({d['path']}): {d['md5'][:8]} -> {(now or 'missing')[:8]}")
    params = load_params(params_path)
    section = {"train": "train", "distill": "distill", "baseline": "baseline"}.get(stage)
    search = lin.get("student_search") or {}
    if section:
        current_section, key = getattr(params, section), section
        # A student from distill.try_first is compared with that entry's params as the workspace would build them.
        shipped = next((t["key"] for t in search.get("tried", []) if t.get("shipped")), None)
        students = dict(current_section.students()) if section == "distill" else {}
        if shipped in students:
            current_section, key = students[shipped], shipped
        current = result_params(current_section)
        for k, v in sorted(lin.get("params", {}).items()):
            if k in current and current[k] != v:
                changed.append(f"param {key}.{k}: {v!r} -> {current[k]!r}")
        if lin.get("seed") is not None and lin["seed"] != params.seed:
            changed.append(f"param seed: {lin['seed']} -> {params.seed}")
    return {"model": str(model_dir), "stage": stage, "base_model": lin.get("base_model") or lin.get("teacher"),
            "seed": lin.get("seed"), "params": lin.get("params", {}), "inputs": inputs, "student_search": search,
            "commits": commits_with(root, {d["md5"] for d in inputs.values()}),
            "current": not changed, "changed": changed}


def commits_with(root: Path, md5s: set[str], max_commits: int = 200) -> list[str]:
    """Commits (newest first) whose dvc.lock records every one of `md5s` as some stage's dep or out."""
    log_out = subprocess.run(["git", "-C", str(root), "log", f"-n{max_commits}", "--format=%H %s", "--", "dvc.lock"],
                             capture_output=True, text=True)
    found = []
    for line in log_out.stdout.splitlines():
        sha, _, subject = line.partition(" ")
        lock = subprocess.run(["git", "-C", str(root), "show", f"{sha}:dvc.lock"], capture_output=True, text=True)
        if lock.returncode == 0 and all(m in lock.stdout for m in md5s):
            found.append(f"{sha[:10]} {subject}")
    return found


def format_model(m: dict) -> str:
    lines = [f"{m['model']}  (stage {m['stage']}, base {m['base_model']}, seed {m['seed']})",
             "inputs:"]
    for role, d in m["inputs"].items():
        same = "same in workspace" if d["workspace_md5"] == d["md5"] else f"workspace {d['workspace_md5']}"
        lines.append(f"  {role:<15} {d['path']:<40} md5 {d['md5']}  ({same})")
    if m.get("student_search"):
        search = m["student_search"]
        lines.append(f"students tried (teacher val macro-F1 {search['teacher_val_macro_f1']:.4f}, "
                     f"min ratio {search['min_val_f1_ratio']:g}):")
        for t in search["tried"]:
            shape = f"layers {t['layers']}, hidden_weight {t['hidden_weight']:g}, intermediate_size " \
                    f"{t['intermediate_size']}"
            ratio = f"{t['val_f1_ratio']:.1%}" if t.get("val_f1_ratio") is not None else "n/a"
            ev = t.get("evidence")
            if ev:
                ratio += (f", {100 * ev['confidence']:.0f}% lower bound {ev['ratio_lower']:.1%}, classes worse: "
                          f"{', '.join(ev['classes_worse']) or 'none'}")
            lines.append(f"  {t['key']:<22} {shape}: val macro-F1 {t['val_macro_f1']:.4f} ({ratio})"
                         f"{'  <- shipped' if t['shipped'] else ''}")
    lines.append("commits whose dvc.lock holds these inputs: " + (", ".join(m["commits"]) or "none (uncommitted)"))
    lines.append("status: " + ("CURRENT for the workspace" if m["current"] else "STALE: " + "; ".join(m["changed"])))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- diff
def _rows_diff(a: pd.DataFrame, b: pd.DataFrame, key: Callable[[pd.DataFrame], pd.Series], max_rows: int) -> dict:
    """Rows added, removed, relabelled (their label as `key` reads it: a class, or a sentence's entities) and with
    another text, keyed by id; a few relabelled rows as examples."""
    ia, ib = a.set_index("id"), b.set_index("id")
    ia, ib = ia[~ia.index.duplicated()], ib[~ib.index.duplicated()]
    common = ia.index.intersection(ib.index)
    ka, kb = key(ia.loc[common]), key(ib.loc[common])
    relabelled = common[(ka != kb).to_numpy()]
    return {
        "added": int(len(ib.index.difference(ia.index))),
        "removed": int(len(ia.index.difference(ib.index))),
        "relabelled": int(len(relabelled)),
        "text_changed": int((ia.loc[common, "text"] != ib.loc[common, "text"]).sum()),
        "examples": [{"id": i, "was": ka[i], "now": kb[i], "text": ib.loc[i, "text"]} for i in relabelled[:max_rows]],
    }


def _split_of(r: Revision, key: Callable[[pd.DataFrame], pd.Series]) -> pd.DataFrame:
    parts = [r.table("split", s).assign(split=s) for s in ("train", "val", "test")]
    df = pd.concat(parts, ignore_index=True)
    df = df[df["origin"] == "original"].set_index("id")
    return pd.DataFrame({"split": df["split"], "label": key(df)})


def scores(y: pd.Series, pred: pd.Series, label_names: list[str], right: Any = None) -> tuple[float | None, float]:
    """(macro-F1 over every class of the models, accuracy): eval.json's definition, on these rows. A table without
    per-class probabilities holds entities per sentence (the token task): no macro-F1, and the share of sentences
    whose entities are all right."""
    if not label_names:
        return None, float(np.mean(right)) if right is not None and len(right) else 0.0
    yy, pp = encode_labels(y, label_names, "test labels"), encode_labels(pred, label_names, "predictions")
    return macro_f1(yy, pp, len(label_names)), accuracy(yy, pp)


def diff(a: Revision, b: Revision, max_rows: int = 10, key: Callable[[pd.DataFrame], pd.Series] | None = None
         ) -> dict:
    """What changed from `a` to `b`: rows per stage, augment's variants, rows that moved split, and each model's test
    predictions. `key` reads a table's labels (the task's `diff_key`; default: the `label` column)."""
    key = key or (lambda frame: frame["label"])
    out: dict[str, Any] = {"a": a.label, "b": b.label, "stages": {}, "moved_split": None, "variants": {},
                           "models": {}}
    for stage in DATA_STAGES:
        roles = [r for _, r in TABLES[stage] if r not in ("dropped", "issues")]
        ta = pd.concat([a.table(stage, r) for r in roles], ignore_index=True)
        tb = pd.concat([b.table(stage, r) for r in roles], ignore_index=True)
        out["stages"][stage] = _rows_diff(ta, tb, key, max_rows if stage == "clean" else 0)
        if stage == "augment":
            va, vb = set(ta.loc[ta["origin"] != "original", "id"]), set(tb.loc[tb["origin"] != "original", "id"])
            out["variants"] = {"kept_in_both": len(va & vb), "new": len(vb - va), "gone": len(va - vb)}
    sa, sb = _split_of(a, key), _split_of(b, key)
    common = sa.index.intersection(sb.index)
    # With the hash split no row may move; relabelled rows are counted apart (they could move under `exact`).
    same_label = common[(sa.loc[common, "label"] == sb.loc[common, "label"]).to_numpy()]
    moved = same_label[(sa.loc[same_label, "split"] != sb.loc[same_label, "split"]).to_numpy()]
    relabelled = common.difference(same_label)
    out["moved_split"] = {"rows": int(len(moved)), "relabelled_rows_moved": int(
        (sa.loc[relabelled, "split"] != sb.loc[relabelled, "split"]).sum()), "examples": [
        {"id": i, "from": sa.loc[i, "split"], "to": sb.loc[i, "split"]} for i in moved[:max_rows]]}
    pa, pb = a.table("evaluate", "predictions"), b.table("evaluate", "predictions")
    ma, mb = (r.json(r.path("evaluate", "metrics")) or {} for r in (a, b))
    test_b = b.table("split", "test").set_index("id")
    for model in sorted(set(pa["model"]) & set(pb["model"])):
        xa = pa[pa["model"] == model].set_index("id")
        xb = pb[pb["model"] == model].set_index("id")
        ids = xa.index.intersection(xb.index)
        ra, rb = xa.loc[ids, "prediction"] == xa.loc[ids, "label"], xb.loc[ids, "prediction"] == xb.loc[ids, "label"]
        fixed, broken = ids[(~ra & rb).to_numpy()], ids[(ra & ~rb).to_numpy()]
        f1a, acca = scores(xa.loc[ids, "label"], xa.loc[ids, "prediction"], prediction_labels(pa), ra)
        f1b, accb = scores(xb.loc[ids, "label"], xb.loc[ids, "prediction"], prediction_labels(pb), rb)
        out["models"][model] = {
            "common_test_rows": int(len(ids)), "test_rows": [int(len(xa)), int(len(xb))],
            "fixed": int(len(fixed)), "broken": int(len(broken)),
            "changed_prediction": int((xa.loc[ids, "prediction"] != xb.loc[ids, "prediction"]).sum()),
            "macro_f1_common": [None if f1a is None else round(f1a, 4), None if f1b is None else round(f1b, 4)],
            "accuracy_common": [round(acca, 4), round(accb, 4)],
            "macro_f1_all": [ma.get(model, {}).get("macro_f1"), mb.get(model, {}).get("macro_f1")],
            "accuracy_all": [ma.get(model, {}).get("accuracy"), mb.get(model, {}).get("accuracy")],
            "examples": [{"id": i, "change": c, "label": xb.loc[i, "label"], "was": xa.loc[i, "prediction"],
                          "now": xb.loc[i, "prediction"],
                          "text": test_b["text"].get(i, "") if i in test_b.index else ""}
                         for c, group in (("fixed", fixed), ("broken", broken)) for i in group[:max_rows]],
        }
    return out


def format_diff(d: dict) -> str:
    lines = [f"lineage diff {d['a']} -> {d['b']}", "",
             f"{'stage':<10} {'added':>7} {'removed':>8} {'relabelled':>11} {'text changed':>13}"]
    for stage, c in d["stages"].items():
        lines.append(f"{stage:<10} {c['added']:>7} {c['removed']:>8} {c['relabelled']:>11} {c['text_changed']:>13}")
    for e in d["stages"].get("clean", {}).get("examples", []):
        lines.append(f"  relabelled {e['id']}: {e['was']!r} -> {e['now']!r}: {_short(e['text'], 70)}")
    v = d["variants"]
    lines += ["", f"variants (augment): {v.get('kept_in_both', 0)} in both, {v.get('new', 0)} new, "
                  f"{v.get('gone', 0)} gone",
              f"original rows that moved split: {d['moved_split']['rows']} (relabelled rows that moved: "
              f"{d['moved_split']['relabelled_rows_moved']})"]
    for e in d["moved_split"]["examples"]:
        lines.append(f"  {e['id']}: {e['from']} -> {e['to']}")
    if d["models"]:
        lines += ["", f"{'model':<12} {'common':>7} {'fixed':>6} {'broken':>7} {'macro-F1 common rows':>24} "
                      f"{'macro-F1 all (metrics diff)':>30} {'accuracy common':>18}"]
    for m, x in d["models"].items():
        f1c = " -> ".join("n/a" if v is None else f"{v:.4f}" for v in x["macro_f1_common"])
        f1a = " -> ".join("n/a" if v is None else f"{v:.4f}" for v in x["macro_f1_all"])
        acc = f"{x['accuracy_common'][0]:.4f} -> {x['accuracy_common'][1]:.4f}"
        lines.append(f"{m:<12} {x['common_test_rows']:>7} {x['fixed']:>6} {x['broken']:>7} {f1c:>24} {f1a:>30} "
                     f"{acc:>18}")
    for m, x in d["models"].items():
        for e in x["examples"]:
            lines.append(f"  {m} {e['change']:<6} {e['id']} {e['was']!r} -> {e['now']!r} (label {e['label']!r}): "
                         f"{_short(e['text'], 70)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
def _default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    return str(o)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    setup_logging()
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=".", help="the project folder (default: here)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    # The same two options after the subcommand, where users type them (`lineage trace --raw-row 5 --json`);
    # SUPPRESS keeps a subparser from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", default=argparse.SUPPRESS, help="the project folder (default: here)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trace", parents=[common], help="a row from its raw line through every stage to the models")
    t.add_argument("id", nargs="?")
    t.add_argument("--text", help="a substring of the row's text (case-insensitive)")
    t.add_argument("--raw-row", type=int, help="the 1-based data row of the raw file (-k: row k of the feedback file)")
    t.add_argument("--request-id", help="the request a feedback row came from (ingest keeps it)")
    t.add_argument("--rev", help="a git revision or dvc exp name (default: the workspace)")
    t.add_argument("--limit", type=int, default=10)
    m = sub.add_parser("model", parents=[common], help="a model's inputs, params, commits, and whether it is current")
    m.add_argument("path")
    m.add_argument("--params", default="params.yaml")
    d = sub.add_parser("diff", parents=[common], help="rows, splits and predictions changed between two revisions")
    d.add_argument("rev_a", nargs="?", default="HEAD")
    d.add_argument("rev_b", nargs="?", default=None, help="default: the workspace")
    args = ap.parse_args(argv)
    root = Path(args.repo).resolve()

    def _run() -> None:
        if args.cmd == "trace":
            if sum(x is not None for x in (args.id, args.text, args.raw_row, args.request_id)) != 1:
                raise ProjectError("trace: give exactly one of ID, --text, --raw-row or --request-id")
            result = trace(open_revision(args.rev, root), args.id, args.text, args.raw_row, args.limit,
                           args.request_id, task_for(load_params(root / "params.yaml")).diff_key)
            fmt = format_trace
        elif args.cmd == "model":
            result = model_status(root / args.path, root, root / args.params)
            fmt = format_model
        else:
            result = diff(open_revision(args.rev_a, root), open_revision(args.rev_b, root),
                          key=task_for(load_params(root / "params.yaml")).diff_key)
            fmt = format_diff
        sys.stdout.write((json.dumps(result, indent=2, default=_default) if args.json else fmt(result)) + "\n")

    run_stage(_run)


if __name__ == "__main__":
    main()

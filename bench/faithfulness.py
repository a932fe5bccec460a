"""Which attribution method is faithful to the model it explains, at what cost: ERASER's removal metrics.

    python -m bench.faithfulness sms-spam [--rows 300]          # the bundled project's models (after dvc repro)
    python -m bench.faithfulness healthtweets-2013 [--rows 300] # trains first: a clone, README steps, dvc repro
                                                               # train baseline (bench/byo.py), then measures
    python -m bench.faithfulness --reports sms-spam healthtweets-2013   # after a full `dvc repro` of each project:
                                                               # REPORT.md's "Why the models decide" of each

For each packaged model of a dataset (teacher and torch student: every method; the int8 ONNX student: occlusion;
the TF-IDF baseline: its coefficients and occlusion) and each method it can run, on up to `--rows` test rows (a
seeded sample): the explanations of the predicted class, their cost per text on this machine, and
comprehensiveness and sufficiency (pipeline/core/faithfulness.py: AOPC over ERASER's 1/5/10/20/50% bins), each
paired per text against random words, against occlusion and, for torch models, against attention weights, with
95% bootstrap CIs over texts. Also how often the int8 student and the torch student it was exported from name the
same strongest word (occlusion on both). Writes bench/results/faithfulness.json and FAITHFULNESS.md, with the
machine and date.
`--reports` gathers the evaluate stage's own reading of each project (its words per class, errors, disagreements
and shortcut check) into bench/results/EXPLAIN_REPORTS.md.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, ROOT, measured, record

WORK = ROOT / "bench" / "work" / "byo"


def project_for(name: str, rows_sets: list[str]) -> Path:
    """The project whose models are explained: this checkout for the bundled data, else a trained clone."""
    if name == "sms-spam":
        return ROOT
    repo = WORK / f"{name}-explain"
    if not (repo / "data" / "models" / "teacher" / "lineage.json").is_file():
        from bench.byo import run
        from bench.corpora import build

        run(f"{name}-explain", build(name), rows_sets, target="train baseline")  # the teacher and the baseline
    return repo


def models_of(repo: Path) -> dict[str, Path]:
    packaged, trained = repo / "models", repo / "data" / "models"
    found = {}
    for name in ("teacher", "student", "student-onnx", "baseline"):
        for base in (packaged, trained):
            if (base / name / "lineage.json").is_file():
                found[name] = base / name
                break
    return found


def measure(model, texts: list[str], method: str) -> tuple[list, dict, float]:
    from pipeline.core.attribution import explain
    from pipeline.core.faithfulness import removal_scores

    t0 = time.perf_counter()
    found = explain(model, texts, method, steps=20)
    seconds = time.perf_counter() - t0
    return found, removal_scores(model, found), seconds / max(1, len(texts))


def dataset(name: str, rows: int, seed: int) -> dict:
    from pipeline.core.attribution import available
    from pipeline.core.faithfulness import paired, top_agreement
    from pipeline.core.io import read_table
    from pipeline.core.scoring import open_model

    repo = project_for(name, [])
    test = read_table(repo / "data" / "processed" / "test.parquet")
    test = test.sample(n=min(rows, len(test)), random_state=seed) if len(test) > rows else test
    texts = test["text"].tolist()
    out: dict = {"rows": len(texts), "models": {}, "project": str(repo.relative_to(ROOT)) or "."}
    kept: dict = {}
    for label, folder in models_of(repo).items():
        model = open_model(folder)
        res: dict = {}
        for method in available(model):
            found, scores, cost = measure(model, texts, method)
            kept[(label, method)] = found
            res[method] = {"seconds_per_text": cost, **{k: float(v.mean()) for k, v in scores.items()},
                           "_scores": scores}
        for method, r in res.items():
            for ref in ("random", "attention", "occlusion"):
                if ref in res and ref != method:
                    a, b = r["_scores"], res[ref]["_scores"]
                    r[f"comprehensiveness_vs_{ref}"] = paired(a["comprehensiveness"], b["comprehensiveness"])
                    r[f"sufficiency_vs_{ref}"] = paired(b["sufficiency"], a["sufficiency"])  # lower is better
        out["models"][label] = {"folder": str(folder.relative_to(ROOT)),
                                "methods": {m: {k: v for k, v in r.items() if k != "_scores"} for m, r in res.items()}}
    if ("student", "occlusion") in kept and ("student-onnx", "occlusion") in kept:
        pair = kept[("student", "occlusion")], kept[("student-onnx", "occlusion")]
        out["int8_vs_torch_student"] = top_agreement(*pair)
    return out


def variant(repo: Path) -> str:
    """How a project's models differ from the README's defaults where it matters to attributions (a clone trained
    again with its URLs masked is another dataset as far as its models can tell), as a suffix to its name."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    return " (clean.mask_urls)" if (params.get("clean") or {}).get("mask_urls") else ""


def fmt(d: dict | None) -> str:
    if d is None:
        return ""
    star = " *" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else ""
    return f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]{star}"


def markdown(res: dict) -> str:
    lines = ["# Attribution faithfulness (ERASER comprehensiveness and sufficiency)", "",
             measured(res["machine"]) + ". Produced by `python -m bench.faithfulness <dataset>`.", "",
             "Comprehensiveness: the drop in the predicted class's probability when a method's top words are removed "
             "(higher = the words matter); sufficiency: the drop when only they are kept (lower = they carry the "
             "decision); each the mean over texts of AOPC across the 1/5/10/20/50% bins. \"vs random\", \"vs "
             "attention\" and \"vs occlusion\": the paired difference per text, oriented so that positive means "
             "better, with a 95% bootstrap CI over texts (* where it excludes 0).", ""]
    for name, d in res["datasets"].items():
        lines += [f"## {name}", "", f"{d['rows']} test rows; project `{d['project']}`.", "",
                  "| model | method | s/text | comprehensiveness | sufficiency | comp. vs random | suff. vs random | "
                  "comp. vs attention | suff. vs attention | comp. vs occlusion | suff. vs occlusion |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, m in d["models"].items():
            for method, r in sorted(m["methods"].items(), key=lambda kv: -kv[1]["comprehensiveness"]):
                lines.append(f"| {label} | {method} | {r['seconds_per_text']:.4f} | {r['comprehensiveness']:.3f} | "
                             f"{r['sufficiency']:.3f} | {fmt(r.get('comprehensiveness_vs_random'))} | "
                             f"{fmt(r.get('sufficiency_vs_random'))} | {fmt(r.get('comprehensiveness_vs_attention'))} "
                             f"| {fmt(r.get('sufficiency_vs_attention'))} | "
                             f"{fmt(r.get('comprehensiveness_vs_occlusion'))} | "
                             f"{fmt(r.get('sufficiency_vs_occlusion'))} |")
        a = d.get("int8_vs_torch_student")
        if a:
            lines += ["", f"int8 ONNX student vs the torch student (occlusion on both, {a['texts']} texts): the "
                          f"same strongest word for {a['same_top_word']:.1%} of them; top-3 overlap "
                          f"{a['top3_overlap']:.1%}."]
        lines.append("")
    return "\n".join(lines)


def reports(names: list[str]) -> str:
    """Each project's REPORT.md section "Why the models decide", as its own `dvc repro` wrote it."""
    import subprocess

    from bench.common import machine

    out = ["# What the report's attributions say on real data", "",
           measured(machine()) + " (the date this file was gathered; each section names its project's commit). "
           "Produced by `python -m bench.faithfulness --reports`.", ""]
    for name in names:
        repo = project_for(name, [])
        text = (repo / "metrics" / "REPORT.md").read_text()
        if "## Why the models decide" not in text:
            raise SystemExit(f"{repo}: its REPORT.md has no attributions: run a full `dvc repro` there first")
        rev = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %cs"], capture_output=True,
                             text=True).stdout.strip()
        section = text[text.index("## Why the models decide"):].split("\n", 1)[1]
        out += [f"## {name}", "", f"Project `{repo.relative_to(ROOT) if repo != ROOT else '.'}` at {rev}.", "",
                section.strip(), ""]
    return "\n".join(out)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reports", action="store_true", help="gather each project's REPORT.md attributions instead")
    args = ap.parse_args()
    if args.reports:
        (OUT / "EXPLAIN_REPORTS.md").write_text(reports(args.datasets))
        return
    for name in args.datasets:
        row = dataset(name, args.rows, args.seed)
        print(record(OUT, "faithfulness", name + variant(project_for(name, [])), row, markdown))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

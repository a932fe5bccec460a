"""`finetune check`'s cost estimate against real `dvc repro` times, on datasets of different lengths.

    python -m bench.estimate_check [wnut16 turkish-web news-articles-1200 healthtweets-2013 sms-spam ...]
                                   [--actual sms-spam=780:"dvc repro of the bundled project, commit abc1234"]

For each dataset: the file as bench/corpora.py builds it, the params a user sets by the README's steps (a table:
`clean.text_column/label_column: text/label`, `label_names: {}`; a token file: `task: token` and what its
`finetune check` asked for, as bench/ner_repro.py sets), then the estimate check prints (pipeline/core/estimate.py:
the plan, and a probe of a few real training steps on this machine), against the wall time of a real `dvc repro`
of the same data with the same defaults on this machine: bench/results/ner_repro.json for the token sets (this
code), bench/results/DATASETS.md for the tables (`python -m bench.byo`, at the commit it names). The estimate
counts the model stages and each stage's start-up, the actual time every stage. `sms-spam` is the bundled data with
params.yaml as it is; its actual time, like any other measured elsewhere, is given with `--actual`. Results of
earlier runs are kept (a dataset rerun replaces its row). Writes bench/results/estimate.json and ESTIMATE.md.
"""
from __future__ import annotations

import argparse
import json
import re
import time

from bench.common import OUT, ROOT, machine, measured
from bench.corpora import FILES, build
from bench.ner_repro import EXTRA

DATASETS_MD = {"healthtweets-2013": "ht2013"}  # a builder's name where DATASETS.md's section differs
DEFAULT = ["wnut16", "turkish-web", "news-articles-1200", "healthtweets-2013"]


def actual(name: str) -> dict | None:
    """The real `dvc repro` wall time of `name` with the defaults on this machine, and where it comes from."""
    if name in FILES:
        runs = json.loads((OUT / "ner_repro.json").read_text())["datasets"]
        if name in runs and runs[name].get("repro_seconds"):
            return {"seconds": runs[name]["repro_seconds"], "source": "ner_repro.json (this code)"}
        return None
    section = DATASETS_MD.get(name, name)
    text = (OUT / "DATASETS.md").read_text()
    m = re.search(rf"## {re.escape(section)}\n\n.*?`dvc repro` (\d+) min at commit (\w+) (\S+)\.", text, re.S)
    return {"seconds": int(m.group(1)) * 60, "source": f"DATASETS.md (commit {m.group(2)}, {m.group(3)})"} if m \
        else None


def params_for(name: str):
    from pipeline.core.params import Params, load_params

    if name == "sms-spam":
        return load_params(ROOT / "params.yaml")
    if name in FILES:
        return Params.model_validate({"task": "token", **EXTRA.get(name, {})})
    return Params.model_validate({"clean": {"text_column": "text", "label_column": "label", "label_names": {}}})


def run(names: list[str], given: dict[str, dict]) -> dict:
    from pipeline.core.estimate import estimate
    from pipeline.core.tasks import task_for

    path = OUT / "estimate.json"
    out: dict = json.loads(path.read_text()) if path.is_file() else {"datasets": {}}
    out["machine"] = machine()
    for name in names:
        raw = ROOT / "data" / "raw" / "sms-spam.csv" if name == "sms-spam" else build(name)
        params = params_for(name)
        task = task_for(params)
        t0 = time.perf_counter()
        kept = task.clean_file(str(raw), params).kept
        est = estimate(task, params, kept)
        real = given.get(name) or actual(name)
        row = {"rows": len(kept), "estimate_seconds": round(est.total), "parts": {k: round(v) for k, v in
                                                                                   est.parts.items()},
               "plan": est.plan, "fallbacks": est.fallbacks, "check_seconds": round(time.perf_counter() - t0, 1),
               "actual": real, "ratio": round(est.total / real["seconds"], 2) if real else None}
        out["datasets"][name] = row
        print(name, json.dumps({k: row[k] for k in ("rows", "estimate_seconds", "actual", "ratio")}))
    return out


def markdown(res: dict) -> str:
    lines = ["# `finetune check`'s cost estimate against real `dvc repro` times", "",
             measured(res["machine"]) + ". Produced by `python -m bench.estimate_check`. The estimate counts the "
             "model stages (teacher, teacher_logits, the first student tried, export and evaluation); the actual "
             "time is the whole `dvc repro`. Within ±50% is issue 35's bar.", "",
             "| dataset | rows | the plan | estimate | actual `dvc repro` | estimate / actual | within ±50% "
             "| check took |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res["datasets"].items():
        a = r["actual"]
        plan = r["plan"][0].split(": ", 1)[1]
        ok = "yes" if r["ratio"] and 0.5 <= r["ratio"] <= 1.5 else ("no" if r["ratio"] else "—")
        real = f"{a['seconds'] / 60:.1f} min, {a['source']}" if a else "—"
        lines.append(f"| {name} | {r['rows']:,} | {plan} | {r['estimate_seconds'] / 60:.1f} min | {real} | "
                     f"{r['ratio'] or '—'} | {ok} | {r['check_seconds']} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--actual", action="append", default=[], metavar='NAME=SECONDS:"SOURCE"',
                    help="a real dvc repro time measured elsewhere, and where")
    args = ap.parse_args()
    given = {}
    for spec in args.actual:
        name, rest = spec.split("=", 1)
        seconds, source = rest.split(":", 1)
        given[name] = {"seconds": float(seconds), "source": source}
    res = run(args.names, given)
    (OUT / "estimate.json").write_text(json.dumps(res, indent=2) + "\n")
    (OUT / "ESTIMATE.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

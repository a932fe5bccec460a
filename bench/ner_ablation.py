"""The token task's data stages switched on one at a time, against the defaults, on the same test sentences.

    python -m bench.ner_ablation wnut16 [--variants mentions synonym oversample]   # ~18 min a variant on 2 cores

Each variant is bench/ner_repro.py's run (a fresh project, the README's steps, `dvc repro`) with one switch:
`mentions` (augment.mentions.enabled: true, mention replacement; `auto`, the default, already runs it where most
words are O, as on the tweets), `no-mentions` (augment.mentions.enabled: false, the ablation of that default),
`synonym` (augment.synonym.enabled: WordNet synonyms on
O words), `oversample` (rebalance.strategy: oversample, sentences with no entity exempt). The split keeps only
original sentences in validation and test, so every run is judged on the same test sentences, and each variant's
teacher and student are compared with the default run's (bench/work/ner_repro/<dataset>, run first if missing)
sentence by sentence: entity F1 difference with a paired bootstrap CI (* = it excludes 0).
Writes bench/results/ner_ablation.json and NER_ABLATION.md.
"""
from __future__ import annotations

import argparse
import json

import pandas as pd

from bench.common import OUT, fmt_ci, fmt_diff, measured, record
from bench.corpora import FILES
from bench.ner_repro import WORK, run

VARIANTS = {"mentions": {"augment": {"mentions": {"enabled": True}}},
            "no-mentions": {"augment": {"mentions": {"enabled": False}}},
            "synonym": {"augment": {"synonym": {"enabled": True}}},
            "oversample": {"rebalance": {"strategy": "oversample"}}}


def predictions(folder: str) -> pd.DataFrame:
    return pd.read_parquet(WORK / folder / "data" / "eval" / "test_predictions.parquet")


def paired(base: pd.DataFrame, other: pd.DataFrame, model: str) -> dict:
    from pipeline.core.entities import counts_from_text, paired_entity_f1

    a = other[other["model"] == model].set_index("id")
    b = base[base["model"] == model].set_index("id").loc[a.index]
    if not (a["label"] == b["label"]).all():
        raise RuntimeError("the runs' test sentences differ: the comparison would not be paired")
    return paired_entity_f1(counts_from_text(a["label"].tolist(), a["prediction"].tolist()),
                            counts_from_text(b["label"].tolist(), b["prediction"].tolist()))


def ablate(name: str, variants: list[str]) -> dict:
    if not (WORK / name / "data" / "eval" / "test_predictions.parquet").is_file():
        run(name)
    base = predictions(name)
    out = {}
    for v in variants:
        folder = f"{name}-{v}"
        r = run(name, folder, VARIANTS[v])
        aug = json.loads((WORK / folder / "metrics" / "data" / "augment.json").read_text())
        bal = json.loads((WORK / folder / "metrics" / "data" / "rebalance.json").read_text())
        other = predictions(folder)
        out[v] = {"entity_f1": {m: r["entity_f1"][m] for m in ("teacher", "student")},
                  "vs_default": {m: paired(base, other, m) for m in ("teacher", "student")},
                  "added": aug.get("added"), "dropped": aug.get("dropped"),
                  "rows_after_rebalance": bal.get("rows_out"), "rebalance_added": bal.get("added", 0),
                  "repro_seconds": r["repro_seconds"]}
        print(v, json.dumps(out[v]["vs_default"]))
    return out


def markdown(res: dict) -> str:
    lines = ["# The token task's data stages, one at a time against the defaults", "",
             measured(res["machine"]) + ". Produced by `python -m bench.ner_ablation`.", "",
             __doc__.split("\n\n")[2].replace("\n", " "), "",
             "The wnut16 rows were measured when every method was off by default (before `augment.mentions.enabled: "
             "auto`, which they chose): their default is the run without mention replacement.", "",
             "| data | variant | sentences added | teacher entity F1 | teacher − default | student entity F1 | "
             "student − default |", "|---|---|---|---|---|---|---|"]
    for name, variants in res["datasets"].items():
        for v, r in variants.items():
            f, d = r["entity_f1"], r["vs_default"]
            added = sum((r["added"] or {}).values()) + r.get("rebalance_added", 0)
            lines.append(f"| {name} | {v} | {added} | {fmt_ci(f['teacher'])} | "
                         f"{fmt_diff(d['teacher'])} | {fmt_ci(f['student'])} | {fmt_diff(d['student'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", choices=sorted(FILES))
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    args = ap.parse_args()
    path = OUT / "ner_ablation.json"
    for name in args.names:
        before = json.loads(path.read_text())["datasets"].get(name, {}) if path.is_file() else {}
        print(record(OUT, "ner_ablation", name, {**before, **ablate(name, args.variants)}, markdown))

if __name__ == "__main__":
    main()

"""The token task as a user runs it: for each dataset, a fresh project (this checkout's pipeline, dvc.yaml with the
`raw` var pointed at the file, params.yaml at its defaults with `task: token` and any keys a dataset needs), then
`dvc repro`, then the figures evaluate wrote: entity F1 of teacher, student, int8 student and CRF with CIs over
sentences, the paired differences, and the CPU throughput ratios measured side by side in the one evaluate run.

    python -m bench.ner_repro wnut16 turkish-web      # about 12 minutes a dataset on 2 cores
    -> bench/results/ner_repro.json, NER_REPRO.md
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import OUT, ROOT, fmt_ci, fmt_diff, measured, record
from bench.corpora import FILES

STEM = "ner_repro"
WORK = ROOT / "bench" / "work" / "ner_repro"
# What each dataset needs beyond `task: token`, as its `finetune check` says: the treebank's one AFFIX word is too
# rare to split, so it joins X (other); in the wiki half ONOM and AFFIX do (two sentences each).
EXTRA = {"turkish-web": {"clean": {"label_names": {"AFFIX": "X"}}},
         "turkish-wiki": {"clean": {"label_names": {"ONOM": "X", "AFFIX": "X"}}}}


def project(name: str, folder: str | None = None, extra: dict | None = None) -> Path:
    """A fresh project for dataset `name` in WORK/<folder or name>; `extra`: params sections to update besides the
    dataset's own (an ablation's switch)."""
    raw = FILES[name]()
    repo = WORK / (folder or name)
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    (repo / "data" / "raw").mkdir(parents=True)
    shutil.copy(raw, repo / "data" / "raw" / raw.name)
    (repo / "dvc.yaml").write_text(dvc_yaml.replace("raw: data/raw/sms-spam.csv", f"raw: data/raw/{raw.name}"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"] = "token"
    for section, values in EXTRA.get(name, {}).items():
        params[section].update(values)
    merge(params, extra or {})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "data" / "feedback", repo / "data" / "feedback")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.site_cache_dir", str(repo / ".dvc-site")]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    return repo


def merge(node: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            merge(node[key], value)
        else:
            node[key] = value


def run(name: str, folder: str | None = None, extra: dict | None = None) -> dict:
    repo = project(name, folder, extra)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    start = time.perf_counter()
    with open(repo / "repro.log", "w") as log:
        subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, check=True, stdout=log,
                       stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    ev = json.loads((repo / "metrics" / "eval.json").read_text())
    speed = json.loads((repo / "metrics" / "speed.json").read_text())
    clean = json.loads((repo / "metrics" / "data" / "clean.json").read_text())
    export = json.loads((repo / "metrics" / "export.json").read_text())["student"]
    models = ("teacher", "student", "student_onnx", "baseline")
    return {"sentences": {"in": clean["rows_in"], "kept": clean["rows_out"], "dropped": clean["dropped"],
                          "test": ev["teacher"]["entity_f1_ci"]["sentences"]},
            "types": len(ev["teacher"]["per_type"]), "scheme": clean["scheme"],
            "entity_f1": {m: ev[m]["entity_f1_ci"] for m in models},
            "comparisons": ev["comparisons"], "errors": {m: ev[m]["errors"] for m in models},
            "speed": {k: v for k, v in speed.items() if k.endswith("_vs_teacher")},
            "sentences_per_s": {m: round(speed[m]["cpu_samples_per_s_batch"], 1) for m in models},
            "export": {k: export[k] for k in ("recipe", "entity_f1_ratio", "tag_agreement")},
            "repro_seconds": round(seconds)}


def markdown(results: dict) -> str:
    lines = ["# Token classification through `dvc repro` (the README's steps, default params)", "",
             measured(results["machine"]) + ".", "", __doc__.split("\n\n")[0].replace("\n", " "), "",
             "| data | test sentences, types | teacher | student | int8 student | CRF | teacher − CRF | "
             "int8 keeps | int8 speed |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["datasets"].items():
        f, c = r["entity_f1"], r["comparisons"]
        lines.append(f"| {name} | {r['sentences']['test']}, {r['types']} | {fmt_ci(f['teacher'])} | "
                     f"{fmt_ci(f['student'])} | {fmt_ci(f['student_onnx'])} | {fmt_ci(f['baseline'])} | "
                     f"{fmt_diff(c['teacher_vs_baseline'])} | {c['student_onnx_vs_teacher']['f1_retained']:.1%} | "
                     f"{r['speed']['student_onnx_vs_teacher']['throughput_speedup']:.1f}× |")
    lines += ["", "Entity F1: strict (type and both boundaries), micro over types, 95% BCa bootstrap CIs over test "
              "sentences; differences paired on the same sentences (* = the CI excludes 0). For parts of speech "
              "every tag is a one-word span, so the figure is the words' tag micro-F1. Speed: raw text in, spans out, "
              "sentences/s at batch 32 against the teacher's, in one evaluate run.", ""]
    for name, r in results["datasets"].items():
        lines.append(f"- {name}: {r['sentences']['in']} sentences in, {r['sentences']['kept']} kept "
                     f"({r['sentences']['dropped'] or 'none dropped'}), tags {r['scheme']}; int8 recipe "
                     f"{r['export']['recipe']} (entity-F1 ratio {r['export']['entity_f1_ratio']}); student − teacher "
                     f"{fmt_diff(r['comparisons']['student_vs_teacher'])}; `dvc repro` {r['repro_seconds']} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", choices=sorted(FILES))
    for name in ap.parse_args().names:
        print(record(OUT, STEM, name, run(name), markdown))


if __name__ == "__main__":
    main()

"""Monitor's worked example: a model trained on 2013's health tweets meets 2014's, then learns from labelled rows.

    python -m bench.corpora healthtweets-2013 healthtweets-2014
    python -m bench.byo run --name ht2013 --raw bench/work/datasets/healthtweets-2013.csv   # the README's steps
    python -m bench.shift prepare        # 2014 in two stratified halves: traffic (replayed) and shifted test rows
    python -m bench.shift replay         # serve --log-dir in the workspace, the traffic replayed, the server stopped
    python -m bench.shift monitor        # finetune monitor on the log, --to-label 200
    python -m bench.shift arms           # copies of the workspace: the 200 chosen rows vs 200 random traffic
                                         # rows, labelled from the held-back labels, `finetune ingest`, `dvc repro`
    python -m bench.shift report         # each arm's int8 student and teacher on the shifted test rows; SHIFT.md

Every step runs the product's own commands in the workspace bench/byo.py made (bench/work/byo/ht2013).
`arms` builds `selected` and `--draws` random arms (3 by default, each its own draw: one draw alone cannot say
whether the chosen rows' gain is beyond what any 200 rows give), each a full `dvc repro` (about 13 minutes on two
cores); `report` scores whichever arms exist.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import OUT, ROOT

WORK = ROOT / "bench" / "work"
WS = WORK / "byo" / "ht2013"
DATA = WORK / "datasets"
N_LABEL = 200


def sh(cmd: str, cwd: Path) -> str:
    """A command in the workspace with its virtualenv active; its output, or an error with the output's tail."""
    p = subprocess.run(["bash", "-c", f". .venv/bin/activate && {cmd}"], cwd=cwd, capture_output=True, text=True)
    if p.returncode not in (0, 3):  # 3: monitor's drift
        raise RuntimeError(f"{cmd}: exit {p.returncode}\n{(p.stdout + p.stderr)[-3000:]}")
    return p.stdout + p.stderr


def prepare() -> None:
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(DATA / "healthtweets-2014.csv")
    traffic, test = train_test_split(df, test_size=0.5, random_state=0, stratify=df["label"])
    traffic.to_csv(DATA / "ht2014-traffic.csv", index=False)
    test.to_csv(DATA / "ht2014-shifted-test.csv", index=False)
    print(len(traffic), len(test))


def replay() -> None:
    import socket

    import httpx
    from serve_load import wait_healthy  # bench/serve_load.py

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shutil.rmtree(WS / "logs", ignore_errors=True)
    server = subprocess.Popen(["bash", "-c", f". .venv/bin/activate && exec finetune serve --port {port} "
                                             "--log-dir logs"], cwd=WS)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url):
            raise RuntimeError("the server did not start")
        texts = pd.read_csv(DATA / "ht2014-traffic.csv")["text"].tolist()
        with httpx.Client(timeout=60) as c:
            for i in range(0, len(texts), 4):  # requests of 4 texts, in time order
                assert c.post(url + "/predict", json={"texts": texts[i:i + 4]}).status_code == 200
    finally:
        server.terminate()  # SIGTERM: the log is flushed
        server.wait(timeout=60)
    print(sh("python -c \"from pipeline.core.predlog import read_log; print(len(read_log('logs')), 'rows logged')\"",
             WS))


def monitor() -> None:
    out = sh(f"finetune monitor --current logs --to-label {N_LABEL} --out reports/monitor", WS)
    print(out[-1500:])


def label(rows: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Fill `label` from the held-back labels (the person labelling), matching by text."""
    from pipeline.core.params import CleanParams
    from pipeline.core.text import normalise_text

    key = {normalise_text(t, CleanParams()): lab for t, lab in zip(truth["text"], truth["label"])}
    return rows.assign(label=[key.get(t) for t in rows["text"]])


def arm_names(draws: int) -> list[str]:
    """`selected`, then one arm per random draw: `random` (draw 1), `random-2`, ..."""
    return ["selected", *(["random"] + [f"random-{k}" for k in range(2, draws + 1)])[:draws]]


def arms(draws: int, only: list[str] | None = None) -> None:
    traffic = pd.read_csv(DATA / "ht2014-traffic.csv")
    chosen = pd.read_csv(WS / "reports" / "monitor" / "to_label.csv")
    chosen = label(chosen, traffic)
    assert chosen["label"].notna().all(), "a chosen row's text was not found among the traffic rows"
    for name in arm_names(draws):
        if only and name not in only:
            continue
        draw = 1 if name == "random" else int(name.split("-")[1]) if name.startswith("random-") else None
        # each draw its own random_state: how much random rows gain varies from draw to draw, and one draw
        # alone cannot say whether the chosen rows' gain is beyond that variation
        rows = chosen if draw is None else traffic.sample(len(chosen), random_state=draw)[["text", "label"]]
        ws = WS.with_name(f"ht2013-{name}")
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(WS, ws, symlinks=True)
        # the 2013 run committed first, as the README says to after a run, so `lineage diff` has a "before"
        sh("git add dvc.lock data/feedback/labelled.csv && git commit -q -m '2013 model, before feedback'", ws)
        rows.to_csv(ws / "labelled.csv", index=False)
        print(name, sh("finetune ingest labelled.csv", ws)[-400:])
        t0 = time.time()
        sh("dvc repro", ws)
        print(name, f"dvc repro {time.time() - t0:.0f} s", flush=True)
        (ws / "lineage_diff.json").write_text(sh("finetune lineage --json diff 2>/dev/null", ws))


def report(draws: int) -> None:
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.scoring import open_model
    from pipeline.core.stats import metric_ci, paired_comparison

    test = pd.read_csv(DATA / "ht2014-shifted-test.csv")
    base_test = pd.read_parquet(WS / "data" / "processed" / "test.parquet")
    names = sorted(test["label"].unique())
    idx = {n: i for i, n in enumerate(names)}
    f1 = macro_f1_fn(len(names))
    y = test["label"].map(idx).to_numpy()
    y13 = base_test["label"].map(idx).to_numpy()
    arms = ["base", *(a for a in arm_names(draws) if WS.with_name(f"ht2013-{a}").joinpath("dvc.lock").is_file())]
    preds: dict[str, dict[str, np.ndarray]] = {"student_onnx": {}, "teacher": {}}
    in_year: dict[str, np.ndarray] = {}
    train_feedback: dict[str, int] = {}
    for arm in arms:
        ws = WS if arm == "base" else WS.with_name(f"ht2013-{arm}")
        for model, folder in (("student_onnx", "student-onnx"), ("teacher", "teacher")):
            scorer = open_model(ws / "models" / folder)
            preds[model][arm] = np.array([idx[r["label"]] for r in scorer.score(test["text"].tolist())])
            if model == "student_onnx":
                in_year[arm] = np.array([idx[r["label"]] for r in scorer.score(base_test["text"].tolist())])
        train = pd.read_parquet(ws / "data" / "processed" / "train.parquet")
        train_feedback[arm] = int(((train["raw_row"] < 0) & (train["origin"] == "original")).sum())  # feedback: -k
    monitor_json = json.loads((WS / "reports" / "monitor" / "monitor.json").read_text())
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
              "date": time.strftime("%Y-%m-%d"), "shifted_test_rows": len(y), "labelled_rows": N_LABEL,
              "arms": arms, "feedback_rows_in_train_split": train_feedback,
              "monitor": {"drift": monitor_json["drift"], "fired": monitor_json["fired"],
                          "checks": {c["name"]: c["p_value"] for c in monitor_json["checks"]}},
              "macro_f1_2013_test_student_onnx": {a: round(f1(y13, p), 4) for a, p in in_year.items()}}
    for model, by_arm in preds.items():
        result[model] = {
            "macro_f1_2014": {a: metric_ci(y, p, f1) for a, p in by_arm.items()},
            "vs_base": {a: paired_comparison(y, p, by_arm["base"], f1, name_a=a, name_b="base")
                        for a, p in by_arm.items() if a != "base"},
            "selected_vs_random": {a: paired_comparison(y, by_arm["selected"], p, f1, name_a="selected", name_b=a)
                                   for a, p in by_arm.items() if a.startswith("random")}}
    to_label = pd.read_csv(WS / "reports" / "monitor" / "to_label.csv")
    result["chosen_by_reason"] = {k: int(v) for k, v in to_label["reason"].value_counts().items()}
    traffic = pd.read_csv(DATA / "ht2014-traffic.csv")
    chosen = label(to_label, traffic)
    diff_file = WS.with_name("ht2013-selected") / "lineage_diff.json"
    if diff_file.is_file():  # `finetune lineage diff` in the selected arm: the commit before feedback -> after
        d = json.loads(diff_file.read_text())
        result["selected_lineage_diff"] = {"stages": d["stages"], "moved_split": d["moved_split"]}
    result["chosen_rows_base_student_wrong"] = round(float((chosen["label"] != to_label["prediction"]).mean()), 4)
    (OUT / "shift.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_md(result)
    print(json.dumps(result, indent=2, default=float))


def write_md(r: dict) -> None:
    def ci(x: dict) -> str:
        return f"{x['value']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]"

    def diff(x: dict) -> str:
        return f"{x['delta']:+.3f} [{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]" + (" *" if x["significant"] else "")

    lines = ["# A real shift, and what 200 labelled rows buy", "",
             f"Machine: {r['machine']}; run {r['date']}. Written by `python -m bench.shift report`; every arm built "
             "by the product's own commands (`finetune ingest`, `dvc repro`) in a copy of the 2013 workspace. "
             f"Macro-F1 on the {r['shifted_test_rows']:,} shifted test rows (2014 tweets never served nor "
             "labelled), 95% bootstrap CIs; differences paired on the same rows, * = the CI excludes 0.", "",
             f"Monitor on the replayed 2014 traffic: drift {r['monitor']['drift']}, fired: "
             f"{', '.join(r['monitor']['fired'])}. Rows chosen for a label: {r['chosen_by_reason']}; the 2013 "
             f"student had {r['chosen_rows_base_student_wrong']:.0%} of them wrong.", "",
             "| arm | labelled rows in train split | int8 student, 2014 | − base | teacher, 2014 | − base | "
             "int8 student, 2013 test |", "|---|---|---|---|---|---|---|"]
    for a in r["arms"]:
        s, t = r["student_onnx"], r["teacher"]
        lines.append(f"| {a} | {r['feedback_rows_in_train_split'][a]} | {ci(s['macro_f1_2014'][a])} | "
                     f"{diff(s['vs_base'][a]) if a != 'base' else ''} | {ci(t['macro_f1_2014'][a])} | "
                     f"{diff(t['vs_base'][a]) if a != 'base' else ''} | "
                     f"{r['macro_f1_2013_test_student_onnx'][a]:.3f} |")
    lines += ["", "Selected rows against each random draw (paired, same rows):", "",
              "| random arm | int8 student: selected − random | teacher: selected − random |", "|---|---|---|"]
    for a, x in r["student_onnx"]["selected_vs_random"].items():
        lines.append(f"| {a} | {diff(x)} | {diff(r['teacher']['selected_vs_random'][a])} |")
    notes = OUT / "shift_notes.md"  # what the numbers mean, written by hand after reading them
    if notes.is_file():
        lines += ["", notes.read_text().rstrip("\n")]
    (OUT / "SHIFT.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["prepare", "replay", "monitor", "arms", "report"])
    ap.add_argument("--draws", type=int, default=3, help="random-row arms (each its own draw)")
    ap.add_argument("--only", nargs="*", help="arms: build only these (e.g. random-2 random-3)")
    a = ap.parse_args()
    if a.step == "arms":
        return arms(a.draws, a.only)
    if a.step == "report":
        return report(a.draws)
    {"prepare": prepare, "replay": replay, "monitor": monitor}[a.step]()


if __name__ == "__main__":
    main()

"""`finetune monitor`'s false alarms and power, measured on the pipeline's own model and data.

    python -m bench.monitor [--draws 200] [--window 200] [--alpha 0.01]

After `dvc repro` (models/student-onnx, embedded by models/student; reference: the test split). False alarms:
`--draws` windows of `--window` rows drawn (seeded) from the test split itself (a replay: the window's rows are left
out of the reference) and from the validation split (unseen rows of the same distribution); the share of windows
with a drift verdict, overall and per check, against the `--alpha` it claims. Power: windows from real shifts —
a spam campaign (70% spam among real SMS rows), health-news tweets (bench/corpora.py), long news articles and
German parliament speeches — at several window sizes, the share that fires. Writes bench/results/monitor.json and
MONITOR.md, with the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter

import pandas as pd

from bench.common import OUT, ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--power-draws", type=int, default=20)
    args = ap.parse_args()

    from bench.corpora import build
    from pipeline.commands.monitor import find_embedder
    from pipeline.core.io import read_table
    from pipeline.core.monitoring import run_checks
    from pipeline.core.scoring import open_model

    model = ROOT / "models" / "student-onnx"
    scorer = open_model(model)
    embedder = find_embedder(scorer, None)
    test = read_table(ROOT / "data" / "processed" / "test.parquet")
    val = read_table(ROOT / "data" / "processed" / "val.parquet")
    train = read_table(ROOT / "data" / "processed" / "train.parquet")["text"].tolist()
    memo: dict = {}

    def run(window: pd.DataFrame, seed: int) -> dict:
        return run_checks(scorer, test, window[["text"]].reset_index(drop=True), train, embedder, args.alpha,
                          2000, seed, memo=memo)

    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                    "date": time.strftime("%Y-%m-%d"),
                    "model": str(model.relative_to(ROOT)), "embedder": str(embedder.relative_to(ROOT)),
                    "alpha": args.alpha, "window": args.window, "draws": args.draws, "false_alarms": {},
                    "power": {}}
    for name, pool in (("replay of test rows", test), ("validation rows", val)):
        t0 = time.perf_counter()
        n = min(args.window, len(pool) // 2)
        fired: Counter = Counter()
        alarms = 0
        for k in range(args.draws):
            r = run(pool.sample(n, random_state=k), k)
            alarms += r["drift"]
            fired.update(r["fired"])
        result["false_alarms"][name] = {"window": n, "draws": args.draws, "alarms": alarms,
                                        "rate": alarms / args.draws, "by_check": dict(fired),
                                        "seconds_per_run": round((time.perf_counter() - t0) / args.draws, 2)}
        print(name, result["false_alarms"][name], flush=True)

    spam = pd.concat([val, test])
    campaign = pd.concat([spam[spam["label"] == "spam"], spam[spam["label"] == "ham"]])
    shifts = {"spam campaign (70% spam, real SMS rows)": None,
              "health-news tweets": pd.read_csv(build("healthtweets-imbalanced")),
              "long news articles": pd.read_csv(build("news-articles")),
              "German parliament speeches": pd.read_csv(build("bundestag"))}
    for name, pool in shifts.items():
        for size in (50, 100, args.window):
            fired = Counter()
            alarms = 0
            for k in range(args.power_draws):
                if pool is None:
                    sp, hm = campaign[campaign["label"] == "spam"], campaign[campaign["label"] == "ham"]
                    n_spam = min(int(round(0.7 * size)), len(sp))
                    window = pd.concat([sp.sample(n_spam, random_state=k), hm.sample(size - n_spam, random_state=k)])
                else:
                    window = pool.sample(size, random_state=k)
                r = run(window, k)
                alarms += r["drift"]
                fired.update(r["fired"])
            result["power"].setdefault(name, {})[str(size)] = {"fired": alarms / args.power_draws,
                                                               "by_check": dict(fired)}
            print(name, size, result["power"][name][str(size)], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "monitor.json").write_text(json.dumps(result, indent=2) + "\n")
    write_md(result)


def write_md(r: dict) -> None:
    lines = ["# Monitor: false alarms and power", "",
             f"Machine: {r['machine']}; run {r.get('date', 'undated')}. "
             f"Model `{r['model']}` (embeddings: `{r['embedder']}`); reference: the test "
             f"split. Written by `python -m bench.monitor`. alpha {r['alpha']} over all checks.", "",
             "## False alarms: windows drawn like the test rows", "",
             "| traffic | window | draws | runs reporting drift | rate (claim: ≤ alpha) | which checks fired |",
             "|---|---|---|---|---|---|"]
    for name, f in r["false_alarms"].items():
        lines.append(f"| {name} | {f['window']} | {f['draws']} | {f['alarms']} | {f['rate']:.3f} | "
                     f"{', '.join(f'{k} {v}' for k, v in f['by_check'].items()) or '-'} |")
    lines += ["", "## Power: windows from real shifts", "", "| traffic | window | share of windows that fired | "
              "checks that fired (count over the windows) |", "|---|---|---|---|"]
    for name, sizes in r["power"].items():
        for size, p in sizes.items():
            lines.append(f"| {name} | {size} | {p['fired']:.2f} | "
                         f"{', '.join(f'{k} {v}' for k, v in sorted(p['by_check'].items())) or '-'} |")
    (OUT / "MONITOR.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Batch inference: the in-process path against Ray Data at 1 and 2 workers, side by side in one run.

    python -m bench.engine [--model data/models/teacher] [--rows 0]     # bench/results/ENGINE.md + engine.json

The teacher's logits over the training split (what the teacher_logits stage computes), and the int8 student's
over the same rows (what `finetune predict` computes): wall time and rows/s for each path, and whether the Ray
outputs are byte-identical to the in-process ones. Ray's time includes starting its actors and loading the model
in each (the embedded cluster itself is started once, before the timed runs, as a long-running cluster would be).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from bench.common import OUT, ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["data/models/teacher", "models/student-onnx"])
    ap.add_argument("--rows", type=int, default=0, help="first N training rows (0: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import ray

    from pipeline.core.engine import RayEngine
    from pipeline.core.io import read_table
    from pipeline.core.scoring import open_model

    texts = read_table(ROOT / "data" / "processed" / "train.parquet")["text"].tolist()
    texts = texts[:args.rows] if args.rows else texts
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}})
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
              "rows": len(texts), "batch_size": args.batch_size, "models": {}}
    for model in args.models:
        runs = {}
        t0 = time.perf_counter()
        local = open_model(ROOT / model).logits(texts, args.batch_size)
        runs["in-process"] = time.perf_counter() - t0
        same = {}
        for workers in (1, 2):
            engine = RayEngine(workers=workers)
            t0 = time.perf_counter()
            got = open_model(ROOT / model, engine=engine).logits(texts, args.batch_size)
            runs[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = time.perf_counter() - t0
            same[workers] = bool(np.array_equal(local, got))
        result["models"][model] = {"seconds": {k: round(v, 1) for k, v in runs.items()},
                                   "rows_per_s": {k: round(len(texts) / v, 1) for k, v in runs.items()},
                                   "identical": same}
        print(model, result["models"][model], flush=True)
    ray.shutdown()
    (OUT / "engine.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Batch inference: in-process vs Ray Data", "", f"Machine: {result['machine']}. "
             f"`python -m bench.engine`: logits of {result['rows']:,} training rows, batch {args.batch_size}; "
             "Ray's times include starting the actors and loading the model in each.", "",
             "| model | path | seconds | rows/s | byte-identical to in-process |", "|---|---|---|---|---|"]
    for model, m in result["models"].items():
        for path, secs in m["seconds"].items():
            ident = "" if path == "in-process" else ("yes" if m["identical"][int(path.split(", ")[1][0])] else "**no**")
            lines.append(f"| `{model}` | {path} | {secs} | {m['rows_per_s'][path]} | {ident} |")
    (OUT / "ENGINE.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""What `distill.blend_baseline: auto` decides on byo runs made before it existed (their teacher and baseline kept).

    python -m bench.blend_rule healthtweets-imbalanced ht2013 news-articles-1200   # -> bench/results/blend_rule.json

For each bench/work/byo/<name>: the teacher's logits and the baseline's probabilities on the validation rows, and
`pipeline.core.blend.choose_weight` (what teacher_logits runs) on them. Where it adopts no weight, the student's
targets are the teacher's logits byte for byte, so that run's student and every figure in DATASETS.md stand as
they are under the new default.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from bench.common import ROOT
from pipeline.core.blend import choose_weight
from pipeline.core.modeling import load_baseline
from pipeline.core.params import load_params
from pipeline.stages.teacher_logits import baseline_proba, teacher_logits

OUT = ROOT / "bench" / "results" / "blend_rule.json"


def decide(ws: Path) -> dict:
    """teacher_logits' own scoring of the validation rows (the teacher as trained, the fitted baseline), then auto."""
    teacher = ws / "data" / "models" / "teacher"
    names = json.loads((teacher / "lineage.json").read_text())["label_names"]
    val = pd.read_parquet(ws / "data" / "processed" / "val.parquet")
    params = load_params(ROOT / "params.yaml")
    z = teacher_logits(str(teacher), [val["text"].tolist()], params)
    prob = baseline_proba(load_baseline(ws / "data" / "models" / "baseline"), val["text"].tolist(), names)
    y = val["label"].map({n: i for i, n in enumerate(names)}).to_numpy()
    return choose_weight(z, prob, y, params.distill.selection_confidence, seed=params.seed)


def main() -> None:
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for name in sys.argv[1:]:
        results[name] = decide(ROOT / "bench" / "work" / "byo" / name)
        r = results[name]
        print(f"{name}: baseline weight {r['baseline_weight']} (best on validation {r['best_on_validation']}, "
              f"log-loss gain {r['log_loss_gain']:+.4f}, lower bound {r['log_loss_gain_lower']:+.4f})")
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

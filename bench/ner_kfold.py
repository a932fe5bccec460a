"""k disjoint test folds of one token dataset, pooled as `finetune kfold` pools them: where one test split cannot
tell the teacher from the CRF, more test sentences can.

    python -m bench.ner_kfold wnut16 --folds 3      # fold 0 is bench/ner_repro.py's run; ~18 min a fold on 2 cores

Fold 0 is bench/ner_repro.py's project (bench/work/ner_repro/<name>); fold f is the same run (a fresh project, the
README's steps, `dvc repro`) with `split.fold: f`, which moves the hash split's test slice, so the folds test
disjoint sentences and each fold's models are trained without its test sentences. The folds' test predictions are
pooled by `finetune kfold --pool`'s code (pipeline.commands.kfold.pool): entity F1 with 95% BCa CIs over every
pooled sentence, differences paired on them (* = the CI excludes 0). Writes bench/results/ner_kfold.json and
NER_KFOLD.md.
"""
from __future__ import annotations

import argparse

from bench.common import OUT, fmt_ci, fmt_diff, measured, record
from bench.ner_repro import WORK, run

MODELS = ("teacher", "student", "student_onnx", "baseline")


def folds(name: str, k: int) -> dict:
    from pipeline.commands.kfold import load_folds, pool

    paths = []
    for f in range(k):
        folder = name if f == 0 else f"{name}-fold{f}"
        pred = WORK / folder / "data" / "eval" / "test_predictions.parquet"
        if not pred.is_file():
            run(name, folder if f else None, {"split": {"fold": f}} if f else None)
        paths.append(pred)
    frames, names = load_folds(paths)
    out = pool(frames, names)
    out["fold_folders"] = [p.parents[2].name for p in paths]
    return out


def markdown(res: dict) -> str:
    lines = ["# k-fold for the token task: entity F1 over disjoint test folds, pooled", "",
             measured(res["machine"]) + ". Produced by `python -m bench.ner_kfold`.", "",
             __doc__.split("\n\n")[2].replace("\n", " "), ""]
    for name, r in res["datasets"].items():
        models = [m for m in MODELS if m in r["models"]]
        lines += [f"## {name}", "", f"{r['folds']} folds ({', '.join(r['fold_folders'])}), {r['rows']} test "
                  f"sentences pooled, {r['classes']} entity types.", "",
                  "| fold | sentences | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        for f in r["per_fold"]:
            lines.append(f"| {f['fold'].split('/ner_repro/')[-1].split('/')[0]} | {f['rows']} | "
                         + " | ".join(f"{f['macro_f1'][m]:.3f}" for m in models) + " |")
        lines.append(f"| pooled | {r['rows']} | " + " | ".join(fmt_ci(r["models"][m]) for m in models) + " |")
        lines.append("")
        for key, c in r["comparisons"].items():
            lines.append(f"- {key.replace('_vs_', ' − ')}: {fmt_diff(c)}")
        for m in ("student", "student_onnx"):
            if f"{m}_keeps" in r:
                lines.append(f"- {m} keeps {r[f'{m}_keeps']['value']:.1%} of the teacher's entity F1")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args()
    for name in args.names:
        print(record(OUT, "ner_kfold", name, folds(name, args.folds), markdown))


if __name__ == "__main__":
    main()

"""Two students of one teacher, row by row: is B better than A, or is the gap noise?

    python -m bench.paired --name "tweets, 10k sample" --data /path/to/data/processed \
        --teacher /path/to/teacher --label hidden_weight \
        --pair "1 layer=/path/to/student_without,/path/to/student_with" --pair ...

Used for `distill.hidden_weight` (README "Use the model"): each pair is the same student shape distilled without
(A) and with (B) the term, from the same teacher, data and seed. For the test and the validation split it reports
the macro-F1 of the teacher, A and B, and B minus A with a paired-bootstrap 95% CI and McNemar's p
(`pipeline.core.stats.paired_comparison`, the comparison `evaluate` makes). The CI covers test-row sampling only, not
the spread between training seeds; a verdict that flips between test and validation is that spread. Results go to
bench/results/paired.json under `--label` and `--name`, and the table to bench/results/PAIRED.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.common import OUT, machine
from bench.students import teacher_args


def compare(teacher: str, data: Path, pairs: dict[str, tuple[str, str]], seed: int = 42) -> list[dict]:
    from pipeline.core.io import read_table
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.modeling import load_classifier, load_tokenizer, predict_logits
    from pipeline.core.stats import paired_comparison

    cfg = load_classifier(teacher).config
    names = [cfg.id2label[i] for i in range(cfg.num_labels)]
    f1 = macro_f1_fn(len(names))
    rows = []
    for split in ("test", "val"):
        df = read_table(data / f"{split}.parquet")
        texts = df["text"].tolist()
        y = df["label"].map({n: i for i, n in enumerate(names)}).to_numpy()

        def labels(folder: str):
            model = load_classifier(folder).eval()
            return predict_logits(model, load_tokenizer(folder), texts, 64, 128, device="cpu", progress=False).argmax(1)

        t = labels(teacher)
        for shape, (a, b) in pairs.items():
            pa, pb = labels(a), labels(b)
            diff = paired_comparison(y, pb, pa, f1, name_a="B", name_b="A", seed=seed)
            rows.append({"shape": shape, "split": split, "rows": len(y), "teacher": round(f1(y, t), 4),
                         "a": round(f1(y, pa), 4), "b": round(f1(y, pb), 4), "delta": diff["delta"],
                         "ci_low": diff["ci_low"], "ci_high": diff["ci_high"],
                         "mcnemar_p": diff["mcnemar"]["p_value"], "significant": diff["significant"]})
    return rows


def markdown(saved: dict) -> str:
    m = saved["machine"]
    lines = ["# Paired comparisons of students (A without, B with)", "",
             f"Produced by `bench/paired.py` on {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}. "
             "Macro-F1; B − A with a paired-bootstrap 95% CI over the split's rows (1,000 resamples) and "
             "McNemar's exact p. One training seed per student.", ""]
    for label, datasets in saved["results"].items():
        lines += [f"## {label}", "", "| dataset | student | split (rows) | teacher | A | B | B − A [95% CI] | p |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, rows in datasets.items():
            for r in rows:
                mark = " (significant)" if r["significant"] else ""
                lines.append(f"| {name} | {r['shape']} | {r['split']} ({r['rows']}) | {r['teacher']:.3f} | "
                             f"{r['a']:.3f} | {r['b']:.3f} | {r['delta']:+.3f} [{r['ci_low']:+.3f}, "
                             f"{r['ci_high']:+.3f}]{mark} | {r['mcnemar_p']:.2g} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = teacher_args(__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="what differs between A and B, e.g. hidden_weight")
    ap.add_argument("--pair", action="append", required=True, help="shape=folder_A,folder_B (repeat)")
    args = ap.parse_args()
    pairs = {}
    for spec in args.pair:
        shape, folders = spec.split("=", 1)
        a, b = folders.split(",")
        pairs[shape] = (a, b)
    path = OUT / "paired.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved.setdefault("results", {}).setdefault(args.label, {})[args.name] = compare(args.teacher, args.data, pairs)
    saved["machine"] = machine()
    path.write_text(json.dumps(saved, indent=2) + "\n")
    (OUT / "PAIRED.md").write_text(markdown(saved))
    print(markdown(saved))


if __name__ == "__main__":
    main()

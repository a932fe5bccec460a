"""metrics/REPORT.md: evaluate's results in words — one row per model, the verdicts, the weakest slices, and what
the data decided and cannot tell."""
from __future__ import annotations

from pipeline.core.cards import ci_text, data_settings, worst_slices
from pipeline.core.names import BLEND, ONNX_NAME
from pipeline.core.stats import SMALL_CLASS

SMALL_TEST = 1000  # below this many test rows, say in words what the comparisons cannot tell


def data_notes(comparisons: dict, n_test: int, lineage: dict, coverage: str | None,
               blend_record: dict | None = None) -> list[str]:
    """REPORT.md's plain-words section: what each model chose from the data, which comparisons the test rows
    cannot settle (a small test split), what the student learned from (teacher_blend.json's record: the student's
    lineage keeps only the weight), and a tokenizer that does not cover the language."""
    lines = [f"- {name}: " + "; ".join(data_settings(lineage[name])) for name in ("teacher", "student", "baseline")
             if data_settings(lineage[name])]
    for key, c in comparisons.items():
        disagree = c["mcnemar"]["a_right_b_wrong"] + c["mcnemar"]["a_wrong_b_right"]
        if c["significant"] or n_test >= SMALL_TEST or not disagree:  # no disagreement: nothing left to tell
            continue
        a, b = key.split("_vs_")
        lines.append(f"- The {n_test} test rows cannot tell {a} from {b}: their macro-F1 difference is somewhere in "
                     f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] (95% CI). More data, or k disjoint test folds pooled "
                     "(`finetune kfold`), is what would settle it; the point figures alone do not.")
    for key, c in comparisons.items():
        small = c.get("small_classes")
        if not small:
            continue
        a, b = key.split("_vs_")
        each = "; ".join(f"{k} ({v['rows']} rows): F1 {v['f1_a']:.2f} vs {v['f1_b']:.2f}"
                         for k, v in small["differing"].items())
        disagree = c["mcnemar"]["a_right_b_wrong"] + c["mcnemar"]["a_wrong_b_right"]
        lines.append(f"- {a} vs {b}: the macro-F1 difference {c['delta']:+.4f} [{c['ci_low']:+.4f}, "
                     f"{c['ci_high']:+.4f}] rests on classes with under {SMALL_CLASS} test rows ({each}). Over the "
                     f"other {small['classes']} classes it is {small['delta']:+.4f} [{small['ci_low']:+.4f}, "
                     f"{small['ci_high']:+.4f}], not significant, and over the rows McNemar gives "
                     f"p={c['mcnemar']['p_value']:.3g} ({disagree} rows where exactly one is right). One or two rows "
                     "decide a class that small: more test rows of it (more data, or `finetune kfold`'s k test "
                     "folds pooled) are what would settle the comparison.")
    lines += blend_notes(blend_record or {})
    search = lineage["student"].get("student_search") or {}
    blended_in = (lineage["student"].get("teacher_targets") or {}).get("baseline_weight")
    for t in search.get("tried", []):
        ev = t.get("evidence")
        if ev:
            lines.append(f"- distill tried `{t['key']}`: {ev['ratio']:.1%} of "
                         f"{'the blend' if blended_in else 'the teacher'}'s validation macro-F1, lower "
                         f"bound {ev['ratio_lower']:.1%} ({100 * ev['confidence']:.0f}%, {ev['rows']} rows), classes "
                         f"worse: {', '.join(ev['classes_worse']) or 'none'} -> "
                         f"{'shipped' if t.get('shipped') else 'rejected'}")
    if coverage:
        lines.append(f"- Language: {coverage}")
    return lines


def blend_notes(record: dict) -> list[str]:
    """What the student learned from, in words: the teacher, or its blend with the baseline, and the evidence; with
    the blend off, whether `auto` would have taken the baseline in on these validation rows."""
    if not record or "grid" not in record:
        return []
    f1 = record.get("val_macro_f1", {})
    said = (f"log-loss gain {record['log_loss_gain']:+.4f} per row over the teacher alone, "
            f"{100 * record['confidence']:.0f}% lower bound {record['log_loss_gain_lower']:+.4f}, "
            f"{record['val_rows']} validation rows; validation macro-F1 teacher {f1.get('teacher', float('nan')):.4f}, "
            f"baseline {f1.get('baseline', float('nan')):.4f}")
    w, auto = record["baseline_weight"], record.get("auto_choice", 0.0)
    if w:
        return [f"- The student learned from the teacher blended with the TF-IDF baseline (baseline weight {w:g}, "
                f"distill.blend_baseline {record.get('setting')}; at weight {record['best_on_validation']:g}: {said}, "
                f"blend {f1.get('blend', float('nan')):.4f}). `{BLEND}` is that blend on the test rows."]
    if auto:
        return [f"- The student learned from the teacher alone (distill.blend_baseline {record.get('setting')}). On "
                f"these validation rows `auto` would blend the TF-IDF baseline in at weight {auto:g} ({said}). Off "
                "by default: the evidence for that default is bench/results/BLEND.md."]
    return []


def report(results: dict, speed: dict, verdicts: dict[str, str], n_test: int, slices: dict,
           notes: list[str] = ()) -> str:
    """metrics/REPORT.md: what `dvc metrics show` cannot print readably — one row per model, then the verdicts."""
    rows, weak = [], []
    for name in ("teacher", "student", ONNX_NAME, "baseline", BLEND):
        if name not in results:
            continue
        r, sp = results[name], speed.get(name)
        cal = r["calibration"]
        ece = f"{cal['ece']:.4f}" + (f" (T={cal['temperature']:.2f}; {cal['ece_before_scaling']:.4f} before)"
                                     if "temperature" in cal else "")
        timing = (f"{sp['cpu_samples_per_s_batch']:.0f} | {sp['cpu_latency_ms_batch1']:.1f}" if sp else
                  "not timed (teacher + baseline) | ")
        rows.append(f"| {name} | {ci_text(r['macro_f1_ci'])} | {ci_text(r['accuracy_ci'])} | {ece} | {timing} | "
                    f"{r['size_bytes'] / 2**20:.1f} MiB |")
        weak += [f"- {name}: {w}" for w in worst_slices(slices, name)]
    return "\n".join([
        f"# Test results ({n_test} test rows)", "",
        "| model | macro-F1 [95% CI] | accuracy [95% CI] | ECE | CPU samples/s (batch 32) | CPU latency ms "
        "(batch 1) | size |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Paired comparisons on the same test rows (bootstrap CI of the difference, McNemar exact test):", "",
        *[f"- {v}" for v in verdicts.values()], "",
        "Weakest slice per column (lowest macro-F1, >= 10 rows; every slice in `metrics/slices.json`):", "",
        *weak, "",
        *(["What the data decided, and what it cannot tell:", "", *notes, ""] if notes else []),
        "Speeds are CPU figures of this run's machine (`metrics/speed.json`); quality figures are in "
        "`metrics/eval.json`.",
        "",
    ])

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.cards import worst_slices
from pipeline.stages.evaluate import slice_metrics


def test_slices_cover_every_test_row_once_per_column():
    rng = np.random.default_rng(0)
    n = 200
    test = pd.DataFrame({"text": ["x" * int(k) for k in rng.integers(1, 300, n)],
                         "lang": rng.choice(["en", "fr", None], n)})
    y = rng.integers(0, 2, n)
    preds = {"a": y.copy(), "b": np.where(test["lang"].eq("fr"), 1 - y, y)}
    s = slice_metrics(test, preds, y, ["neg", "pos"], ["lang", "not_a_column"])
    assert set(s) == {"text_length", "lang"}
    for col, values in s.items():
        assert sum(v["support"] for v in values.values()) == n, col
    assert set(s["lang"]) == {"en", "fr", "(missing)"} and len(s["text_length"]) == 4
    assert s["lang"]["fr"]["b"]["accuracy"] == 0.0 and s["lang"]["en"]["b"]["accuracy"] == 1.0
    assert any(w.startswith("lang = fr") for w in worst_slices(s, "b"))
    # A slice holding one class that a model gets all right scores 1.0, not 0.5.
    one = pd.DataFrame({"text": ["a", "bb", "ccc", "dddd"] * 5, "g": ["x"] * 10 + ["y"] * 10})
    y1 = np.array([0] * 10 + [0, 1] * 5)
    s1 = slice_metrics(one, {"m": y1.copy()}, y1, ["neg", "pos"], ["g"])
    assert s1["g"]["x"]["m"]["macro_f1"] == 1.0 and s1["g"]["x"]["per_class"] == {"neg": 10}


def test_a_student_under_the_bar_is_said_plainly_and_small_tests_say_what_they_cannot_tell():
    from pipeline.core.cards import student_notes
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.report import data_notes
    from pipeline.core.stats import paired_comparison

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    teacher = np.where(rng.random(300) < 0.9, y, (y + 1) % 3)
    student = np.where(rng.random(300) < 0.15, (teacher + 1) % 3, teacher)
    cmp = paired_comparison(y, student, teacher, macro_f1_fn(3), name_a="student", name_b="teacher")
    cmp["macro_f1_retained"] = 0.9
    evidence = {"ratio": 0.99, "ratio_lower": 0.985, "confidence": 0.9, "rows": 120, "min_ratio": 0.98,
                "classes_worse": []}
    lineage = {"student_search": {"tried": [{"key": "distill.try_first[0]", "layers": [5], "shipped": True,
                                             "evidence": evidence}]},
               "resolved": {"max_length": 256, "truncation": "head_tail", "length": {"setting": "auto"}}}
    notes = student_notes("student", lineage, cmp, 0.98)
    assert notes[0].startswith("**This student keeps 90.0% of the teacher's test macro-F1, under the 98%")
    assert "distill.try_first[0]" in notes[0] and "lower bound 98.5% on 120 rows" in notes[1]
    assert student_notes("student", lineage, {**cmp, "macro_f1_retained": 0.99}, 0.98)[0].startswith("student tried")

    # Both branches, built to land in them: a student that differs from the teacher on six rows (three won, three
    # lost) cannot be told apart on 300 rows; the one above, wrong on a further 15%, can.
    right, wrong = np.flatnonzero(teacher == y), np.flatnonzero(teacher != y)
    close = teacher.copy()
    close[right[:3]] = (y[right[:3]] + 1) % 3
    close[wrong[:3]] = y[wrong[:3]]
    tie = paired_comparison(y, close, teacher, macro_f1_fn(3), name_a="student", name_b="teacher")
    assert cmp["significant"] and not tie["significant"]
    same = paired_comparison(y, teacher, teacher, macro_f1_fn(3))
    lineages = {"teacher": {}, "student": lineage, "baseline": {}}
    lines = data_notes({"student_vs_teacher": tie, "onnx_vs_student": same}, 300, lineages, None)
    assert any("The 300 test rows cannot tell student from teacher" in x for x in lines)
    assert not any("onnx" in x for x in lines)  # identical predictions: nothing to tell apart
    assert not any("cannot tell" in x for x in data_notes({"student_vs_teacher": cmp}, 300, lineages, None))
    assert not any("cannot tell" in x for x in data_notes({"student_vs_teacher": cmp}, 5000,
                                                          {"teacher": {}, "student": lineage, "baseline": {}}, None))


def test_a_difference_that_rests_on_a_class_of_a_few_test_rows_is_said_so():
    """Macro-F1 weighs a 6-row class like a 100-row one: a model that misses it loses 0.2 over five classes, a
    'significant' difference decided by six rows. The report then gives the comparison over the larger classes."""
    from pipeline.core.metrics import macro_f1_fn
    from pipeline.core.report import data_notes
    from pipeline.core.stats import paired_comparison, small_class_check

    rng = np.random.default_rng(3)
    y = np.concatenate([np.repeat(np.arange(4), 100), np.full(6, 4)])
    big = y < 4

    def noisy() -> np.ndarray:  # 90% right on the large classes, errors among them
        return np.where(big & (rng.random(len(y)) < 0.1), (y + rng.integers(1, 4, len(y))) % 4, y)

    a, b = noisy(), noisy()
    b[~big] = 0  # b never finds the small class
    names = ["w", "x", "y", "z", "tiny"]
    boot = {"n_resamples": 1000, "confidence": 0.95, "seed": 0}
    cmp = paired_comparison(y, a, b, macro_f1_fn(5), **boot)
    assert cmp["significant"] and cmp["delta"] > 0.15
    small = small_class_check(y, a, b, names, boot)
    assert small["classes"] == 4 and small["ci_low"] < 0 < small["ci_high"] and abs(small["delta"]) < 0.05
    assert small["differing"] == {"tiny": {"rows": 6, "f1_a": 1.0, "f1_b": 0.0}}
    assert small_class_check(y[big], a[big], b[big], names[:4], boot) is None  # no small class: nothing to say
    cmp["small_classes"] = small
    lines = data_notes({"teacher_vs_baseline": cmp}, len(y), {"teacher": {}, "student": {}, "baseline": {}}, None)
    assert any(x.startswith("- teacher vs baseline: the macro-F1 difference") and "tiny (6 rows): F1 1.00 vs 0.00"
               in x and "Over the other 4 classes" in x for x in lines)

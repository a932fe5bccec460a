from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.core.metrics import accuracy, macro_f1_fn
from pipeline.core.stats import mcnemar_exact, metric_ci, paired_comparison, rate_lower_bound


def noisy(y: np.ndarray, p_right: float, rng: np.random.Generator, n_classes: int = 3) -> np.ndarray:
    return np.where(rng.random(len(y)) < p_right, y, rng.integers(0, n_classes, len(y)))


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_macro_f1_matches_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    for _ in range(20):
        y = rng.integers(0, n_classes, 50)
        pred = rng.integers(0, n_classes, 50)
        pred[:3] = 0  # include classes never predicted / never present
        expected = f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0)
        assert macro_f1_fn(n_classes)(y, pred) == pytest.approx(expected)
        some = np.arange(0, n_classes, 2)  # a subset of the classes: their F1 still counts every row
        expected = f1_score(y, pred, labels=list(some), average="macro", zero_division=0)
        assert macro_f1_fn(n_classes, classes=some)(y, pred) == pytest.approx(expected)


def test_ci_contains_the_estimate_and_narrows_with_more_rows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 3200):
        y = rng.integers(0, 3, n)
        pred = noisy(y, 0.8, rng)
        for metric in (accuracy, macro_f1_fn(3)):
            ci = metric_ci(y, pred, metric, n_resamples=1000, seed=1)
            assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
        widths.append(ci["ci_high"] - ci["ci_low"])
    assert widths[1] < widths[0] / 2  # ~1/sqrt(16) = 1/4 in theory
    assert metric_ci(y, pred, accuracy, seed=1) == metric_ci(y, pred, accuracy, seed=1)  # seeded


def test_mcnemar_on_a_hand_table():
    # 10 rows only A gets right, 2 only B, 30 both, 8 neither: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * 79 / 4096.
    y = np.zeros(50, dtype=int)
    a = np.array([0] * 10 + [1] * 2 + [0] * 30 + [1] * 8)
    b = np.array([1] * 10 + [0] * 2 + [0] * 30 + [1] * 8)
    r = mcnemar_exact(y, a, b)
    assert (r["a_right_b_wrong"], r["a_wrong_b_right"]) == (10, 2)
    assert r["p_value"] == pytest.approx(2 * 79 / 4096, abs=1e-4)
    assert mcnemar_exact(y, a, a)["p_value"] == 1.0


def test_paired_comparison_tells_a_real_gap_from_noise():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 2000)
    good, bad = noisy(y, 0.9, rng), noisy(y, 0.6, rng)
    metric = macro_f1_fn(3)
    real = paired_comparison(y, good, bad, metric, name_a="good", name_b="bad")
    assert real["significant"] and real["ci_low"] > 0 and real["mcnemar"]["p_value"] < 0.001
    assert real["verdict"].startswith("good better than bad")
    # Two models that differ on a handful of rows, each winning some: the CI spans 0, no verdict of "better".
    close = good.copy()
    right, wrong = np.flatnonzero(good == y), np.flatnonzero(good != y)
    close[right[:4]] = (y[right[:4]] + 1) % 3
    close[wrong[:3]] = y[wrong[:3]]
    tie = paired_comparison(y, close, good, metric)
    assert not tie["significant"] and tie["ci_low"] <= 0 <= tie["ci_high"]
    assert "not distinguishable" in tie["verdict"]
    same = paired_comparison(y, good, good, metric)  # degenerate bootstrap: falls back, no NaN
    assert same["delta"] == same["ci_low"] == same["ci_high"] == 0


def test_ece_of_a_calibrated_toy_model_is_near_zero_and_temperature_fixes_overconfidence():
    from pipeline.core.metrics import softmax
    from pipeline.core.stats import expected_calibration_error, fit_temperature, reliability_table

    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)  # binary: the top class has probability conf
    y_pred = rng.integers(0, 2, n)
    correct = rng.random(n) < conf  # right exactly as often as it claims
    y = np.where(correct, y_pred, 1 - y_pred)
    prob = np.where(y_pred[:, None] == np.arange(2), conf[:, None], 1 - conf[:, None])
    assert expected_calibration_error(y, prob) < 0.02
    table = reliability_table(y, prob)
    assert sum(r["count"] for r in table) == n
    # Overconfident logits (the calibrated ones x 3): high ECE; the fitted temperature recovers ~3.
    logits = np.log(prob) * 3
    assert expected_calibration_error(y, softmax(logits)) > 0.1
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert expected_calibration_error(y, softmax(logits / t)) < 0.02


def test_student_evidence_ships_only_what_the_rows_can_vouch_for():
    from pipeline.core.stats import student_evidence

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    teacher = np.where(rng.random(600) < 0.9, y, (y + 1) % 3)
    names = ["a", "b", "c"]
    same = student_evidence(y, teacher, teacher, names, 0.98, 0.9)
    assert same["ratio"] == 1.0 and same["ratio_lower"] == 1.0 and same["keeps"] and not same["classes_worse"]
    # Differs from the teacher on 6% of rows at random: the point ratio looks fine, the lower bound does not.
    noisy = np.where(rng.random(600) < 0.06, (teacher + 1) % 3, teacher)
    ev = student_evidence(y, noisy, teacher, names, 0.98, 0.9)
    assert ev["ratio_lower"] < ev["ratio"] and not ev["keeps"]
    # Loses a small class entirely while keeping the average close: rejected for that class.
    y2 = np.r_[np.zeros(300, int), np.ones(300, int), np.full(30, 2)]
    student = np.where(y2 == 2, 0, y2)
    ev = student_evidence(y2, student, y2, names, 0.5, 0.9)
    # (class a suffers too: the lost rows are predicted as a, so its precision falls)
    assert "c" in ev["classes_worse"] and not ev["keeps"] and ev["ratio_lower"] >= 0.5


def test_the_int8_agreement_gate_refuses_a_recipe_only_on_evidence():
    """export's test-row gate refuses a recipe when the rows' lower bound of its flip rate exceeds 1 - min_agreement:
    a recipe that truly flips 1% of labels is refused by at most 5% of test splits of any size, one that flips 3%
    by nearly every 1,000-row split; the cases of bench/results/export-and-students.md decide as written there."""
    from scipy import stats

    def refused(k: int, n: int) -> bool:
        return 1 - rate_lower_bound(k, n, 0.95) < 0.99

    # The one-sided exact bound is the lower end of the two-sided interval at twice the tail.
    assert rate_lower_bound(2, 125, 0.95) == pytest.approx(stats.binomtest(2, 125).proportion_ci(0.9, "exact").low)
    assert rate_lower_bound(0, 125, 0.95) == 0.0 and rate_lower_bound(125, 125, 0.95) > 0.97
    assert not refused(2, 125) and not refused(2, 140)  # the news and 20 Newsgroups int8 students
    assert refused(20, 1000) and refused(8, 310)  # 2% of 1,000 rows; the former tweet student's full int8 (97.4%)
    rng = np.random.default_rng(0)
    for n in (125, 1000, 5000):
        assert np.mean([refused(int(k), n) for k in rng.binomial(n, 0.01, 2000)]) <= 0.05
    assert np.mean([refused(int(k), 1000) for k in rng.binomial(1000, 0.03, 2000)]) > 0.99

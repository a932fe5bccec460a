"""Uncertainty of test metrics: bootstrap confidence intervals and paired comparisons of two models.

On a small test split one error moves macro-F1 by a visible amount, so a point figure alone cannot say whether
model A beats model B. Two tools, both from scipy:
- `scipy.stats.bootstrap` (BCa, paired resampling of test rows, seeded) for the CI of a metric and of the
  difference of a metric between two models scored on the same rows;
- McNemar's exact test (`scipy.stats.binomtest` on the discordant rows) for "do A and B make the same number of
  errors?". A difference is called significant only when the CI of the difference excludes 0.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from scipy import stats

from pipeline.core.metrics import Metric, class_f1, log_softmax, macro_f1_fn


def bootstrap_ci(data: tuple[np.ndarray, ...], statistic: Callable[..., float], n_resamples: int,
                 confidence: float, seed: int) -> tuple[float, float]:
    """BCa CI of `statistic` over paired resamples of the rows of `data` (percentile where BCa is undefined)."""
    kwargs = dict(paired=True, vectorized=False, n_resamples=n_resamples, confidence_level=confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on degenerate (e.g. all-equal) resamples; handled below
        res = stats.bootstrap(data, statistic, method="BCa", rng=np.random.default_rng(seed), **kwargs)
        low, high = res.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):
            # BCa is undefined when every resample gives the same value (e.g. identical predictions).
            res = stats.bootstrap(data, statistic, method="percentile", rng=np.random.default_rng(seed), **kwargs)
            low, high = res.confidence_interval
    return float(low), float(high)


def metric_ci(y: np.ndarray, pred: np.ndarray, metric: Metric, n_resamples: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> dict:
    """Point estimate and bootstrap CI of `metric` over the test rows."""
    y, pred = np.asarray(y), np.asarray(pred)
    low, high = bootstrap_ci((y, pred), metric, n_resamples, confidence, seed)
    return {"value": round(metric(y, pred), 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}


def mcnemar_exact(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Exact McNemar test: among rows exactly one model gets right, is each model equally likely to be the one?"""
    ok_a, ok_b = np.asarray(pred_a) == np.asarray(y), np.asarray(pred_b) == np.asarray(y)
    a_only, b_only = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    n = a_only + b_only
    p = float(stats.binomtest(a_only, n, 0.5).pvalue) if n else 1.0
    return {"a_right_b_wrong": a_only, "a_wrong_b_right": b_only, "p_value": round(p, 4)}


def rate_lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided exact (Clopper-Pearson) lower bound of a rate seen `k` times in `n` rows: the smallest rate the rows
    still leave plausible at `confidence`."""
    return 0.0 if k == 0 else float(stats.beta.ppf(1 - confidence, k, n - k + 1))


def paired_comparison(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, metric: Metric, *, name_a: str = "A",
                      name_b: str = "B", metric_name: str = "macro-F1", n_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> dict:
    """A minus B on the same test rows: the difference, its paired-bootstrap CI, McNemar's p and a verdict."""
    y, pred_a, pred_b = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    delta = metric(y, pred_a) - metric(y, pred_b)
    low, high = bootstrap_ci((y, pred_a, pred_b), lambda t, a, b: metric(t, a) - metric(t, b), n_resamples,
                           confidence, seed)
    mc = mcnemar_exact(y, pred_a, pred_b)
    significant = low > 0 or high < 0
    word = ("better than" if delta > 0 else "worse than") if significant else "not distinguishable from"
    verdict = (f"{name_a} {word} {name_b}: {metric_name} {delta:+.4f} [{low:+.4f}, {high:+.4f}], "
               f"McNemar p={mc['p_value']:.3g}; " + ("significant" if significant else "not significant")
               + f" at {1 - confidence:.2g}")
    return {"delta": round(delta, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "significant": bool(significant), "mcnemar": mc, "rows": int(len(y)), "verdict": verdict}


# ---------------------------------------------------------------------------------------------- student choice
def bootstrap_class_f1(y: np.ndarray, preds: list[np.ndarray], n_classes: int, n_resamples: int, seed: int,
                       chunk: int = 200) -> list[np.ndarray]:
    """Per-class F1 of each prediction vector over the same paired bootstrap resamples of the rows:
    one [n_resamples, n_classes] array per vector (`class_f1` of each resample)."""
    y = np.asarray(y, dtype=np.int64)
    preds = [np.asarray(p, dtype=np.int64) for p in preds]
    rng = np.random.default_rng(seed)
    out = [np.zeros((n_resamples, n_classes)) for _ in preds]
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_resamples - start), len(y)))
        for r, rows in enumerate(idx):
            for k, pred in enumerate(preds):
                out[k][start + r] = class_f1(y[rows], pred[rows], n_classes)
    return out


def student_evidence(y: np.ndarray, pred_student: np.ndarray, pred_teacher: np.ndarray, label_names: list[str],
                     min_ratio: float, confidence: float, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Does the student keep `min_ratio` of the teacher's macro-F1 on these rows, beyond their noise?

    Paired bootstrap (the same resampled rows for both models): `keeps` when the one-sided lower bound at
    `confidence` of student/teacher macro-F1 is at least `min_ratio` and no class's F1 is significantly below
    `min_ratio` times the teacher's (one-sided, Bonferroni over the classes present), so a student that keeps the
    big classes and loses a small one is not shipped on its average."""
    n = len(label_names)
    y, ps, pt = np.asarray(y), np.asarray(pred_student), np.asarray(pred_teacher)
    fs, ft = bootstrap_class_f1(y, [ps, pt], n, n_resamples, seed)
    metric = macro_f1_fn(n)
    point_s, point_t = metric(y, ps), metric(y, pt)
    ratio = point_s / point_t if point_t else 0.0
    ratios = np.divide(fs.mean(1), ft.mean(1), out=np.zeros(n_resamples), where=ft.mean(1) > 0)
    lower = float(np.quantile(ratios, 1 - confidence))
    present = [c for c in range(n) if np.any(y == c)]
    f1_s, f1_t = class_f1(y, ps, n), class_f1(y, pt, n)
    alpha = (1 - confidence) / max(len(present), 1)
    classes = {}
    for c in present:
        diff = fs[:, c] - min_ratio * ft[:, c]
        upper = float(np.quantile(diff, 1 - alpha))
        classes[label_names[c]] = {"rows": int(np.sum(y == c)), "student_f1": round(float(f1_s[c]), 4),
                                   "teacher_f1": round(float(f1_t[c]), 4), "upper_vs_min_ratio": round(upper, 4),
                                   "worse": bool(upper < 0)}
    worse = [k for k, v in classes.items() if v["worse"]]
    keeps = lower >= min_ratio and not worse
    return {"rows": int(len(y)), "student_macro_f1": round(point_s, 6), "teacher_macro_f1": round(point_t, 6),
            "ratio": round(ratio, 4), "ratio_lower": round(lower, 4), "confidence": confidence,
            "min_ratio": min_ratio, "classes_worse": worse, "per_class": classes, "keeps": bool(keeps),
            "resamples": n_resamples}


# ---------------------------------------------------------------------------------------------- calibration
def reliability_table(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> list[dict]:
    """Top-label reliability: per equal-width confidence bin, the mean confidence, the accuracy and the count."""
    conf, pred = prob.max(1), prob.argmax(1)
    correct = pred == np.asarray(y)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append({"bin": b, "confidence": round(float(conf[m].mean()), 4),
                         "accuracy": round(float(correct[m].mean()), 4), "count": int(m.sum())})
    return rows


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al., 2017): the count-weighted mean |accuracy - confidence| over equal-width bins."""
    table = reliability_table(y, prob, bins)
    n = sum(r["count"] for r in table)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in table) / max(n, 1))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) (temperature scaling)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y)

    def nll(t: float) -> float:
        return float(-log_softmax(logits / t, dtype=None)[np.arange(len(y)), y].mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


SMALL_CLASS = 10  # test rows: a class with fewer has its F1 decided by one or two rows


def small_class_check(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, label_names: list[str], boot: dict
                      ) -> dict | None:
    """A significant macro-F1 difference that rests on classes with under SMALL_CLASS test rows: the same paired
    comparison averaged over the other classes is no longer significant. Then: that comparison, and the F1 of each
    side on the small classes where they differ (what REPORT.md puts in words). None when the verdict does not
    rest on them, or there are too few larger classes to say."""
    n = len(label_names)
    support = np.bincount(np.asarray(y, dtype=np.int64), minlength=n)
    big, small = np.flatnonzero(support >= SMALL_CLASS), np.flatnonzero(support < SMALL_CLASS)
    if len(small) == 0 or len(big) < 2:
        return None
    rest = paired_comparison(y, pred_a, pred_b, macro_f1_fn(n, classes=big), **boot)
    if rest["significant"]:
        return None
    f1 = [class_f1(y, pred, n) for pred in (pred_a, pred_b)]
    return {"classes": len(big), "delta": rest["delta"], "ci_low": rest["ci_low"], "ci_high": rest["ci_high"],
            "significant": 0,
            "differing": {label_names[k]: {"rows": int(support[k]), "f1_a": round(float(f1[0][k]), 4),
                                           "f1_b": round(float(f1[1][k]), 4)}
                          for k in small if abs(f1[0][k] - f1[1][k]) > 1e-9}}

"""Drift checks: is a window of traffic drawn from the same distribution as the rows the model was tested on?

Each check is a two-sample test with a p-value, chosen so that traffic drawn from the reference distribution
raises an alarm with probability at most `alpha` over all checks together (Bonferroni: each check fires at
p < alpha / number of checks). A p-value, not a threshold fitted on held-out data, because a p-value's false-alarm
rate holds by construction for any sample size and needs no calibration set; the price is that with large windows
tiny, harmless shifts become significant, so every check is run on at most `max_rows` rows per side (a seeded
sample) and reports its effect size next to the p-value.

- text_length: Kolmogorov-Smirnov on characters per text (available even from a log without text).
- rare_tokens: KS on each text's share of tokens (the model's tokenizer) seen fewer than twice in the training
  rows: new words, names, other languages.
- script_mix: chi-square on each text's main Unicode script (Latin, Cyrillic, Arabic, Han, ...).
- embedding: maximum mean discrepancy on the model's own sentence embeddings (mean-pooled last hidden state),
  Gaussian kernel at the median distance, p-value from label permutations (exact in finite samples; no model is
  trained, unlike a domain classifier whose AUC would need the same permutations for its p-value).
- predicted_class_mix: chi-square on the predicted labels, against the model's predictions on the reference rows.
- confidence: KS on the top-class probability; the population stability index (PSI, 10 reference deciles) is
  reported beside it, as many teams alert on PSI > 0.2.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Check:
    name: str
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float | None = None  # p below this: drift (alpha / number of checks)
    drift: bool = False
    effect: dict = field(default_factory=dict)  # what moved, in the data's own terms
    skipped: str | None = None  # why the check could not run

    def as_dict(self) -> dict:
        return asdict(self)


def skipped(name: str, test: str, why: str) -> Check:
    return Check(name, test, None, None, skipped=why)


def ks_check(name: str, ref: np.ndarray, cur: np.ndarray, what: str) -> Check:
    from scipy.stats import ks_2samp

    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    r = ks_2samp(ref, cur)
    return Check(name, "Kolmogorov-Smirnov", float(r.statistic), float(r.pvalue), effect={
        f"reference_median_{what}": round(float(np.median(ref)), 4),
        f"current_median_{what}": round(float(np.median(cur)), 4),
        f"reference_mean_{what}": round(float(ref.mean()), 4), f"current_mean_{what}": round(float(cur.mean()), 4)})


def chi2_check(name: str, ref: list, cur: list, min_expected: float = 5.0) -> Check:
    """Chi-square test of homogeneity of two categorical samples. Categories too rare for the test's
    approximation (expected count under 5 in either sample) are pooled into one `(rare)` category."""
    from scipy.stats import chi2_contingency

    rc, cc = Counter(ref), Counter(cur)
    cats = sorted(set(rc) | set(cc), key=str)
    n_r, n_c = len(ref), len(cur)
    share = {c: (rc[c] + cc[c]) / (n_r + n_c) for c in cats}
    keep = [c for c in cats if share[c] * min(n_r, n_c) >= min_expected]
    rare = [c for c in cats if c not in keep]
    table = [[rc[c] for c in keep], [cc[c] for c in keep]]
    if rare:
        table[0].append(sum(rc[c] for c in rare))
        table[1].append(sum(cc[c] for c in rare))
    table = [list(x) for x in zip(*[col for col in zip(*table) if sum(col) > 0])]
    effect = {"reference_share": {str(c): round(rc[c] / max(1, n_r), 4) for c in cats},
              "current_share": {str(c): round(cc[c] / max(1, n_c), 4) for c in cats}}
    if len(table[0]) < 2:  # one category in both samples: nothing can differ
        return Check(name, "chi-square", 0.0, 1.0, effect=effect)
    stat, p, _, _ = chi2_contingency(np.asarray(table))
    effect["cramers_v"] = round(float(np.sqrt(stat / ((n_r + n_c) * (min(2, len(table[0])) - 1)))), 4)
    return Check(name, "chi-square", float(stat), float(p), effect=effect)


def psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's deciles (empty bins get half a row, so it stays finite)."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1).astype(float)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1).astype(float)
    r, c = np.maximum(r, 0.5) / len(ref), np.maximum(c, 0.5) / len(cur)
    return float(np.sum((c - r) * np.log(c / r)))


def mmd_check(name: str, ref: np.ndarray, cur: np.ndarray, rng: np.random.Generator,
              permutations: int = 500) -> Check:
    """Unbiased MMD^2 with a Gaussian kernel (bandwidth: the median pairwise distance of the pooled sample),
    p-value = (1 + permutations with MMD^2 >= observed) / (1 + permutations). The smallest p-value it can give is
    1 / (1 + permutations): ask for enough (`permutations_for`) that a real shift can pass the threshold."""
    x = np.vstack([ref, cur]).astype(np.float64)
    n, m = len(ref), len(cur)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    upper = d2[np.triu_indices(len(x), 1)]
    bandwidth2 = float(np.median(upper)) or 1.0
    k = np.exp(-d2 / bandwidth2)
    np.fill_diagonal(k, 0.0)

    # Every permutation at once: with z the 0/1 indicator of the first sample, the within-first sum is z'Kz,
    # the cross sum z'K1 - z'Kz, and the within-second sum what is left of 1'K1.
    total, row = k.sum(), k.sum(axis=1)

    def mmd2(z: np.ndarray) -> np.ndarray:
        kz = k @ z
        s_aa = np.einsum("ip,ip->p", z, kz)
        s_ab = row @ z - s_aa
        s_bb = total - s_aa - 2 * s_ab
        return s_aa / (n * (n - 1)) + s_bb / (m * (m - 1)) - 2 * s_ab / (n * m)

    first = np.zeros((n + m, 1))
    first[:n] = 1.0
    observed = float(mmd2(first)[0])
    null = np.empty(permutations)
    for s in range(0, permutations, 1000):  # in chunks: the indicator matrix is rows x permutations
        perms = np.zeros((n + m, min(1000, permutations - s)))
        for j in range(perms.shape[1]):
            perms[rng.permutation(n + m)[:n], j] = 1.0
        null[s:s + perms.shape[1]] = mmd2(perms)
    p = (1 + int((null >= observed).sum())) / (1 + permutations)
    return Check(name, f"MMD (Gaussian kernel, {permutations} permutations)", float(observed), float(p),
                 effect={"null_mean": float(f"{null.mean():.4g}"),
                                                      "null_p99": float(f"{np.quantile(null, 0.99):.4g}")})


def permutations_for(threshold: float, floor: int = 500) -> int:
    """Permutations whose smallest attainable p-value is a tenth of `threshold`."""
    return max(floor, int(np.ceil(10 / threshold)))


def script_of(text: str) -> str:
    """A text's main Unicode script, by letter count (the first word of each letter's Unicode name, with the CJK
    scripts kept apart); `none` when it has no letters."""
    counts: Counter = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        try:
            word = unicodedata.name(ch).split(" ", 1)[0]
        except ValueError:
            word = "UNKNOWN"
        counts["HAN" if word == "CJK" else word] += 1
    return counts.most_common(1)[0][0].lower() if counts else "none"


def rare_token_share(token_ids: list[list[int]], train_counts: Counter, special: set[int],
                     min_count: int = 2) -> np.ndarray:
    """Per text: the share of its (non-special) tokens seen fewer than `min_count` times in the training rows."""
    out = np.zeros(len(token_ids))
    for i, ids in enumerate(token_ids):
        ids = [t for t in ids if t not in special]
        if ids:
            out[i] = sum(train_counts.get(t, 0) < min_count for t in ids) / len(ids)
    return out


def verdict(checks: list[Check], alpha: float) -> dict[str, Any]:
    """Bonferroni over the checks that ran: the chance that any of them fires on undrifted traffic is <= alpha."""
    ran = [c for c in checks if c.skipped is None]
    threshold = alpha / max(1, len(ran))
    for c in ran:
        c.threshold = threshold
        c.drift = c.p_value is not None and c.p_value < threshold
    return {"drift": any(c.drift for c in ran), "alpha": alpha, "per_check_threshold": threshold,
            "checks_run": len(ran), "fired": [c.name for c in ran if c.drift]}

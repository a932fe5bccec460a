"""How faithful an attribution is to the model it explains: ERASER's removal metrics (DeYoung et al. 2020).

For a text, its explained class c and its words ranked by attribution, at each share k of the words (ERASER's bins
1, 5, 10, 20 and 50%; at least one word):
- comprehensiveness(k) = p_c(text) - p_c(text without its top-k words): high when the words named matter;
- sufficiency(k) = p_c(text) - p_c(the top-k words alone, in their order): low when they carry the decision.
Each is averaged over the bins (AOPC). Words are removed from the text the model reads, so the figures are about
the model and the method, not about a cut. Paired differences between two methods are per text, with a bootstrap
CI over texts (pipeline/core/stats.py), so "beats random" is a statement about noise too.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.core.attribution import without
from pipeline.core.explanation import Explanation

BINS = (0.01, 0.05, 0.1, 0.2, 0.5)


def top_words(e: Explanation, share: float) -> set[int]:
    return set(e.ranking()[:max(1, math.ceil(share * len(e.words)))])


def removal_scores(model: Any, explanations: list[Explanation], bins: tuple[float, ...] = BINS,
                   batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per text: `comprehensiveness` and `sufficiency` (AOPC over `bins`), in probability of the explained class."""
    rest, kept, cls = [], [], []
    for e in explanations:
        k = model.label_names.index(e.target)
        for share in bins:
            top = top_words(e, share)
            rest.append(without(e.words, top))
            kept.append(without(e.words, set(range(len(e.words))) - top))
            cls.append(k)
    if not explanations:
        return {"comprehensiveness": np.zeros(0), "sufficiency": np.zeros(0)}
    p = model.proba(rest + kept, batch_size)
    n = len(rest)
    rows = np.arange(n)
    full = np.repeat([e.probability for e in explanations], len(bins))
    comp = (full - p[rows, cls]).reshape(-1, len(bins)).mean(1)
    suff = (full - p[n + rows, cls]).reshape(-1, len(bins)).mean(1)
    return {"comprehensiveness": comp, "sufficiency": suff}


def entity_removal_scores(model: Any, explanations: list[Explanation], bins: tuple[float, ...] = BINS,
                   batch_size: int = 32) -> dict[str, np.ndarray]:
    """ERASER's comprehensiveness and sufficiency (AOPC over `bins`) of entity explanations: the entity's top-k%
    words masked (comprehensiveness), or every other word masked (sufficiency); the drop in its probability."""
    from pipeline.core.token_attribution import entity_probability, mask_word, word_probs

    mask = mask_word(model)
    rest, kept = [], []
    for e in explanations:
        for share in bins:
            top = top_words(e, share)
            rest.append([mask if j in top else w for j, w in enumerate(e.words)])
            kept.append([w if j in top else mask for j, w in enumerate(e.words)])
    if not explanations:
        return {"comprehensiveness": np.zeros(0), "sufficiency": np.zeros(0)}
    p = word_probs(model, rest + kept, batch_size)
    n, k = len(rest), len(bins)
    comp = [e.probability - entity_probability(p[r * k + b], e.at, e.tag_ids)
            for r, e in enumerate(explanations) for b in range(k)]
    suff = [e.probability - entity_probability(p[n + r * k + b], e.at, e.tag_ids)
            for r, e in enumerate(explanations) for b in range(k)]
    return {"comprehensiveness": np.reshape(comp, (-1, k)).mean(1), "sufficiency": np.reshape(suff, (-1, k)).mean(1)}


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0, rounds: int = 2000) -> dict:
    """mean(a - b) over texts with a 95% bootstrap CI over texts."""
    from pipeline.core.stats import bootstrap_ci

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    low, high = bootstrap_ci((d,), np.mean, rounds, 0.95, seed)
    return {"mean": float(d.mean()), "ci95": [float(low), float(high)], "n": int(len(d))}


def top_agreement(a: list[Explanation], b: list[Explanation], k: int = 3) -> dict:
    """How often two explanations of the same texts name the same strongest word, and their top-k overlap."""
    same_top, overlap = [], []
    for x, y in zip(a, b):
        tx, ty = x.ranking()[:k], y.ranking()[:k]
        same_top.append(bool(tx) and bool(ty) and tx[0] == ty[0])
        overlap.append(len(set(tx) & set(ty)) / max(1, min(k, len(tx))))
    return {"texts": len(same_top), "same_top_word": float(np.mean(same_top)) if same_top else 0.0,
            f"top{k}_overlap": float(np.mean(overlap)) if overlap else 0.0}

"""Entity-level scores for token classification: strict micro-F1 as seqeval computes it (an entity counts only when
its type and both boundaries match), per type too, from per-sentence counts.

Counting per sentence is what lets a confidence interval resample sentences (the unit a test set is drawn in) and a
paired comparison hold the sentences fixed between two models: a resample's F1 is a sum of its sentences' counts,
not a second pass over tags. The entities themselves come from seqeval's strict IOB2 reader, so the definition is
the library's, not ours; tests/core/test_token_data.py checks the totals against seqeval's own f1_score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.tags import to_bio

PRIMARY = "entity_f1"  # the token task's headline; Trainer logs it as eval_entity_f1


def _entities(bio: list[list[str]]) -> list[set[tuple[int, int, str]]]:
    from seqeval.scheme import IOB2, Entities

    found = Entities(bio, IOB2, suffix=False).entities
    return [{(e.start, e.end, e.tag) for e in sent} for sent in found]


@dataclass(frozen=True)
class EntityCounts:
    """Per sentence and type: true positives, predicted and gold entities; arrays of shape [sentences, types]."""

    types: list[str]
    tp: np.ndarray
    pred: np.ndarray
    gold: np.ndarray

    def take(self, rows: np.ndarray) -> "EntityCounts":
        """The counts of these sentences (a bootstrap resample, or one fold)."""
        return EntityCounts(self.types, self.tp[rows], self.pred[rows], self.gold[rows])


def entity_counts(gold: list[list[str]], pred: list[list[str]], types: list[str] | None = None) -> EntityCounts:
    """Strict entity matches per sentence between gold and predicted BIO tags (the same sentences, same lengths).

    A model's per-token argmax can put an `I-X` where no `X` entity is open; the predictions are read as they are
    served (tags.spans: such a tag begins an entity, as conlleval reads it) before the strict count, so the score is
    that of the spans a user gets. Gold tags are read as they are (the readers write valid BIO)."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tags must cover the same sentences and tokens")
    return _count(_entities(gold), _entities([to_bio(tags, "bio") for tags in pred]), types)


def _count(g: list[set], p: list[set], types: list[str] | None = None) -> EntityCounts:
    """Per sentence and type: gold, predicted and matching entities of (start, end, type) sets."""
    types = sorted({e[2] for s in g + p for e in s}) if types is None else list(types)
    index = {t: i for i, t in enumerate(types)}
    shape = (len(g), len(types))
    tp, n_pred, n_gold = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for row, (gs, ps) in enumerate(zip(g, p)):
        for arr, entities in ((n_gold, gs), (n_pred, ps), (tp, gs & ps)):
            for e in entities:
                if e[2] in index:
                    arr[row, index[e[2]]] += 1
    return EntityCounts(types, tp, n_pred, n_gold)


def _prf(tp: float, pred: float, gold: float) -> tuple[float, float, float]:
    precision = tp / pred if pred else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_f1(c: EntityCounts) -> float:
    """Micro-averaged strict entity F1 over every type: the primary metric of the token task."""
    return _prf(c.tp.sum(), c.pred.sum(), c.gold.sum())[2]


def entity_report(c: EntityCounts) -> dict:
    """Micro precision/recall/F1, and per type with its gold support, as evaluate writes them."""
    micro = _prf(c.tp.sum(), c.pred.sum(), c.gold.sum())
    per_type = {}
    for i, t in enumerate(c.types):
        p, r, f = _prf(c.tp[:, i].sum(), c.pred[:, i].sum(), c.gold[:, i].sum())
        per_type[t] = {"precision": p, "recall": r, "f1": f, "support": int(c.gold[:, i].sum())}
    return {"precision": micro[0], "recall": micro[1], "f1": micro[2], "per_type": per_type}


def entity_f1_ci(c: EntityCounts, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Entity F1 with a bootstrap CI over sentences (BCa, as every other CI here: stats.bootstrap_ci)."""
    from pipeline.core.stats import bootstrap_ci

    rows = np.arange(len(c.tp))
    low, high = bootstrap_ci((rows,), lambda r: entity_f1(c.take(r)), n_resamples, confidence, seed)
    return {"value": round(float(entity_f1(c)), 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "sentences": len(rows)}


def paired_entity_f1(a: EntityCounts, b: EntityCounts, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Entity F1 of model a minus model b on the same sentences, with a paired bootstrap CI over sentences."""
    from pipeline.core.stats import bootstrap_ci

    if a.tp.shape[0] != b.tp.shape[0]:
        raise ValueError("a paired comparison needs the same sentences")
    rows = np.arange(len(a.tp))
    low, high = bootstrap_ci((rows,), lambda r: entity_f1(a.take(r)) - entity_f1(b.take(r)), n_resamples,
                             confidence, seed)
    return {"delta": round(float(entity_f1(a) - entity_f1(b)), 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "significant": bool(low > 0 or high < 0), "sentences": len(rows)}


def parse_entity_text(text: str) -> set[tuple[int, int, str]]:
    """A prediction table's `start:end:type ...` (token_evaluate.entity_text) back to a set of entities."""
    out = set()
    for item in str(text or "").split():
        start, end, kind = item.split(":", 2)
        out.add((int(start), int(end), kind))
    return out


def counts_from_text(gold: list[str], pred: list[str]) -> EntityCounts:
    """Strict entity counts per sentence from two columns of entity strings (gold, predicted)."""
    return _count([parse_entity_text(x) for x in gold], [parse_entity_text(x) for x in pred])

"""The student's targets: the teacher blended with the TF-IDF baseline where validation rows show it helps
(pipeline/core/blend.py), on a real SMS slice and the real baseline model."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.blend import EPS, blend, choose_weight, out_of_fold_proba
from pipeline.core.metrics import log_softmax
from pipeline.core.modeling import baseline_model
from pipeline.core.params import BaselineParams

LABELS = ["ham", "spam"]


@pytest.fixture(scope="module")
def rows(sms_slice):
    texts = sms_slice["text"].tolist()
    labels = sms_slice["spam"].map({"0": "ham", "1": "spam"}).tolist()
    return texts, labels, np.array([LABELS.index(x) for x in labels])


def make():
    return baseline_model(BaselineParams(), seed=0)


def test_weight_zero_is_the_teacher_byte_for_byte_and_one_is_the_baseline():
    z = np.array([[2.0, -1.0], [0.3, 0.1]], dtype=np.float32)
    p = np.array([[0.1, 0.9], [0.6, 0.4]])
    assert blend(z, p, 0.0).tobytes() == z.tobytes()
    assert np.allclose(np.exp(blend(z, p, 1.0)), p, atol=1e-6)
    mid = np.exp(blend(z, p, 0.5))
    assert np.allclose(mid.sum(1), 1, atol=1e-6)
    # A weighted geometric mean: between the two distributions, class by class.
    t = np.exp(log_softmax(z))
    assert np.all((mid[:, 1] - np.minimum(t, p)[:, 1]) > -1e-6) and np.all(mid[:, 1] <= np.maximum(t, p)[:, 1] + 1e-6)


def test_out_of_fold_probabilities_never_come_from_a_model_that_saw_the_row(rows):
    texts, labels, y = rows
    oof = out_of_fold_proba(make, texts, labels, LABELS, folds=5, seed=0)
    again = out_of_fold_proba(make, texts, labels, LABELS, folds=5, seed=0)
    assert oof.shape == (len(texts), 2) and np.allclose(oof.sum(1), 1) and np.array_equal(oof, again)
    in_sample = make().fit(texts, labels).predict_proba(texts)
    true_oof, true_in = oof[np.arange(len(y)), y], in_sample[np.arange(len(y)), y]
    # Fitted on the row, the baseline is near-certain of its label; out of fold it is not, and errs on some rows.
    assert true_in.mean() > true_oof.mean() + 0.02 and (oof.argmax(1) != y).sum() > (in_sample.argmax(1) != y).sum()
    assert (oof.argmax(1) == y).mean() > 0.9  # still a real model: SMS spam is easy for TF-IDF


def test_a_class_missing_from_a_fold_gets_a_floor_not_a_crash(rows):
    texts, labels, _ = rows
    keep = [i for i, lab in enumerate(labels) if lab == "ham"][:40] + [labels.index("spam")] * 1
    t, lab = [texts[i] for i in keep], [labels[i] for i in keep]
    oof = out_of_fold_proba(make, t, lab, LABELS, folds=5, seed=0)
    assert np.allclose(oof.sum(1), 1) and oof.min() >= EPS / 2


def test_the_baseline_is_blended_in_only_when_validation_rows_show_it_helps(rows):
    texts, labels, y = rows
    val = np.arange(len(y)) % 3 == 0
    fit_t = [t for t, v in zip(texts, val) if not v]
    fit_l = [lab for lab, v in zip(labels, val) if not v]
    base = make().fit(fit_t, fit_l).predict_proba([t for t, v in zip(texts, val) if v])
    yv = y[val]
    # A teacher that knows nothing (uniform logits): the baseline's weight is adopted, with its evidence.
    know_nothing = np.zeros((len(yv), 2), dtype=np.float32)
    rec = choose_weight(know_nothing, base, yv, confidence=0.9, seed=0)
    assert rec["adopted"] and rec["baseline_weight"] >= 0.5 and rec["log_loss_gain_lower"] > 0
    assert len(rec["grid"]) == 11 and rec["grid"][0]["baseline_weight"] == 0.0
    # A teacher that is right and sure on every row: nothing to gain from the baseline.
    sure = np.where(np.eye(2)[yv] > 0, 8.0, -8.0).astype(np.float32)
    rec = choose_weight(sure, base, yv, confidence=0.9, seed=0)
    assert rec["baseline_weight"] == 0.0 and not rec["adopted"]
    # A teacher that already is the baseline: every weight ties, and a tie keeps the teacher alone.
    same = np.log(np.clip(base, EPS, 1)).astype(np.float32)
    rec = choose_weight(same, base, yv, confidence=0.9, seed=0)
    assert rec["baseline_weight"] == 0.0 and rec["best_on_validation"] == 0.0 and not rec["adopted"]

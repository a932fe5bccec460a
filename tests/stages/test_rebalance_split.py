from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from conftest import frame

from pipeline.core.checks import allocate
from pipeline.core.io import DataError
from pipeline.core.params import RebalanceParams, SplitParams, replace
from pipeline.stages.augment import augment, build_jobs
from pipeline.stages.clean import clean
from pipeline.stages.rebalance import rebalance
from pipeline.stages.split import SPLITS, split


def imbalanced(n_a: int = 60, n_b: int = 12) -> pd.DataFrame:
    return frame([(f"text a {i}", "a") for i in range(n_a)] + [(f"text b {i}", "b") for i in range(n_b)])


def test_oversample_reaches_the_ratio_with_traceable_copies():
    df = imbalanced()
    r = rebalance(df, RebalanceParams(strategy="oversample", target_ratio=0.5), np.random.default_rng(0))
    counts = r.rows["label"].value_counts()
    assert counts["a"] == 60 and counts["b"] == 30
    copies = r.rows[r.rows["origin"] == "oversample"]
    assert len(copies) == 18 and set(copies["source_id"]) <= set(df[df["label"] == "b"]["id"])
    assert r.rows["id"].is_unique and r.dropped.empty


def test_undersample_counts_what_it_drops():
    df = imbalanced()
    r = rebalance(df, RebalanceParams(strategy="undersample", target_ratio=0.5), np.random.default_rng(0))
    assert r.rows["label"].value_counts().to_dict() == {"a": 24, "b": 12}
    assert len(r.rows) + len(r.dropped) == len(df) and set(r.dropped["reason"]) == {"undersampled"}


def test_none_passes_rows_through():
    df = imbalanced()
    assert rebalance(df, RebalanceParams(strategy="none", target_ratio=0.5), np.random.default_rng(0)).rows.equals(df)


@pytest.mark.parametrize("n", [1, 7, 10, 33, 101])
def test_allocate_is_exact(n):
    counts = allocate(n, (0.8, 0.1, 0.1))
    assert sum(counts) == n and all(abs(c - r * n) < 1 for c, r in zip(counts, (0.8, 0.1, 0.1)))


@pytest.fixture(scope="module")
def pipeline_data(sms_slice, data_stages_on):
    """The real data stages on a real slice: clean -> augment -> rebalance."""
    params = data_stages_on
    kept = clean(sms_slice, params.clean, "sms.csv").kept
    aug = augment(kept, build_jobs(kept, params.augment, params.seed), params.augment, params.seed).rows
    return rebalance(aug, params.rebalance, params.seed).rows


def test_split_invariants_on_real_data(pipeline_data, params):
    r = split(pipeline_data, params.split, params.seed)
    parts = r.splits
    # No source row (nor any copy or variant of it) in two splits.
    sources = [set(parts[s]["source_id"]) for s in SPLITS]
    assert all(sources[i].isdisjoint(sources[j]) for i in range(3) for j in range(i + 1, 3))
    # Every row, variants and copies included, points at its raw line: its source's raw_row.
    train = parts["train"]
    raw_of = train[train["origin"] == "original"].set_index("id")["raw_row"]
    derived = train[train["origin"] != "original"]
    assert train["raw_row"].notna().all() and (derived["raw_row"] == derived["source_id"].map(raw_of)).all()
    # Validation and test: only real text.
    assert (parts["val"]["origin"] == "original").all() and (parts["test"]["origin"] == "original").all()
    assert (parts["train"]["origin"] != "original").any()
    # Hash split: 80/10/10 per class within binomial noise (4 sigma); exact: within one source row.
    exact = split(pipeline_data, replace(params.split, method="exact"), params.seed).splits
    for label, group in pipeline_data.groupby("label"):
        n = group["source_id"].nunique()
        for name, ratio in zip(SPLITS, (0.8, 0.1, 0.1)):
            got = parts[name][parts[name]["label"] == label]["source_id"].nunique()
            assert abs(got - ratio * n) <= 4 * (n * ratio * (1 - ratio)) ** 0.5 + 1, (label, name, got, n)
            got = exact[name][exact[name]["label"] == label]["source_id"].nunique()
            assert abs(got - ratio * n) <= 1, (label, name, got, n)
    # Row accounting: every input row is in one split or dropped with its reason.
    assert sum(map(len, parts.values())) + len(r.dropped) == len(pipeline_data)
    assert set(r.dropped["reason"]) <= {"derived_row_in_eval_split"}


def where(parts: dict[str, pd.DataFrame]) -> dict[str, str]:
    return {i: name for name, d in parts.items() for i in d["id"]}


def test_hash_split_moves_no_row_when_data_grows_or_shrinks(sms_slice, params):
    """Issue 10: appending 20% new rows or deleting some moves 0 existing rows between splits."""
    base = clean(sms_slice, params.clean, "sms.csv").kept
    before = where(split(base, params.split, params.seed).splits)
    new = pd.DataFrame({"text": [f"fresh message {i} about dinner" for i in range(len(sms_slice) // 5)],
                        "spam": ["0", "1"] * (len(sms_slice) // 10)})
    grown = clean(pd.concat([sms_slice, new], ignore_index=True), params.clean, "sms.csv").kept
    after = where(split(grown, params.split, params.seed).splits)
    assert len(after) > len(before) and all(after[i] == s for i, s in before.items())
    shrunk = base.drop(index=base.index[::7])
    after = where(split(shrunk, params.split, params.seed).splits)
    assert all(before[i] == s for i, s in after.items())
    # A relabelled row stays where it was (the label is not part of the hash).
    fixed = base.copy()
    fixed.loc[fixed.index[:20], "label"] = fixed["label"].iloc[:20].map({"ham": "spam", "spam": "ham"})
    after = where(split(fixed, params.split, params.seed).splits)
    assert after == before
    # The exact method, by contrast, reshuffles: it is the opt-in for exact shares.
    ep = replace(params.split, method="exact")
    eb, ea = where(split(base, ep, params.seed).splits), where(split(grown, ep, params.seed).splits)
    assert sum(ea[i] != s for i, s in eb.items()) > 0


def test_hash_folds_test_disjoint_rows_and_fold_0_is_the_plain_split(sms_slice, params):
    """Issue 19 item 5: folds 0..k-1 test disjoint rows that together cover the set, each fold keeps 80/10/10 up
    to noise, a fold's test rows are never in its own train, and fold 0 is the default split row for row."""
    base = clean(sms_slice, params.clean, "sms.csv").kept
    plain = where(split(base, params.split, params.seed).splits)
    assert where(split(base, replace(params.split, fold=0), params.seed).splits) == plain
    tests = []
    for f in range(params.split.folds):
        parts = split(base, replace(params.split, fold=f), params.seed).splits
        assert not set(parts["test"]["id"]) & set(parts["train"]["id"])
        assert abs(len(parts["test"]) / len(base) - params.split.test) < 0.05
        tests.append(set(parts["test"]["id"]))
    assert params.split.folds == 10 and sum(map(len, tests)) == len(set().union(*tests)) == len(base)


def test_folds_move_a_tiny_class_test_row_too():
    """A class cut by rank (too small for the hash to give it a test row) moves its cut with the fold, so its test
    rows differ from fold to fold while it has rows enough."""
    df = frame([(f"a {i}", "a") for i in range(60)] + [(f"b {i}", "b") for i in range(3)])
    tested = [set(split(df, SplitParams(fold=f), 0).splits["test"].query("label == 'b'")["id"]) for f in range(3)]
    assert all(len(t) == 1 for t in tested) and len(set().union(*tested)) == 3


@pytest.mark.parametrize("bad, match", [({"fold": 10}, "0..9"), ({"fold": 1, "method": "exact"}, "hash"),
                                        ({"fold": -1}, "greater than or equal")])
def test_a_fold_out_of_range_names_the_key(bad, match):
    with pytest.raises(Exception, match=match):
        SplitParams(**bad)


def test_hash_split_gives_a_tiny_class_a_row_in_every_split():
    df = frame([(f"a {i}", "a") for i in range(60)] + [(f"b {i}", "b") for i in range(3)])
    parts = split(df, SplitParams(), 0).splits
    assert all((parts[n]["label"] == "b").sum() == 1 for n in SPLITS)


def test_too_few_rows_for_a_class_is_a_clear_error():
    df = frame([(f"a {i}", "a") for i in range(30)] + [("b 0", "b"), ("b 1", "b")])
    with pytest.raises(DataError, match="class 'b' has only 2 original row"):
        split(df, SplitParams(), 0)


def test_mixed_labels_in_one_source_group_are_refused():
    df = frame([("a", "x"), ("b", "y")])
    df.loc[1, "source_id"] = "r0000"
    with pytest.raises(DataError, match="different labels"):
        split(df, SplitParams(), 0)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def test_same_seed_gives_byte_identical_outputs(sms_slice, data_stages_on):
    """Two full runs of the data stages, each building its own augmenters, write the same bytes."""
    params = data_stages_on
    def run(seed: int) -> list[bytes]:
        from pipeline.stages.audit import audit
        from pipeline.stages.augment import EmbeddingSimilarity

        kept = clean(sms_slice, params.clean, "sms.csv").kept
        audited = audit(kept, params.audit, seed).rows
        p = params.augment
        aug = augment(audited, build_jobs(audited, p, seed), p, seed, EmbeddingSimilarity(p.filter)).rows
        bal = rebalance(aug, params.rebalance, np.random.default_rng(seed)).rows
        parts = split(bal, params.split, seed).splits
        return [parquet_bytes(x) for x in (kept, audited, aug, bal, *parts.values())]

    first, second = run(3), run(3)
    assert first == second
    assert run(4)[2:] != first[2:]  # and the seed matters


def test_kept_columns_reach_the_test_split(sms_slice, data_stages_on):
    """A raw column named in clean.keep_columns travels clean -> audit -> augment -> rebalance -> split with each
    row, variants and copies included, so evaluate can report per-slice metrics on the test split."""
    from pipeline.stages.audit import audit

    params = data_stages_on
    raw = sms_slice.assign(group=[f"g{i % 3}" for i in range(len(sms_slice))])
    cp = replace(params.clean, keep_columns=["group"])
    kept = clean(raw, cp, "sms.csv").kept
    audited = audit(kept, params.audit, params.seed).rows
    aug = augment(audited, build_jobs(audited, params.augment, params.seed), params.augment, params.seed).rows
    bal = rebalance(aug, params.rebalance, params.seed).rows
    parts = split(bal, params.split, params.seed).splits
    expected = raw["group"].set_axis(range(1, len(raw) + 1))  # by raw_row
    for name, part in parts.items():
        assert (part["group"] == part["raw_row"].map(expected)).all(), name
    assert (parts["train"]["origin"] != "original").any()  # variants and copies were checked too

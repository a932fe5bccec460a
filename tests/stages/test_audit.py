from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.params import AuditParams
from pipeline.stages.audit import audit, stage_metrics

SPORT = "goal match team coach league striker referee season stadium transfer keeper penalty derby".split()
TECH = "laptop software chip server cloud browser update battery screen network app robot compiler".split()


def synthetic(n: int = 500, flips: int = 20, seed: int = 0) -> tuple[pd.DataFrame, set[str]]:
    """Two topics with disjoint vocabularies (a clear signal) and `flips` rows given the other topic's label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "sport" if i % 2 == 0 else "tech"
        words = rng.choice(SPORT if label == "sport" else TECH, size=8)
        rows.append((f"r{i:04d}", " ".join(words), label))
    df = pd.DataFrame(rows, columns=["id", "text", "label"])
    df = df.assign(source_id=df["id"], origin="original", raw_row=np.arange(1, n + 1))
    flipped = rng.choice(n, size=flips, replace=False)
    df.loc[flipped, "label"] = df.loc[flipped, "label"].map({"sport": "tech", "tech": "sport"})
    return df, set(df.loc[flipped, "id"])


def test_audit_finds_flipped_labels():
    df, flipped = synthetic()
    r = audit(df, AuditParams(), seed=0)
    found = set(r.issues["id"]) & flipped
    assert len(found) >= 0.8 * len(flipped), (len(found), len(r.issues))
    assert len(r.issues) <= 2 * len(flipped)  # precision: it does not flag half the data
    top = r.issues.iloc[0]
    assert top["suggested_label"] != top["label"] and top["rank"] == 1 and top["raw_row"] >= 1
    assert r.rows.equals(df)  # action: report passes every row on


def test_audit_drop_keeps_row_accounting_exact():
    df, flipped = synthetic(seed=1)
    r = audit(df, AuditParams(action="drop"), seed=0)
    m = stage_metrics(df, r, AuditParams(action="drop"))
    assert m["rows_in"] == m["rows_out"] + m["dropped_total"]
    assert m["dropped"] == {"label_issue": len(r.issues)} and not set(r.rows["id"]) & set(r.dropped["id"])
    assert audit(df, AuditParams(action="drop"), seed=0).rows.equals(r.rows)  # deterministic


def test_audit_disabled_or_tiny_class_passes_rows_on():
    df, _ = synthetic(n=40, flips=0)
    assert audit(df, AuditParams(enabled=False), seed=0).issues.empty
    tiny = pd.concat([df, df.iloc[:1].assign(id="x", source_id="x", label="other")], ignore_index=True)
    r = audit(tiny, AuditParams(), seed=0)
    assert r.issues.empty and len(r.rows) == len(tiny) and r.folds == 0


def test_audit_is_the_same_whatever_the_processes_and_bounds_each_folds_training_rows():
    df, flipped = synthetic(n=24_000, flips=240, seed=2)  # above PARALLEL_ROWS: hashing and folds on processes
    one = audit(df, AuditParams(jobs=1, max_train_rows=5000), seed=0)
    two = audit(df, AuditParams(jobs=2, max_train_rows=5000), seed=0)
    assert one.issues.equals(two.issues)
    assert len(set(one.issues["id"]) & flipped) >= 0.8 * len(flipped)  # a 5,000-row model per fold still finds them

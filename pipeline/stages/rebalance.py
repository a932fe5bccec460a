"""rebalance: data/interim/augmented.parquet -> data/interim/balanced.parquet (params: seed, rebalance).

`oversample` repeats randomly chosen rows of each smaller class until it has at least `target_ratio` times the
largest class's rows (copies get origin `oversample` and keep their `source_id`); `undersample` drops random
rows of larger classes down to smallest / target_ratio (each counted as `undersampled`); `none` passes rows on.
Class weights for a cost-sensitive loss are not computed here but from the training split (train stage).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.io import (
    class_counts,
    drop_counts,
    read_table,
    run_stage,
    setup_logging,
    stable_id,
    stage_args,
    write_json,
    write_table,
)
from pipeline.core.params import RebalanceParams, load_params
from pipeline.core.tasks import task_for

log = logging.getLogger(__name__)


@dataclass
class RebalanceResult:
    rows: pd.DataFrame
    dropped: pd.DataFrame  # undersampled rows: id, source_id, origin, reason, text, label


def rebalance(df: pd.DataFrame, p: RebalanceParams, rng: np.random.Generator, exempt: frozenset = frozenset()
              ) -> RebalanceResult:
    """`exempt` labels pass untouched and do not count toward the target (the token task's sentences that hold no
    entity: balancing entity types against them would copy every rare-type sentence dozens of times)."""
    counts = df["label"][~df["label"].isin(exempt)].value_counts().sort_index()
    empty_drop = df.iloc[:0].assign(reason=pd.Series(dtype=object))
    if p.strategy == "none" or counts.empty:
        return RebalanceResult(df.reset_index(drop=True), empty_drop)
    parts, dropped = [df[df["label"].isin(exempt)]], []
    if p.strategy == "oversample":
        target = math.ceil(p.target_ratio * counts.max())
        for label, n in counts.items():
            rows = df[df["label"] == label]
            parts.append(rows)
            if n < target:
                picks = rows.iloc[rng.choice(n, size=target - n, replace=True)]
                # k-th copy of a row: ids stay unique even when the same row is drawn twice.
                k = picks.groupby("id").cumcount()
                copies = picks.assign(
                    id=[stable_id(i, "oversample", c) for i, c in zip(picks["id"], k)], origin="oversample"
                )
                parts.append(copies)
    else:
        cap = math.floor(counts.min() / p.target_ratio)
        for label, n in counts.items():
            rows = df[df["label"] == label]
            if n > cap:
                keep = np.zeros(n, dtype=bool)
                keep[rng.choice(n, size=cap, replace=False)] = True
                parts.append(rows[keep])
                dropped.append(rows[~keep].assign(reason="undersampled"))
            else:
                parts.append(rows)
    out = pd.concat(parts, ignore_index=True)
    drop = pd.concat(dropped, ignore_index=True) if dropped else empty_drop
    return RebalanceResult(out, drop)


def stage_metrics(df_in: pd.DataFrame, result: RebalanceResult) -> dict:
    return {
        "rows_in": len(df_in),
        "rows_out": len(result.rows),
        "added": int((result.rows["origin"] == "oversample").sum() - (df_in["origin"] == "oversample").sum()),
        **drop_counts(result.dropped),
        "per_class": class_counts(result.rows["label"]),
    }


def main() -> None:
    setup_logging()
    args = stage_args(__doc__.splitlines()[0], "input", "output", "dropped", "metrics")
    params = load_params(args.params)
    df = read_table(args.input)
    result = rebalance(df, params.rebalance, np.random.default_rng(params.seed), task_for(params).rebalance_exempt)
    metrics = stage_metrics(df, result)
    write_table(result.rows, args.output)
    write_table(result.dropped, args.dropped)
    write_json(metrics, args.metrics)
    log.info("%s: %s -> %s", params.rebalance.strategy, class_counts(df["label"]), metrics["per_class"])


if __name__ == "__main__":
    run_stage(main)

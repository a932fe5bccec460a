from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.params import Params, load_params, replace

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "sms-spam.csv"

# The Hub is unreachable here and in CI: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def params() -> Params:
    """The repository's own params.yaml: it must always load."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def data_stages_on(params: Params) -> Params:
    """params.yaml with both augmentation methods and oversampling switched on (off by default since the
    ablation): tests of those stages must not depend on the defaults."""
    a = params.augment
    aug = replace(a, synonym=replace(a.synonym, enabled=True),
                              back_translation=replace(a.back_translation, enabled=True))
    return replace(params, augment=aug,
                               rebalance=replace(params.rebalance, strategy="oversample"))


@pytest.fixture(scope="session")
def raw_sms() -> pd.DataFrame:
    return pd.read_csv(RAW, dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="session")
def sms_slice(raw_sms: pd.DataFrame) -> pd.DataFrame:
    """A small real slice: 240 ham + 60 spam rows, in file order."""
    ham = raw_sms[raw_sms["spam"] == "0"].head(240)
    spam = raw_sms[raw_sms["spam"] == "1"].head(60)
    return pd.concat([ham, spam]).sort_index().reset_index(drop=True)


def frame(rows: list[tuple[str, str]], origin: str = "original") -> pd.DataFrame:
    """A lineage frame from (text, label) pairs."""
    ids = [f"r{i:04d}" for i in range(len(rows))]
    return pd.DataFrame({"id": ids, "source_id": ids, "origin": origin,
                         "text": [t for t, _ in rows], "label": [lab for _, lab in rows]})

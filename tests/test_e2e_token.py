"""End to end for the token task (issue 33): `dvc repro` with `task: token` on the real WNUT-16 tweets, as a user
would run it (the raw var pointed at a CoNLL file, `task: token` in params.yaml), on a tiny training budget."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = {
    "task": "token",
    "train": {"max_steps": 16, "batch_size": 16, "eval_steps": 8, "early_stopping_patience": 0, "max_length": 48},
    "distill": {"max_steps": 16, "batch_size": 16, "eval_steps": 8, "early_stopping_patience": 0, "max_length": 48},
    "audit": {"folds": 3},
    "evaluate": {"throughput_batches": 1, "latency_runs": 3, "bootstrap_resamples": 200},
    # A 16-step student barely tags entities: the gate is exercised, not the quality of so short a run.
    "export": {"min_agreement": 0.9, "min_macro_f1_ratio": 0.5},
}
STAGES = {"clean", "audit", "augment", "rebalance", "split", "train", "teacher_logits", "distill", "export", "baseline",
          "evaluate"}


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}



@pytest.fixture(scope="module")
def repo(tmp_path_factory, env, wnut16_file) -> Path:
    repo = tmp_path_factory.mktemp("token-repo")
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    # The README's step 1: point the raw var at your file.
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    assert "raw: data/raw/sms-spam.csv" in dvc_yaml
    (repo / "dvc.yaml").write_text(dvc_yaml.replace("raw: data/raw/sms-spam.csv", "raw: data/raw/tweets.conll"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "data" / "raw").mkdir(parents=True)
    shutil.copy(wnut16_file, repo / "data" / "raw" / "tweets.conll")
    shutil.copytree(ROOT / "data" / "feedback", repo / "data" / "feedback")
    run(["git", "init", "-q"], repo, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    run([sys.executable, "-m", "dvc", "config", "core.site_cache_dir", str(repo / ".dvc-site")], repo, env)
    out = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert ran(out.stdout) == STAGES, out.stdout
    return repo


def test_every_sentence_and_token_is_accounted_for_and_no_sentence_is_in_two_splits(repo):
    clean = json.loads((repo / "metrics" / "data" / "clean.json").read_text())
    assert clean["rows_in"] == 2394 and clean["tokens_in"] == 46469  # the published WNUT-16 counts
    assert clean["rows_in"] == clean["rows_out"] + clean["dropped_total"]
    dropped = pd.read_parquet(repo / "data" / "interim" / "clean_dropped.parquet")
    kept = pd.read_parquet(repo / "data" / "interim" / "clean.parquet")
    words_dropped = int(dropped["text"].str.split().str.len().sum())
    assert clean["tokens_in"] == clean["tokens_out"] + words_dropped + sum(clean["tokens_dropped"].values())
    assert clean["dropped"]["label_conflict"] > 0  # repeated tweets tagged two ways: every copy, counted
    splits = {n: pd.read_parquet(repo / "data" / "processed" / f"{n}.parquet") for n in ("train", "val", "test")}
    augment = json.loads((repo / "metrics" / "data" / "augment.json").read_text())
    split = json.loads((repo / "metrics" / "data" / "split.json").read_text())
    # augment.mentions `auto`: 95% of the tweets' words are O, so mention replacement runs; every variant is added
    # or dropped with a reason, and the split drops (counted) those whose source is a validation or test sentence
    assert augment["auto"]["mentions"]["enabled"] and augment["added"]["mention_replacement"] > 0
    assert augment["rows_out"] == augment["rows_in"] + sum(augment["added"].values())
    assert split["rows_in"] == augment["rows_out"]  # rebalance is off by default
    assert sum(map(len, splits.values())) == split["rows_in"] - split["dropped_total"]
    assert (splits["val"]["origin"] == "original").all() and (splits["test"]["origin"] == "original").all()
    originals = len(splits["test"]) + len(splits["val"]) + (splits["train"]["origin"] == "original").sum()
    assert originals == augment["rows_in"]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(splits[a]["id"]) & set(splits[b]["id"])
        assert not set(splits[a]["text"]) & set(splits[b]["text"])
    assert all(len(t) == len(g) for t, g in zip(splits["test"]["tokens"], splits["test"]["tags"]))


def test_evaluate_reports_entity_f1_with_cis_and_paired_comparisons(repo):
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    preds = pd.read_parquet(repo / "data" / "eval" / "test_predictions.parquet")
    test = pd.read_parquet(repo / "data" / "processed" / "test.parquet")
    for name in ("teacher", "student", "student_onnx", "baseline"):
        m = metrics[name]
        ci = m["entity_f1_ci"]
        assert ci["ci_low"] <= ci["value"] == round(m["f1"], 4) <= ci["ci_high"] and ci["sentences"] == len(test)
        assert set(m["per_type"]) == {"company", "facility", "geo-loc", "movie", "musicartist", "other", "person",
                                      "product", "sportsteam", "tvshow"}
        gold = sum(v["support"] for v in m["per_type"].values())
        assert m["errors"]["missed"] <= gold
        assert len(preds[preds["model"] == name]) == len(test)
        assert (repo / "metrics" / "eval" / f"confusion_{name}.csv").is_file()
    assert metrics["baseline"]["f1"] > 0.2  # the CRF learns the tweets' entities from 1,800 sentences
    cmp = metrics["comparisons"]["teacher_vs_baseline"]
    assert cmp["ci_low"] <= cmp["delta"] <= cmp["ci_high"] and cmp["sentences"] == len(test)
    export = json.loads((repo / "metrics" / "export.json").read_text())["student"]
    assert export["max_abs_logit_diff_fp32"] < 1e-3 and "entity_f1_ratio" in export
    # The recipe is chosen by entity F1 on the selection sentences: the first (smallest) one that keeps the bound
    # ships unless the test sentences refuse it; word agreement is only recorded.
    sel = export["selection_entity_f1_ratio"]
    chosen = next((r for r, ratio in sel.items() if ratio >= TINY["export"]["min_macro_f1_ratio"]
                   and r not in export["rejected_on_test"]), "none")
    assert export["recipe"] == chosen and set(export["selection_agreement"]) == set(sel)
    assert export["entity_f1_ratio"] >= TINY["export"]["min_macro_f1_ratio"]
    report = (repo / "metrics" / "REPORT.md").read_text()
    assert "token classification" in report and "entity F1" in report
    assert "## Why the models decide" in report and "Per-entity attributions of `models/student-onnx`" in report
    words = pd.read_csv(repo / "metrics" / "eval" / "top_words.csv")
    assert set(words["class"]) <= TYPES and (words["score"] > 0).all()
    assert "Why the models decide" in (repo / "metrics" / "eval" / "explanations.html").read_text()


def test_packaged_token_models_load_in_transformers_pipeline_with_aggregation(repo):
    from transformers import pipeline

    card = (repo / "models" / "teacher" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card
    for name in ("teacher", "student"):
        ner = pipeline("token-classification", model=str(repo / "models" / name), aggregation_strategy="first")
        out = ner("Going to see Justin Bieber in New York tonight")
        assert isinstance(out, list) and all({"entity_group", "start", "end"} <= set(e) for e in out)
    from pipeline.core.token_scoring import open_tagger

    text = "RT @jo: Lady Gaga &amp; Beyoncé in NYC 🙂 http://t.co/x"
    for name in ("student-onnx", "baseline"):
        (res,) = open_tagger(repo / "models" / name).spans([text])
        assert res["status"] == "ok"
        assert all(text[e["start"]:e["end"]] == e["text"] for e in res["entities"])


def test_second_repro_does_nothing(repo, env):
    out = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert ran(out.stdout) == set(), out.stdout


@contextlib.contextmanager
def serving(repo: Path, model: str):
    """A real server on a packaged model of the project."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.commands.serve", "--model", str(repo / "models" / model),
                             "--port", str(port), "--max-explain-words", "40"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "slow"
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def token_server(repo):
    """The packaged int8 student, served."""
    with serving(repo, "student-onnx") as url:
        yield url


@pytest.fixture(scope="module")
def crf_server(repo):
    """The CRF, served: its 1,800 sentences of training tag names, where the 16-step models of TINY may tag none."""
    with serving(repo, "baseline") as url:
        yield url


TYPES = {"company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam", "tvshow"}


def test_serve_answers_entity_spans_whose_offsets_slice_the_raw_text(token_server):
    """Raw text in (emoji, URLs, HTML entities, a handle), spans out whose offsets cut exactly their text from what
    was sent; the OpenAPI schema describes the spans."""
    import httpx

    url = token_server
    texts = ["RT @jo: Lady Gaga &amp; Beyoncé 🙂 in New York tonight http://t.co/x ", "",
             "Justin Bieber 🎤 at Madison Square Garden &lt;3 #MSG", "Barack Obama visits London"]
    r = httpx.post(url + "/predict", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["status"] for p in preds] == ["ok", "empty_text", "ok", "ok"]
    spans = [e for t, p in zip(texts, preds) if p["entities"] for e in p["entities"]]
    for t, p in zip(texts, preds):
        for e in p["entities"] or []:
            assert t[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
    assert all(e["type"] in TYPES for e in spans)
    schema = httpx.get(url + "/openapi.json").json()["components"]["schemas"]
    assert {"EntitySpan", "EntityPrediction", "ExplainedEntity"} <= set(schema)


def test_serve_explains_each_entity_it_finds_and_refuses_bad_requests(crf_server):
    import httpx

    url = crf_server
    texts = ["Justin Bieber 🎤 at Madison Square Garden &lt;3 #MSG", "no names in here at all",
             "Barack Obama visits London"]
    preds = httpx.post(url + "/predict", json={"texts": texts}, timeout=60).json()["predictions"]
    r = httpx.post(url + "/explain", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    found = r.json()["explanations"]
    assert found, preds
    # one explanation per entity /predict answers, same spans, same probability (its score), words with offsets
    assert [(x["text_index"], x["entity"]["start"], x["entity"]["end"], x["entity"]["type"]) for x in found] == \
        [(i, e["start"], e["end"], e["type"]) for i, p in enumerate(preds) for e in p["entities"]]
    scores = {(i, e["start"]): e["score"] for i, p in enumerate(preds) for e in p["entities"]}
    for x in found:
        t = texts[x["text_index"]]
        assert x["probability"] == pytest.approx(scores[(x["text_index"], x["entity"]["start"])], abs=1e-4)
        assert x["method"] == "occlusion" and all(t[w["start"]:w["end"]] for w in x["words"])
        assert t[x["entity"]["start"]:x["entity"]["end"]] == x["entity"]["text"]
    assert httpx.get(url + "/model").json()["limits"]["explain"]["methods"] == ["occlusion", "random"]
    for body, status, fragment in (({"texts": ["Obama"], "class": "spam"}, 422, "unknown entity type 'spam'"),
                                   ({"texts": ["   "]}, 422, "texts[0]: empty_text"),
                                   ({"texts": ["Obama"], "method": "attention"}, 422, "not available"),
                                   ({"texts": [" ".join(["word"] * 41)]}, 413, "41 words, more than")):
        r = httpx.post(url + "/explain", json=body, timeout=60)
        assert r.status_code == status and fragment in r.json()["error"], r.text


def test_the_page_shows_a_token_models_entities_and_why(crf_server, browser):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = "Barack Obama visits London with Justin Bieber"
    ents = httpx.post(crf_server + "/predict", json={"texts": [text]}).json()["predictions"][0]["entities"]
    browser.get(crf_server + "/")
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "result").is_displayed())
    assert browser.find_element(By.ID, "label").text == f"{len(ents)} entities"
    assert [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#words span.w")] == [e["text"] for e in ents]
    lines = browser.find_elements(By.CSS_SELECTOR, "#entities p.entity")
    assert len(lines) == len(ents) >= 1
    for line, e in zip(lines, ents):
        assert line.find_element(By.TAG_NAME, "b").text.startswith(f"{e['type']} \u00ab{e['text']}\u00bb")
        assert [w.text for w in line.find_elements(By.CSS_SELECTOR, "span.w")] == text.split()


def test_ingested_spans_and_retagged_sentences_show_in_lineage_diff_and_trace(repo, env):
    """Commit the run; in the raw file take one entity off a sentence that holds two (its stratum may well stay) and
    delete another sentence; ingest two span-labelled texts (as `monitor --to-label` writes them, corrected); `dvc
    repro split`; then `lineage diff` counts exactly that, names the retagged sentence, moves no sentence between
    splits, and `lineage trace` follows a feedback sentence back to its request."""
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "first run"], repo, env)
    raw = repo / "data" / "raw" / "tweets.conll"
    lines = raw.read_text(encoding="utf-8").split("\n")
    kept = pd.read_parquet(repo / "data" / "interim" / "clean.parquet")
    dropped_text = set(pd.read_parquet(repo / "data" / "interim" / "clean_dropped.parquet")["text"])

    def as_in_file(row) -> bool:  # its words are the file's lines from its raw row on, one per line
        at = int(row["raw_row"]) - 1
        return [ln.split("\t")[0] for ln in lines[at:at + len(row["tokens"])]] == list(row["tokens"])

    whole = kept[kept.apply(as_in_file, axis=1) & ~kept["text"].isin(dropped_text)]
    target = whole[whole["tags"].map(lambda t: sum(x.startswith("B-") for x in t) >= 2)].iloc[0]
    victim = whole[whole["raw_row"] > target["raw_row"]].iloc[-1]
    tags = list(target["tags"])
    first = tags.index(next(t for t in tags if t.startswith("B-")))
    end = first + 1 + next((k for k, t in enumerate(tags[first + 1:]) if not t.startswith("I-")), len(tags))
    for j in range(first, end):
        at = int(target["raw_row"]) - 1 + j
        lines[at] = lines[at].rsplit("\t", 1)[0] + "\tO"
    at = int(victim["raw_row"]) - 1
    del lines[at:at + len(victim["tokens"]) + 1]  # its words and the separator after them
    raw.write_text("\n".join(lines), encoding="utf-8")
    texts = ["Lady Gaga &amp; Beyoncé 🙂 in Newcastle tonight http://t.co/x", "Taylor Swift is in Berlin"]
    spans = [[{"start": 0, "end": 9, "type": "person"}, {"start": 29, "end": 38, "type": "geo-loc"}],
             [[0, 12, "person"], [19, 25, "geo-loc"]]]
    pd.DataFrame({"text": texts, "label": [json.dumps(s, ensure_ascii=False) for s in spans],
                  "request_id": ["req-a", "req-b"]}).to_csv(repo / "to_label.csv", index=False)
    run([sys.executable, "-m", "pipeline.commands.ingest", str(repo / "to_label.csv"), "--params",
         str(repo / "params.yaml")], ROOT, env)
    run([sys.executable, "-m", "dvc", "repro", "split"], repo, env)

    lineage = [sys.executable, "-m", "pipeline.commands.lineage", "--repo", str(repo), "--json"]
    d = json.loads(run([*lineage, "diff"], ROOT, env).stdout)
    clean = d["stages"]["clean"]
    assert {k: clean[k] for k in ("added", "removed", "relabelled", "text_changed")} == {
        "added": 2, "removed": 1, "relabelled": 1, "text_changed": 0}, clean
    [example] = clean["examples"]
    assert example["id"] == target["id"] and len(example["now"].split()) == len(example["was"].split()) - 1
    assert d["moved_split"]["rows"] == 0
    new = pd.read_parquet(repo / "data" / "interim" / "clean.parquet").set_index("raw_row").loc[[-1, -2]]
    assert list(new.loc[-1, "tags"][:2]) == ["B-person", "I-person"] and "B-geo-loc" in list(new.loc[-1, "tags"])
    fb = json.loads(run([*lineage, "trace", "--request-id", "req-b"], ROOT, env).stdout)["rows"][0]
    assert fb["raw_row"] == -2 and fb["text"] == "Taylor Swift is in Berlin" and fb["stages"]["clean"] == "kept"
    assert fb["label"] == "0:2:person 4:5:geo-loc"  # its entities over words, not its stratum

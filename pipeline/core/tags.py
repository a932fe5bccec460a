"""Entity tag schemes for token classification: read BIO (IOB2), IOB1, BIOES (IOBES, BILOU), BMES and plain
one-word tags (part of speech), and normalise every sentence to BIO, the one scheme the rest of the pipeline sees.

BIO is what Hugging Face's token-classification models and seqeval's strict mode use, and every other scheme maps
into it without loss of spans: S/U (single) and B begin an entity, I/M/E/L continue it. A continuation tag that
cannot continue (an `I-X` after `O`, after another type, or at a sentence's start) is repaired the way conlleval
reads it, as the start of a new entity, and counted by reason, so a file with sloppy tags loses nothing silently.
An `E-X` or `S-X` closes its entity, so a continuation after it starts a new one, also counted. In IOB1 an `I-X`
after `O` is no repair: that is how the scheme starts an entity, and `B-X` only splits two adjacent same-type ones.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

SCHEMES = ("bio", "iob1", "bioes", "bmes", "plain")
# plain: every tag is a class of its own word (part of speech, a UD treebank's UPOS): each tag T becomes B-T, a
# one-word span, so strict span F1 over them is micro-F1 over the words' tags and every stage reads it unchanged.
BEGIN = {"bio": "B", "iob1": "B", "bioes": "BSU", "bmes": "BS"}
INSIDE = {"bio": "I", "iob1": "I", "bioes": "IEL", "bmes": "ME"}
CLOSING = "ESLU"  # these end their entity: what follows cannot continue it
TAG = re.compile(r"(?P<prefix>[A-Z])[-_](?P<type>\S+)")


class TagError(ValueError):
    """A tag the scheme cannot read; `index` is the token's position in its sentence."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Span:
    """Tokens [start, end) form one entity of `type`."""

    start: int
    end: int
    type: str


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-person' -> ('B', 'person'); 'O' -> ('O', None). Accepts '-' or '_' after the prefix."""
    if tag == "O":
        return "O", None
    m = TAG.fullmatch(tag)
    if not m:
        raise ValueError(f"tag {tag!r} is neither O nor PREFIX-TYPE (such as B-person)")
    return m["prefix"], m["type"]


def detect_scheme(sentences: list[list[str]]) -> str:
    """The scheme a file's tags are written in. M- means BMES; E-, S-, L- or U- mean BIOES; otherwise IOB1 when
    entities start with I- and B- appears only right after the same type (its one use there), else BIO."""
    prefixes, i_starts, b_after_break = set(), 0, 0
    for tags in sentences:
        prev: tuple[str, str | None] = ("O", None)
        for tag in tags:
            prefix, typ = split_tag(tag)
            prefixes.add(prefix)
            if prefix == "I" and (prev[0] == "O" or prev[1] != typ):
                i_starts += 1
            if prefix == "B" and (prev[0] == "O" or prev[1] != typ):
                b_after_break += 1
            prev = (prefix, typ)
    if "M" in prefixes:
        return "bmes"
    if prefixes & set("ESLU"):
        return "bioes"
    return "iob1" if i_starts and not b_after_break else "bio"


def to_bio(tags: list[str], scheme: str, repairs: Counter | None = None) -> list[str]:
    """One sentence's tags in `scheme` -> BIO. Repairs (a continuation that cannot continue) are added to `repairs`
    by reason; a prefix the scheme does not have raises TagError naming the token."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    if scheme == "plain":
        return ["O" if t == "O" else f"B-{t}" for t in tags]
    out: list[str] = []
    prev_prefix, prev_type = "O", None
    for i, tag in enumerate(tags):
        try:
            prefix, typ = split_tag(tag)
        except ValueError as e:
            raise TagError(i, str(e)) from None
        if prefix == "O":
            out.append("O")
        elif prefix in BEGIN[scheme]:
            out.append(f"B-{typ}")
        elif prefix in INSIDE[scheme]:
            continues = prev_prefix != "O" and prev_type == typ and prev_prefix not in CLOSING
            if not continues and scheme != "iob1" and repairs is not None:
                reason = ("continuation_at_start" if i == 0 else "continuation_after_o" if prev_prefix == "O" else
                          "continuation_after_other_type" if prev_type != typ else "continuation_after_end")
                repairs[reason] += 1
            out.append(f"I-{typ}" if continues else f"B-{typ}")
        else:
            raise TagError(i, f"tag {tag!r}: {scheme.upper()} has no {prefix}- prefix "
                              f"(it uses {', '.join(sorted(set(BEGIN[scheme] + INSIDE[scheme])))} and O)")
        prev_prefix, prev_type = prefix, typ
    return out


def spans(bio: list[str]) -> list[Span]:
    """The entities of one BIO sentence (as to_bio writes it: every entity begins with B-)."""
    found: list[Span] = []
    start, typ = None, None
    for i, tag in enumerate([*bio, "O"]):
        prefix, t = split_tag(tag)
        if start is not None and (prefix != "I" or t != typ):
            found.append(Span(start, i, typ))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, typ = i, t
    return found


def from_spans(n_tokens: int, entities: list[Span]) -> list[str]:
    """BIO tags for `n_tokens` tokens holding these non-overlapping entities."""
    tags = ["O"] * n_tokens
    for s in entities:
        tags[s.start] = f"B-{s.type}"
        tags[s.start + 1:s.end] = [f"I-{s.type}"] * (s.end - s.start - 1)
    return tags


def bio_labels(bio_sentences: list[list[str]]) -> list[str]:
    """A token model's label set for these sentences: O, then B- and I- of every entity type they hold, by type."""
    types = sorted({s.type for tags in bio_sentences for s in spans(tags)})
    return ["O", *(f"{prefix}-{t}" for t in types for prefix in "BI")]


def entity_types(bio_sentences: list[list[str]]) -> Counter:
    """Entities per type over sentences in BIO."""
    return Counter(s.type for tags in bio_sentences for s in spans(tags))

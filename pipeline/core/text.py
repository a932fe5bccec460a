"""Text normalisation: the one function `clean` applies to training data and anything that scores new text
must apply too (no training/serving skew), and the key that decides when two texts are the same text.
"""
from __future__ import annotations

import html
import re
import unicodedata

from pipeline.core.params import CleanParams

# Only real HTML tags: a known element name, optional attributes. A bare `<[^>]*>` ate "I <3 you … x > 5 ok" and
# placeholders such as SMS's `<DECIMAL>`.
_HTML_ELEMENTS = (
    "a abbr address article aside b big blockquote body br button caption center cite code col dd del div dl dt em "
    "font footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins label li link main meta nav "
    "noscript ol option p pre q s script section select small span strike strong style sub sup table tbody td "
    "textarea tfoot th thead title tr tt u ul"
).split()
_TAG = re.compile(r"</?(?:%s)(?:\s[^<>]{0,200})?\s*/?>" % "|".join(_HTML_ELEMENTS), re.IGNORECASE)
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# C0/C1 controls, zero-width characters, line/paragraph separators, BOM, and the bidi embedding/override/isolate
# controls (U+202A-U+202E, U+2066-U+2069), which can make a text display differently from what a model reads.
_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
# A row whose text lost more than this many characters to normalisation (beyond whitespace) is counted.
CHANGED_CHARS = 5
SPACE = re.compile(r"\s+")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)")
_NOT_WORD = re.compile(r"[\W_]+")


# ASCII that ftfy and NFKC leave as it is: ftfy's fixes of ASCII text need an HTML entity (&), a terminal escape
# or another control character, or a carriage return; NFKC changes no ASCII character. Most text of most corpora is
# such ASCII, and skipping the two for it made `clean` several times faster (bench/results/SCALE.md);
# tests/core/test_text.py checks that both really leave it unchanged.
_ASCII_FTFY_TOUCHES = re.compile(r"[&\x00-\x08\x0b-\x1f\x7f]")


def unicode_settled(text: str) -> bool:
    """True when ftfy.fix_text and NFKC would return `text` unchanged (a cheap, sufficient test)."""
    return text.isascii() and _ASCII_FTFY_TOUCHES.search(text) is None


def normalise_text(text: str, p: CleanParams) -> str:
    if not unicode_settled(text):
        if p.fix_unicode:
            import ftfy

            text = ftfy.fix_text(text)  # mojibake such as "donâ€™t" -> "don't"; also applies NFC
        text = unicodedata.normalize("NFKC", text)
    if p.strip_html:
        if "<" in text:  # no tag without one; the regexes cost more than the test
            text = _TAG.sub(" ", _SCRIPT.sub(" ", text))
        text = html.unescape(text)
    text = _CONTROL.sub(" ", text)
    if p.mask_emails:
        text = _EMAIL.sub("[EMAIL]", text)
    if p.mask_urls:
        text = _URL.sub("[URL]", text)
    if p.mask_phones:
        text = _PHONE.sub("[PHONE]", text)
    if p.lowercase:
        text = text.lower()
    return SPACE.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """Texts that differ only in case, punctuation or spacing are the same text for de-duplication."""
    return _NOT_WORD.sub(" ", text.casefold()).strip()


_INTEGRAL_FLOAT = re.compile(r"^[+-]?\d+\.0*$")


def raw_label_key(raw: object) -> str:
    """A raw label as the key `clean.label_names` is looked up with: stripped text, integral floats as integers."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # JSON/Parquet integer labels read as floats when a column has gaps
    s = str(raw).strip()
    if _INTEGRAL_FLOAT.match(s):
        s = str(int(float(s)))  # "1.0" in a CSV is the integer label 1 (spreadsheets write them so)
    return s

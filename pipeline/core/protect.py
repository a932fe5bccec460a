"""Protected tokens: spans that augmentation must never change (URLs, e-mails, @handles, #hashtags, numbers,
currency amounts and the placeholders `clean` writes when it masks PII).

A paraphraser does not know that `http` in a URL is not the word "http" (WordNet: "hypertext transfer protocol"),
or that `@ford` is a name; a translator lower-cases URLs. So each protected span is replaced by a placeholder
`⟦n⟧` before a method runs and put back afterwards. Both Apertium and our synonym tokenizer pass `⟦n⟧` through
untouched; a method that loses, duplicates or invents a placeholder (a neural translator can) yields no variant:
`restore` returns None and the augment stage counts the drop as `protected_token_lost`.
"""
from __future__ import annotations

import re

# Order matters: earlier alternatives win where spans overlap (a URL containing digits is one URL).
_PATTERNS = [
    r"\[(?:EMAIL|URL|PHONE)\]",  # clean's masking placeholders
    r"<[A-Z][A-Z_]*>",  # placeholders already in a dataset, e.g. SMS's <DECIMAL>, <TIME>
    r"(?:https?://|www\.)[^\s<>\"']+",
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # e-mail, before @handle
    r"\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|info|biz|io|co\.uk|uk|de|fr|es|ly|co)(?:/[^\s<>\"']*)?\b",  # bare domain
    r"(?<![\w@])@\w+",
    r"(?<![\w#])#\w+",
    r"[£$€¥₹]\s?\d[\d,]*(?:\.\d+)?(?:[kKmM]|bn)?",  # currency before the bare number inside it
    r"\d[\d,]*(?:\.\d+)?\s?(?:USD|GBP|EUR|usd|gbp|eur|pence|p)\b",
    r"\d(?:[\w,.:/-]*\w)?",  # numbers, times, dates, codes such as 87121, 10:30pm, 21st
]
PROTECTED = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))
_PLACEHOLDER = re.compile(r"⟦\s*(\d+)\s*⟧")


def protected_tokens(text: str) -> list[str]:
    return [m.group(0) for m in PROTECTED.finditer(text)]


def mask(text: str) -> tuple[str, list[str]]:
    """Replace every protected span by `⟦i⟧`; returns the masked text and the spans in order."""
    tokens: list[str] = []

    def sub(m: re.Match) -> str:
        tokens.append(m.group(0))
        return f"⟦{len(tokens) - 1}⟧"

    # A text that already contains the placeholder brackets cannot be masked unambiguously: protect it whole.
    if "⟦" in text or "⟧" in text:
        return "⟦0⟧", [text]
    return PROTECTED.sub(sub, text), tokens


def restore(text: str, tokens: list[str]) -> str | None:
    """Put the spans back; None when a placeholder was lost, duplicated or invented by the method."""
    found = [int(m.group(1)) for m in _PLACEHOLDER.finditer(text)]
    if sorted(found) != list(range(len(tokens))):
        return None
    return _PLACEHOLDER.sub(lambda m: tokens[int(m.group(1))], text)

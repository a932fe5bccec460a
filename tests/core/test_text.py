"""core/text.py: the fast path of normalise_text (no ftfy, no NFKC for text they leave unchanged) changes nothing."""
from __future__ import annotations

import random
import unicodedata

import ftfy
from conftest import ROOT

from pipeline.core.io import read_raw_table
from pipeline.core.text import unicode_settled


def _random_ascii(rng: random.Random, n: int) -> str:
    # Weighted towards the characters ftfy looks at: entities, escapes, controls, quotes, line breaks.
    pool = [chr(i) for i in range(128)] + list("&;#<>'\"`\r\n\t\x1b[") * 8 + ["&amp;", "&lt;", "&#39;", "\x1b[31m"] * 4
    return "".join(rng.choice(pool) for _ in range(n))


def test_text_the_fast_path_skips_is_text_ftfy_and_nfkc_leave_unchanged():
    rng = random.Random(0)
    texts = [_random_ascii(rng, rng.randint(0, 40)) for _ in range(20_000)]
    raw, _ = read_raw_table(str(ROOT / "data" / "raw" / "sms-spam.csv"))
    texts += raw["text"].astype(str).tolist()
    settled = [t for t in texts if unicode_settled(t)]
    assert len(settled) > 5000  # the test exercises the fast path, not only the slow one
    for t in settled:
        assert ftfy.fix_text(t) == t and unicodedata.normalize("NFKC", t) == t, repr(t)
    assert not unicode_settled("don\u00e2\u20ac\u2122t") and not unicode_settled("a &amp; b")

"""Words in, sub-word windows to the model, one prediction per word out, and entity spans with character offsets.

Label alignment, as the field does it (Hugging Face's run_ner.py, `label_all_tokens=False`): the first sub-word of
each word carries the word's tag and the other sub-words are ignored by the loss (-100). Labelling every sub-word
instead would weight long, rare words (names split into many pieces, which are the entities) by their piece count
and needs a B- to I- rewrite for the pieces after the first; the first-piece rule avoids both, and prediction reads
each word from its first piece, the same position it was trained on.

A sentence longer than the model's window is not cut: the fast tokenizer splits it into overlapping windows
(`return_overflowing_tokens` with `stride` sub-words shared between neighbours), every window is trained on, and at
prediction each word is read from the window where it has the most context on its poorer side, the rule Hugging
Face's question-answering post-processing uses for long documents. A word the tokenizer turns into no sub-word at
all (a lone zero-width or control character) cannot be read: it is predicted `O` and counted, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.metrics import softmax
from pipeline.core.tags import spans, to_bio

IGNORE = -100  # the label torch's cross-entropy skips


@dataclass
class Encoded:
    """Windows of sub-words. `features` holds what the model takes (input_ids, attention_mask, token_type_ids when
    the tokenizer has them), one list per window; `sentence[w]` is window w's sentence; `word_at[w][p]` is the word
    position p belongs to (-1 for special tokens); `starts[w][p]` is the word whose first sub-word sits at p (-1
    elsewhere); `labels` is None when no tags were given."""

    features: dict[str, list[list[int]]]
    sentence: list[int]
    word_at: list[list[int]]
    starts: list[list[int]]
    labels: list[list[int]] | None
    n_words: list[int]


def encode_words(words: list[list[str]], tokenizer: Any, max_length: int, stride: int,
                 tags: list[list[str]] | None = None, label_ids: dict[str, int] | None = None) -> Encoded:
    """Sentences of words (and their tags) -> overlapping sub-word windows of at most `max_length` positions."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if not 0 <= stride < room:
        raise ValueError(f"stride {stride} must be at least 0 and under the window's {room} sub-words")
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    sentence = list(enc["overflow_to_sample_mapping"])
    word_at, starts = [], []
    for w in range(len(sentence)):
        ids, offsets = [-1 if i is None else i for i in enc.word_ids(w)], enc["offset_mapping"][w]
        word_at.append(ids)
        # A word's first piece starts at its character 0; a window that opens mid-word starts on a later piece.
        starts.append([i if i >= 0 and offsets[p][0] == 0 and (p == 0 or ids[p - 1] != i) else -1
                       for p, i in enumerate(ids)])
    labels = None
    if tags is not None:
        if label_ids is None:
            raise ValueError("tags need label_ids")
        labels = [[label_ids[tags[sentence[w]][i]] if i >= 0 else IGNORE for i in row]
                  for w, row in enumerate(starts)]
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return Encoded({k: [list(x) for x in enc[k]] for k in keep}, sentence, word_at, starts, labels,
                   [len(s) for s in words])


def word_logits(window_logits: list[np.ndarray], enc: Encoded) -> tuple[list[np.ndarray], int]:
    """Per-window logits [positions, labels] -> per sentence [words, labels], each word from the window where it
    has the most context on its poorer side (ties: the earlier window). Rows of words no window holds are NaN;
    their count is returned beside."""
    n_labels = window_logits[0].shape[-1] if window_logits else 0
    out = [np.full((n, n_labels), np.nan, dtype=np.float32) for n in enc.n_words]
    best = [np.full(n, -1) for n in enc.n_words]
    for w, (logits, row) in enumerate(zip(window_logits, enc.starts)):
        s = enc.sentence[w]
        content = [p for p, i in enumerate(enc.word_at[w]) if i >= 0]
        for p, word in enumerate(row):
            if word < 0:
                continue
            context = min(p - content[0], content[-1] - p)
            if context > best[s][word]:
                best[s][word] = context
                out[s][word] = logits[p]
    missing = int(sum((b < 0).sum() for b in best))
    return out, missing


def predicted_tags(logits: np.ndarray, label_names: list[str]) -> tuple[list[str], np.ndarray]:
    """One sentence's word logits -> BIO tags as served (a stray I- begins an entity) and each word's probability
    of its tag; an unread word (NaN row) is O with probability 0."""
    unread = np.isnan(logits).any(axis=1)
    probs = softmax(np.where(unread[:, None], 0.0, logits))
    best = probs.argmax(axis=1)
    tags = ["O" if u else label_names[b] for u, b in zip(unread, best)]
    score = np.where(unread, 0.0, probs[np.arange(len(best)), best])
    return to_bio(tags, "bio"), score


def entity_spans(text: str, offsets: list[tuple[int, int]], tags: list[str], scores: np.ndarray) -> list[dict]:
    """Entities as character spans of `text`: start, end, type, the text they cover, and a score (the mean of its
    words' tag probabilities, as the transformers pipeline averages a group's scores)."""
    out = []
    for s in spans(tags):
        start, end = offsets[s.start][0], offsets[s.end - 1][1]
        out.append({"start": int(start), "end": int(end), "type": s.type, "text": text[start:end],
                    "score": round(float(np.mean(scores[s.start:s.end])), 6)})
    return out

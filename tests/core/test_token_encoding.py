"""Token classification's encoding (issue 33): first-sub-word labels, overlapping windows that read a long sentence
whole, each word read back from its best window, and spans with character offsets, with the real MiniLM tokenizer
on the real WNUT-16 tweets."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MINILM

from pipeline.core.entities import entity_counts, entity_f1
from pipeline.core.tags import spans
from pipeline.core.token_encoding import IGNORE, encode_words, entity_spans, predicted_tags, word_logits
from pipeline.core.token_io import read_tokens


@pytest.fixture(scope="module")
def tokenizer():
    from pipeline.core.modeling import load_tokenizer

    return load_tokenizer(MINILM, "model")


@pytest.fixture(scope="module")
def tweets(wnut16_file):
    return read_tokens(wnut16_file).frame.head(400)


def _label_ids(frame):
    names = sorted({t for tags in frame["tags"] for t in tags})
    return names, {n: i for i, n in enumerate(names)}


@pytest.mark.parametrize("max_length, stride", [(128, 16), (16, 4)])
def test_every_word_is_labelled_on_its_first_sub_word_and_no_word_is_cut(tokenizer, tweets, max_length, stride):
    names, ids = _label_ids(tweets)
    words, tags = tweets["tokens"].tolist(), tweets["tags"].tolist()
    enc = encode_words(words, tokenizer, max_length, stride, tags, ids)
    assert all(len(x) <= max_length for x in enc.features["input_ids"])
    labelled = [set() for _ in words]
    for w, (row, labels) in enumerate(zip(enc.starts, enc.labels)):
        s = enc.sentence[w]
        for p, (word, label) in enumerate(zip(row, labels)):
            assert (word >= 0) == (label != IGNORE)  # only first pieces carry a label
            if word >= 0:
                assert label == ids[tags[s][word]]
                piece = tokenizer.convert_ids_to_tokens(enc.features["input_ids"][w][p])
                assert not piece.startswith("##"), (words[s][word], piece)
                labelled[s].add(word)
    readable = [{i for row, s2 in zip(enc.word_at, enc.sentence) if s2 == s for i in row if i >= 0}
                for s in range(len(words))]
    assert labelled == readable  # every word the tokenizer can read is labelled in some window
    if max_length == 16:  # short windows: long tweets span several, none is cut
        assert len(enc.sentence) > len(words) and sum(map(len, readable)) == sum(map(len, words))


def test_each_word_is_read_from_its_window_with_most_context(tokenizer, tweets):
    words = tweets["tokens"].tolist()
    enc = encode_words(words, tokenizer, 16, 6)
    # Window logits that say which window and position they came from: the choice is then visible.
    logits = [np.stack([np.array([w, p, min(p - 1, len(row) - 2 - p)], np.float32) for p in range(len(row))])
              for w, row in enumerate(enc.starts)]
    per_word, missing = word_logits(logits, enc)
    assert missing == 0 and [len(x) for x in per_word] == [len(s) for s in words]
    for s, rows in enumerate(per_word):
        holders = [w for w, s2 in enumerate(enc.sentence) if s2 == s]
        for word, (w, p, context) in enumerate(rows):
            options = [(min(q - 1, len(enc.starts[v]) - 2 - q), -v) for v in holders
                       for q, i in enumerate(enc.starts[v]) if i == word]
            assert (context, -w) == max(options)  # the most context; ties go to the earlier window
            assert enc.starts[int(w)][int(p)] == word


def test_a_word_the_tokenizer_cannot_read_is_o_and_counted(tokenizer):
    words = [["Visit", "\u200b", "Paris"]]  # a zero-width space: no sub-word at all
    enc = encode_words(words, tokenizer, 32, 8)
    logits = [np.tile(np.array([0.0, 5.0, 0.0], np.float32), (len(enc.starts[0]), 1))]
    per_word, missing = word_logits(logits, enc)
    assert missing == 1 and np.isnan(per_word[0][1]).all()
    tags, scores = predicted_tags(per_word[0], ["B-geo-loc", "I-geo-loc", "O"])
    # the unread word splits what would have been one entity: it is O, scored 0, and each side begins its own
    assert tags == ["B-geo-loc", "O", "B-geo-loc"] and scores[1] == 0.0


def test_gold_logits_decode_to_the_gold_spans_at_the_right_characters(tokenizer, tweets):
    names, ids = _label_ids(tweets)
    words, gold = tweets["tokens"].tolist(), tweets["tags"].tolist()
    enc = encode_words(words, tokenizer, 24, 8)
    logits = [np.stack([np.eye(len(names), dtype=np.float32)[ids[gold[enc.sentence[w]][i]]] * 4 if i >= 0
                        else np.zeros(len(names), np.float32) for i in row]) for w, row in enumerate(enc.starts)]
    per_word, missing = word_logits(logits, enc)
    decoded = [predicted_tags(x, names) for x in per_word]
    assert missing == 0 and entity_f1(entity_counts(gold, [t for t, _ in decoded])) == 1.0
    for (tags, scores), row in zip(decoded, tweets.itertuples()):
        found = entity_spans(row.text, row.offsets, tags, scores)
        assert [(e["start"], e["end"]) for e in found] == [(row.offsets[s.start][0], row.offsets[s.end - 1][1])
                                                           for s in spans(row.tags)]
        assert all(e["text"] == row.text[e["start"]:e["end"]] and 0.5 < e["score"] <= 1 for e in found)


def test_stride_must_leave_room_in_the_window(tokenizer):
    with pytest.raises(ValueError, match="stride 14 must be at least 0 and under the window's 14 sub-words"):
        encode_words([["a"]], tokenizer, 16, 14)


def test_a_word_with_equal_context_in_two_windows_is_read_from_the_earlier():
    from pipeline.core.token_encoding import Encoded

    # two windows of one 3-word sentence: [CLS] w0 w1 w2 [SEP] twice; word 1 sits mid-window in both
    row = [-1, 0, 1, 2, -1]
    enc = Encoded({"input_ids": [[0] * 5, [0] * 5]}, [0, 0], [row, row], [row, row], None, [3])
    logits = [np.full((5, 2), 1.0, np.float32), np.full((5, 2), 2.0, np.float32)]
    per_word, missing = word_logits(logits, enc)
    assert missing == 0 and per_word[0][:, 0].tolist() == [1.0, 1.0, 1.0]

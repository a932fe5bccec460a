"""evaluate's "Why the models decide" for the token task: per-entity attributions over the test sentences.

The shipped model (the int8 ONNX student) is explained per entity it tags on the test sentences (occlusion,
pipeline/core/token_attribution.py), the teacher on the sentences where their entities differ. From those, read
with the sequence report's helpers (pipeline/core/explain_report.py):
- the words that most move each entity type, and how much of an entity's evidence lies in its own words rather
  than around them (a type recognised by its context, "said", "in", shows a low share);
- the student's spurious and mis-typed entities with their strongest words; missed entities are counted, not
  explained (nothing was predicted to explain);
- the shortcut check on context words only (an entity's own words zeroed): a type whose entities rest on one
  artefact-like word around them, or on one that in training sits (as an O word) almost only in sentences holding
  that type. The name itself is meaning, not a shortcut.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from pipeline.core.explain_report import (
    EXCLUSIVE_MIN_ROWS,
    EXCLUSIVE_SHARE,
    global_top,
    highlighted_html,
    short,
    shortcut_flags,
    top_line,
    top_words_rows,
    word_key,
)
from pipeline.core.explanation import Explanation
from pipeline.core.tags import spans
from pipeline.core.token_attribution import entity_types, explain_sentences
from pipeline.core.token_io import joined


def own_share(e: Explanation) -> float | None:
    """The share of the entity's positive evidence that lies in its own words (None: no word supports it)."""
    pos = [max(0.0, v) for v in e.scores]
    return sum(pos[e.at[0]:e.at[1]]) / sum(pos) if sum(pos) > 0 else None


def context_only(e: Explanation) -> Explanation:
    return replace(e, scores=tuple(0.0 if e.at[0] <= j < e.at[1] else v for j, v in enumerate(e.scores)))


def gold_type(e: Explanation, gold: list[Any]) -> str:
    """What the gold tags say at a predicted entity: the type of the gold entity it overlaps most, else O."""
    best = max(gold, key=lambda s: min(s.end, e.at[1]) - max(s.start, e.at[0]), default=None)
    return best.type if best is not None and min(best.end, e.at[1]) > max(best.start, e.at[0]) else "O"


def exclusive_context(train: Any) -> dict[str, tuple[str, float, int]]:
    """Context words (tagged O) whose training sentences almost all hold one entity type: key -> (type, share of the
    sentences holding the word that hold the type, sentences holding it). The token task's counterpart of
    explain_report.exclusive_words: a word that only ever appears beside a type is a cue the model can lean on."""
    rows: Counter = Counter()
    with_type: dict[str, Counter] = defaultdict(Counter)
    for words, tags in zip(train["tokens"], train["tags"]):
        keys = {word_key(w) for w, t in zip(words, tags) if t == "O"}
        held = {s.type for s in spans(list(tags))}
        for key in keys:
            rows[key] += 1
            for t in held:
                with_type[key][t] += 1
    out = {}
    for key, n in rows.items():
        if n >= EXCLUSIVE_MIN_ROWS and with_type[key]:
            t, m = with_type[key].most_common(1)[0]
            if m / n >= EXCLUSIVE_SHARE:
                out[key] = (t, m / n, n)
    return out


def entity_line(e: Explanation) -> str:
    return f"{e.target} \"{short(e.entity['text'], 40)}\" ({e.probability:.2f}): {top_line(e)}"


def explain_token_test(onnx: Any, teacher: Any, test: Any, train: Any, max_rows: int
                       ) -> tuple[list[str], list[dict], str]:
    """(REPORT.md lines, top_words rows, the HTML page) for the shipped student and the teacher on test sentences."""
    test = test.head(max_rows)
    sentences = [list(t) for t in test["tokens"]]
    texts, offsets = zip(*[joined(s) for s in sentences]) if sentences else ((), ())
    found = explain_sentences(onnx, list(texts), sentences, list(offsets))
    flat = [e for row in found for e in row]
    types = entity_types(onnx)
    gold = [spans(list(t)) for t in test["tags"]]
    wrong = [(e, gold_type(e, gold[i])) for i, row in enumerate(found) for e in row
             if not any((s.start, s.end, s.type) == (*e.at, e.target) for s in gold[i])]
    predicted = [{(*e.at, e.target) for e in row} for row in found]
    missed = sum(1 for i, g in enumerate(gold) for s in g if (s.start, s.end, s.type) not in predicted[i])
    t_tags, _ = teacher.tags(sentences)
    differ = [i for i, t in enumerate(t_tags) if {(s.start, s.end, s.type) for s in spans(t)} != predicted[i]]
    t_found = dict(zip(differ, explain_sentences(teacher, [texts[i] for i in differ], [sentences[i] for i in differ],
                                                 [offsets[i] for i in differ]))) if differ else {}
    tops = global_top(flat, types)
    flags = shortcut_flags([context_only(e) for e in flat], exclusive_context(train), types)
    lines = section(flat, wrong, missed, found, t_found, tops, flags, list(texts))
    page = highlighted_html({"Spurious or mis-typed entities of the shipped student": [e for e, _ in wrong][:50],
                             "Teacher where its entities differ from the student's": [e for r in t_found.values()
                                                                                     for e in r][:50],
                             "A sample of test entities": flat[:30]}, "Why the models decide")
    return lines, top_words_rows(tops), page


def section(flat: list[Explanation], wrong: list[tuple[Explanation, str]], missed: int, found: list[list],
            t_found: dict[int, list], tops: dict, flags: list, texts: list[str], max_rows: int = 10) -> list[str]:
    """REPORT.md's lines: words per type, own-word share, wrong entities, teacher/student differences, shortcuts."""
    lines = ["## Why the models decide", "",
             f"Per-entity attributions of `models/student-onnx` on {len(texts)} test sentences, {len(flat)} entities "
             "(occlusion: a word's score is the drop in the entity's probability when the word is masked; "
             "`finetune explain` gives them for any text; docs/explain.md).", "",
             "Words that most move each entity type (summed positive score over its entities, in how many; "
             "numbers, URLs, handles and markup counted by kind):", ""]
    lines += [f"- **{c}**: " + (", ".join(f"`{k}` {s:.2f} ({m})" for k, s, m in words) or "none")
              for c, words in tops.items()]
    lines += ["", "How much of an entity's evidence lies in its own words (mean share of its positive score; "
                  "low: recognised by its context):", ""]
    for c in tops:
        shares = [s for e in flat if e.target == c and (s := own_share(e)) is not None]
        if shares:
            lines.append(f"- {c}: {sum(shares) / len(shares):.0%} over {len(shares)} "
                         f"entit{'y' if len(shares) == 1 else 'ies'}")
    lines += ["", f"Spurious or mis-typed entities of the shipped student ({len(wrong)}; gold type in brackets; first "
                  f"{max_rows}), with their strongest words; {missed} gold entities it missed are not explained "
                  "(nothing was predicted to explain):", ""]
    lines += [f"- {entity_line(e)} [gold {g}] — \"{short(e.text)}\"" for e, g in wrong[:max_rows]] or ["- none."]
    lines += ["", f"Where the teacher's entities and the shipped student's differ ({len(t_found)} sentences; first "
                  f"{max_rows}):", ""]
    lines += [f"- teacher: {'; '.join(entity_line(e) for e in t) or 'no entity'}; student: "
              f"{'; '.join(entity_line(e) for e in found[i]) or 'no entity'} — \"{short(texts[i])}\""
              for i, t in list(t_found.items())[:max_rows]] or ["- none."]
    lines += ["", "Shortcut check (context words only: an entity type whose entities rest on one artefact-like or "
                  "type-exclusive word around them):", ""]
    lines += [f"- **flag: {f['class']}** rests on `{f['word']}`: the strongest context word of {f['share']:.0%} of "
              f"its {f['texts']} test entities ({f['why']}). Check that it is meaning, not a leak or an artefact of "
              "how the data was collected." for f in flags] or ["- no entity type rests on one such word."]
    return lines + [""]

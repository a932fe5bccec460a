"""evaluate's "Why the models decide": attributions over the test rows, read for a person and checked for shortcuts.

The shipped model (the int8 ONNX student) is explained on every test row with the default method (`auto`, see
pipeline/core/attribution.py); the teacher with the same method on the rows where the two disagree, so what each
relied on can be set side by side. From those:
- the words that most move each class: the sum of their positive scores over the test rows predicted as the class
  (a word counted once per text, lower-cased, outer punctuation stripped);
- the test errors with their strongest words;
- the shortcut check: a class whose decisions rest on one word — the strongest word of at least `SHORTCUT_SHARE`
  of the texts predicted as it — where that word looks like an artefact (a URL, a user handle, markup, a number)
  or occurs almost only in that class of the training rows (>= `EXCLUSIVE_SHARE` of the training rows holding it,
  and at least `EXCLUSIVE_MIN_ROWS` of them). A real signal can look like that too (spam's phone numbers): the flag
  asks a person to look, it does not judge (docs/explain.md reads the bundled data's findings).
"""
from __future__ import annotations

import html
import math
import re
from collections import Counter, defaultdict
from typing import Any, Callable

from pipeline.core.explanation import Explanation

SHORTCUT_SHARE = 0.5
EXCLUSIVE_SHARE = 0.95
EXCLUSIVE_MIN_ROWS = 20
ARTEFACTS = (("URL", re.compile(r"^(?:https?:|www\.)|\.(?:com|net|org|co\.uk)\b")),
             ("user handle", re.compile(r"^@\w")), ("markup", re.compile(r"^<[^>]*>|&[a-z]+;|^\[.*\]$")),
             ("number", re.compile(r"\d")))


def word_key(word: str) -> str:
    """A word as counted across texts: lower-cased, outer punctuation stripped (kept when it is all there is)."""
    w = word.lower()
    return re.sub(r"^[^\w@<&]+|[^\w>;]+$", "", w) or w


def artefact(key: str) -> str | None:
    return next((name for name, rx in ARTEFACTS if rx.search(key)), None)


def group_key(key: str) -> str:
    """Artefacts counted by kind (`<number>`: every phone number, price or code together), other words as they are:
    a class that rests on numbers rests on no single one of them."""
    kind = artefact(key)
    return f"<{kind}>" if kind else key


def exclusive_words(texts: list[str], labels: list[str]) -> dict[str, tuple[str, float, int]]:
    """Words whose training rows are almost all of one class: key -> (class, share, rows holding it)."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for text, label in zip(texts, labels):
        for key in {word_key(w) for w in text.split()}:
            rows[key][label] += 1
    out = {}
    for key, by_class in rows.items():
        total = sum(by_class.values())
        label, n = by_class.most_common(1)[0]
        if total >= EXCLUSIVE_MIN_ROWS and n / total >= EXCLUSIVE_SHARE:
            out[key] = (label, n / total, total)
    return out


def global_top(found: list[Explanation], label_names: list[str], k: int = 10) -> dict[str, list[tuple]]:
    """Per class: the `k` words (artefacts by kind) with the largest summed positive score over the texts predicted
    as it, among those in at least 1% of them (and 2): one text's word is an anecdote, not what moves a class."""
    total: dict[str, Counter] = {c: Counter() for c in label_names}
    texts: dict[str, Counter] = {c: Counter() for c in label_names}
    for e in found:
        best: dict[str, float] = {}
        for w, v in zip(e.words, e.scores):
            if v > 0:
                best[group_key(word_key(w))] = max(best.get(group_key(word_key(w)), 0.0), v)
        for key, v in best.items():
            total[e.target][key] += v
            texts[e.target][key] += 1
    out = {}
    for c in label_names:
        least = max(2, math.ceil(0.01 * sum(1 for e in found if e.target == c)))
        out[c] = [(key, s, texts[c][key]) for key, s in total[c].most_common() if texts[c][key] >= least][:k]
    return out


def shortcut_flags(found: list[Explanation], exclusive: dict, label_names: list[str]) -> list[dict]:
    """Classes whose decisions rest on one artefact-like or class-exclusive word (see the module's docstring)."""
    flags = []
    for c in label_names:
        tops = [group_key(word_key(e.words[e.ranking()[0]])) for e in found
                if e.target == c and e.words and max(e.scores) > 0]
        if not tops:
            continue
        key, n = Counter(tops).most_common(1)[0]
        kind = key[1:-1] if key.startswith("<") and key.endswith(">") and key[1:-1] in dict(ARTEFACTS) else None
        excl = exclusive.get(key)
        if n / len(tops) >= SHORTCUT_SHARE and (kind or (excl and excl[0] == c)):
            why = f"{kind}s, counted together, look like an artefact" if kind else \
                f"{excl[1]:.0%} of the {excl[2]} training rows holding it are {c}"
            flags.append({"class": c, "word": key, "share": n / len(tops), "texts": len(tops), "why": why})
    return flags


def top_line(e: Explanation, k: int = 3) -> str:
    return ", ".join(f"`{w}` ({v:+.2f})" for w, v in e.top(k)) or "no word supports it"


def short(text: str, n: int = 90) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[:n - 1] + "…"


def section(found: list[Explanation], truth: list[str], teacher: dict[int, Explanation], tops: dict, flags: list,
            model: str, method: str, max_rows: int = 10) -> list[str]:
    """REPORT.md's lines: global words per class, errors, teacher/student disagreements, the shortcut check."""
    lines = ["## Why the models decide", "",
             f"Word attributions of `{model}` on {len(found)} test rows ({method}; `finetune explain` gives them for "
             "any text; how faithful each method is: docs/explain.md).", "",
             "Words that most move each class (summed positive score over the texts predicted as it, in how many; "
             "numbers, URLs, handles and markup counted by kind):", ""]
    for c, words in tops.items():
        lines.append(f"- **{c}**: " + (", ".join(f"`{k}` {s:.2f} ({n})" for k, s, n in words) or "none"))
    errors = [(i, e) for i, e in enumerate(found) if e.label != truth[i]]
    lines += ["", f"Test errors ({len(errors)}), with the words that drove the wrong class (first {max_rows}):", ""]
    lines += [f"- true {truth[i]}, predicted {e.label} ({e.probability:.2f}): {top_line(e)} — \"{short(e.text)}\""
              for i, e in errors[:max_rows]] or ["- none."]
    lines += ["", f"Where the teacher and the shipped student disagree ({len(teacher)} rows; first {max_rows}):", ""]
    lines += [f"- true {truth[i]}; teacher {t.label}: {top_line(t)}; student {found[i].label}: {top_line(found[i])} "
              f"— \"{short(t.text)}\"" for i, t in list(teacher.items())[:max_rows]] or ["- none."]
    lines += ["", "Shortcut check (a class whose decisions rest on one artefact-like or class-exclusive word):", ""]
    lines += [f"- **flag: {f['class']}** rests on `{f['word']}`: the strongest word of {f['share']:.0%} of the "
              f"{f['texts']} test texts predicted {f['class']} ({f['why']}). Check that it is meaning, not a "
              "leak or an artefact of how the data was collected." for f in flags] or \
             ["- no class rests on one such word."]
    return lines + [""]


def top_words_rows(tops: dict) -> list[dict]:
    """metrics/eval/top_words.csv: one row per class and word, for `dvc plots` (a horizontal bar chart)."""
    return [{"class": c, "word": k, "score": round(s, 6), "texts": n} for c, words in tops.items()
            for k, s, n in words]


def highlighted_html(groups: dict[str, list[Explanation]], title: str) -> str:
    """A self-contained page of texts with each word shaded by its score (green: for the class, red: against)."""
    def words(e: Explanation) -> str:
        peak = max((abs(v) for v in e.scores), default=0.0) or 1.0
        out = []
        for w, v in zip(e.words, e.scores):
            a = min(1.0, abs(v) / peak) * 0.8
            rgb = "40,160,70" if v > 0 else "220,50,50"
            out.append(f'<span title="{v:+.4f}" style="background:rgba({rgb},{a:.2f})">{html.escape(w)}</span>')
        return " ".join(out)

    def what(e: Explanation) -> str:
        return f"&laquo;{html.escape(e.entity['text'])}&raquo; ({e.probability:.2f})" if e.entity is not None \
            else f"({e.probability:.2f}; predicted {html.escape(e.label)})"

    body = []
    for name, found in groups.items():
        body.append(f"<h2>{html.escape(name)}</h2>")
        body += [f"<p><b>{html.escape(e.target)}</b> {what(e)}: {words(e)}</p>" for e in found]
    return ("<!doctype html><meta charset=utf-8><title>" + html.escape(title) + "</title><style>body{font:15px/1.7 "
            "sans-serif;max-width:60em;margin:2em auto}span{padding:1px 2px;border-radius:3px}</style><h1>"
            + html.escape(title) + "</h1><p>Green: evidence for the class (or the entity) named in bold; red: "
            "against it. Hover a word for its score.</p>" + "\n".join(body) + "\n")


def explain_test(onnx: Any, teacher: Any, texts: list[str], truth: list[str], train_texts: list[str],
                 train_labels: list[str], max_rows: int) -> tuple[list[str], list[dict], str]:
    """(REPORT.md lines, top_words rows, the HTML page) for the shipped student and the teacher on the test rows."""
    from pipeline.core.attribution import explain, resolve_method

    texts, truth = texts[:max_rows], truth[:max_rows]
    method = resolve_method(onnx, "auto")
    found = explain(onnx, texts, method)
    t_pred = teacher.proba(teacher.read(teacher.normalise(texts)[0])).argmax(1)
    differ = [i for i, e in enumerate(found) if teacher.label_names[t_pred[i]] != e.label]
    t_found = dict(zip(differ, explain(teacher, [texts[i] for i in differ], method))) if differ else {}
    tops = global_top(found, onnx.label_names)
    flags = shortcut_flags(found, exclusive_words(train_texts, train_labels), onnx.label_names)
    lines = section(found, truth, t_found, tops, flags, "models/student-onnx", method)
    errors = [e for i, e in enumerate(found) if e.label != truth[i]]
    page = highlighted_html({"Test errors of the shipped student": errors[:50],
                             "Teacher where it disagrees with the student": list(t_found.values())[:50],
                             "Student on the same rows": [found[i] for i in differ[:50]],
                             "A sample of test rows": found[:30]}, "Why the models decide")
    return lines, top_words_rows(tops), page


def write_explanations(args: Any, params: Any, build: Callable[[int], tuple[list[str], list[dict], str]],
                       off_reason: str | None = None) -> list[str]:
    """evaluate's attribution outputs (`--top_words`, `--explanations`) and REPORT.md's lines, from `build(rows)`
    (the task's: explain_test here, token_explain_report.explain_token_test). With evaluate.explain_rows 0, or
    `off_reason`, the files say why and hold no figures."""
    import pandas as pd

    from pipeline.core.io import write_csv, write_text

    rows = params.evaluate.explain_rows
    reason = off_reason or ("evaluate.explain_rows is 0" if rows == 0 else None)
    if reason is not None:
        write_csv(pd.DataFrame(columns=["class", "word", "score", "texts"]), args.top_words)
        write_text(f"<!doctype html><meta charset=utf-8><title>Why the models decide</title><p>Not computed: "
                   f"{html.escape(reason)}.</p>\n", args.explanations)
        return ["## Why the models decide", "", f"Not computed: {reason}.", ""]
    lines, words, page = build(rows)
    write_csv(pd.DataFrame(words, columns=["class", "word", "score", "texts"]), args.top_words)
    write_text(page, args.explanations)
    return lines

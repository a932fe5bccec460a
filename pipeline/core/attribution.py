"""Why a model decided: a score per word of a text for one class, for any packaged model.

A *word* is a run of non-space characters of the text as the model reads it (normalised as clean normalised the
training rows, a long text cut as the model cuts it): what a person reads, and what removal-based faithfulness
(pipeline/core/faithfulness.py) deletes. Sub-word scores are summed into their word. A positive score is evidence
for the class, a negative one against it. Methods, and what each needs of the model:

- `occlusion` (any model: int8 ONNX, baseline, torch): a word's score is p(class | text) - p(class | text without
  the word). Only probabilities are needed, so it explains the model that ships, which has no gradients; it costs
  one forward pass per word, batched.
- `integrated_gradients` (torch): Captum's LayerIntegratedGradients on the word-embedding layer (Sundararajan et al.
  2017), from a reference that keeps [CLS]/[SEP] and puts [PAD] everywhere else, `steps` points on the path.
- `gradient_x_input` (torch): Captum's LayerGradientXActivation on the same layer: one forward and backward pass.
- `attention` (torch): the last layer's attention from [CLS] to each token, averaged over heads. Offered because
  people ask for attention maps; bench/results/FAITHFULNESS.md measures how little it says about the decision.
- `coefficients` (the TF-IDF baseline with word n-grams): each n-gram's tf-idf value times its coefficient for the
  class, shared equally among its words, so the scores sum to the decision function less its intercept.
- `random`: a seeded random score per word, the floor faithfulness is measured against.

The gradient methods differentiate the class's log-probability, not its probability: a confident model's softmax
is flat (p = 0.999 has almost no gradient), and the log keeps the other classes in view.

A token model (one that tags words) is explained per entity it tags, by pipeline/core/token_attribution.py;
`explain_each` and `available` answer for both kinds, read from what the model can do, not from its task's name.
"""
from __future__ import annotations

import bisect
import re
from typing import Any, Callable

import numpy as np

from pipeline.core.explanation import AttributionError, Explanation, torch_parts
from pipeline.core.progress import logged

WORD = re.compile(r"\S+")
GRADIENT_METHODS = ("integrated_gradients", "gradient_x_input", "attention")
METHODS = ("occlusion", *GRADIENT_METHODS, "coefficients", "random")
# What `auto` picks: the first the model can run. Chosen by bench/faithfulness.py (FAITHFULNESS.md), paired per text:
# the baseline's exact coefficients; else occlusion, which beats integrated gradients' comprehensiveness with a CI
# excluding 0 on two datasets of three (election tweets, kept aside; health tweets with URLs masked) and loses on
# one (SMS, by less), and costs 3-5 times less on short texts. Integrated gradients stay a --method away.
DEFAULT_ORDER = ("coefficients", "occlusion")


def words_of(text: str) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    found = [(m.group(), (m.start(), m.end())) for m in WORD.finditer(text)]
    return tuple(w for w, _ in found), tuple(s for _, s in found)


def without(words: tuple[str, ...], drop: set[int]) -> str:
    """The text with the words at `drop` removed (the rest joined by single spaces, as clean leaves a text)."""
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def linear_parts(model: Any) -> tuple[Any, Any] | None:
    """(TfidfVectorizer, LogisticRegression) of a word n-gram baseline; None otherwise."""
    steps = getattr(getattr(model, "baseline", None), "named_steps", {})
    vec, clf = steps.get("tfidf"), steps.get("clf")
    return (vec, clf) if vec is not None and clf is not None and vec.analyzer == "word" else None


def per_entity(model: Any) -> bool:
    """Whether `model` tags words (its explanations are per entity: token_attribution.py) rather than texts."""
    return hasattr(model, "word_logits")


def available(model: Any) -> tuple[str, ...]:
    """The methods `model` can run."""
    if per_entity(model):
        from pipeline.core.token_attribution import methods_of

        return methods_of(model)
    if not hasattr(model, "proba"):
        return ()
    return tuple(m for m in METHODS if (m not in GRADIENT_METHODS or torch_parts(model) is not None)
                 and (m != "coefficients" or linear_parts(model) is not None))


def resolve_method(model: Any, method: str) -> str:
    can = available(model)
    if not can:
        raise AttributionError(f"{model.folder}: a {model.kind} model cannot be explained")
    if method == "auto":
        order = DEFAULT_ORDER
        if per_entity(model):
            from pipeline.core.token_attribution import DEFAULT_ORDER as order  # noqa: N811
        return next(m for m in (*order, *can) if m in can)
    if method not in can:
        raise AttributionError(f"{model.folder}: method {method!r} is not available for a {model.kind} model "
                               f"(available: {', '.join(can)}; auto picks {resolve_method(model, 'auto')})")
    return method


def explain(model: Any, texts: list[str], method: str = "auto", target: str | None = None, steps: int = 20,
            batch_size: int = 32, seed: int = 0) -> list[Explanation]:
    """Attributions of `texts` (raw: normalised and cut here as the model reads them) for `target` (a class name;
    None: each text's predicted class). A text that cannot be scored (empty after normalising) is an error: the
    caller filters with `model.normalise` first when it serves untrusted input."""
    method = resolve_method(model, method)
    norm, status = model.normalise(texts)
    bad = [i for i, s in enumerate(status) if s != "ok"]
    if bad:
        raise AttributionError(f"text {bad[0]}: {status[bad[0]]} (nothing to explain)")
    if target is not None and target not in model.label_names:
        raise AttributionError(f"unknown class {target!r}; the model's classes: {', '.join(model.label_names)}")
    read = model.read(norm)
    prob = model.proba(read, batch_size)
    pred = prob.argmax(1)
    idx = pred if target is None else np.full(len(read), model.label_names.index(target))
    parsed = [words_of(t) for t in read]
    scores = SCORERS[method](model, read, [w for w, _ in parsed], [sp for _, sp in parsed], idx,
                             {"steps": steps, "batch_size": batch_size, "seed": seed, "proba": prob})
    return [Explanation(read[i], parsed[i][0], parsed[i][1], tuple(float(v) for v in scores[i]),
                        model.label_names[idx[i]], model.label_names[pred[i]], float(prob[i, idx[i]]), method)
            for i in range(len(read))]


def read_words(model: Any, texts: list[Any]) -> tuple[list[int], list[str]]:
    """Per text, how many words the model reads in it and its status (`ok`, or why there is nothing to explain)."""
    norm, status = model.normalise(texts)  # a token model's: its words joined by one space
    return [len(words_of(t)[0]) if s == "ok" else 0 for t, s in zip(norm, status)], list(status)


def explain_each(model: Any, texts: list[str], method: str = "auto", target: str | None = None,
                 batch_size: int = 32, seed: int = 0) -> list[list[Explanation]]:
    """Per text, its explanations: the one of its class for a text classifier, one per entity (of type `target`
    when given) for a token model."""
    if per_entity(model):
        from pipeline.core.token_attribution import explain_entities

        return explain_entities(model, texts, resolve_method(model, method), target, batch_size, seed)
    return [[e] for e in explain(model, texts, method, target, batch_size=batch_size, seed=seed)]


# ------------------------------------------------------------------------------------------------- the methods
Scorer = Callable[[Any, list[str], list[tuple], list[tuple], np.ndarray, dict], list[np.ndarray]]


def occlusion(model: Any, texts: list[str], words: list[tuple], spans: list[tuple], idx: np.ndarray,
              opt: dict) -> list[np.ndarray]:
    variants = [without(ws, {j}) for ws in words for j in range(len(ws))]
    owner = np.repeat(np.arange(len(texts)), [len(ws) for ws in words])
    probs = np.concatenate([model.proba(variants[i:i + 512], opt["batch_size"])[:, :]
                            for i in logged(range(0, len(variants), 512), "occlusion", unit="batches")]) \
        if variants else np.zeros((0, len(model.label_names)))
    drop = opt["proba"][owner, idx[owner]] - probs[np.arange(len(variants)), idx[owner]]
    return np.split(drop, np.cumsum([len(ws) for ws in words])[:-1]) if len(texts) else []


def random_scores(model: Any, texts: list[str], words: list[tuple], spans: list[tuple], idx: np.ndarray,
                  opt: dict) -> list[np.ndarray]:
    rng = np.random.default_rng(opt["seed"])
    return [rng.standard_normal(len(ws)) for ws in words]


def to_words(offsets: Any, special: Any, token_scores: Any, spans: tuple) -> np.ndarray:
    """Sub-word scores summed into the word whose characters each sub-word starts in (special tokens skipped)."""
    starts = [s for s, _ in spans]
    out = np.zeros(len(spans))
    for (s, e), sp, v in zip(offsets, special, token_scores):
        if not sp and e > s:
            out[bisect.bisect_right(starts, s) - 1] += float(v)
    return out


def gradients(model: Any, texts: list[str], words: list[tuple], spans: list[tuple], idx: np.ndarray,
              opt: dict, method: str) -> list[np.ndarray]:
    import torch
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    net, tok = torch_parts(model)
    net.eval()
    device = next(net.parameters()).device

    def forward(ids: Any, mask: Any) -> Any:
        return torch.log_softmax(net(input_ids=ids, attention_mask=mask).logits, -1)

    layer = net.get_input_embeddings()
    algo = LayerIntegratedGradients(forward, layer) if method == "integrated_gradients" \
        else LayerGradientXActivation(forward, layer)
    out: list[np.ndarray] = []
    bs = max(1, opt["batch_size"] // 4) if method == "integrated_gradients" else opt["batch_size"]
    for i in logged(range(0, len(texts), bs), method.replace("_", " "), unit="batches"):
        enc = tok(texts[i:i + bs], padding=True, truncation=True, max_length=getattr(model, "max_length", 512),
                  return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        target = torch.as_tensor(idx[i:i + bs], device=device)
        if method == "integrated_gradients":
            ref = torch.where(enc["special_tokens_mask"].bool().to(device), ids, tok.pad_token_id or 0)
            attr = algo.attribute(ids, baselines=ref, target=target, additional_forward_args=(mask,),
                                  n_steps=opt["steps"], internal_batch_size=bs * opt["steps"])
        else:
            attr = algo.attribute(ids, target=target, additional_forward_args=(mask,))
        per_token = attr.sum(-1).detach().cpu().numpy()
        for j in range(len(ids)):
            out.append(to_words(enc["offset_mapping"][j].tolist(), enc["special_tokens_mask"][j].tolist(),
                                per_token[j], spans[i + j]))
    return out


def attention(model: Any, texts: list[str], words: list[tuple], spans: list[tuple], idx: np.ndarray,
              opt: dict) -> list[np.ndarray]:
    import torch

    net, tok = torch_parts(model)
    before = net.config._attn_implementation
    net.set_attn_implementation("eager")  # sdpa kernels compute no attention matrix to return
    out: list[np.ndarray] = []
    try:
        for i in range(0, len(texts), opt["batch_size"]):
            enc = tok(texts[i:i + opt["batch_size"]], padding=True, truncation=True,
                      max_length=getattr(model, "max_length", 512), return_offsets_mapping=True,
                      return_special_tokens_mask=True, return_tensors="pt")
            with torch.inference_mode():
                att = net(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                          output_attentions=True).attentions[-1]
            cls = att[:, :, 0, :].mean(1).cpu().numpy()
            for j in range(len(cls)):
                out.append(to_words(enc["offset_mapping"][j].tolist(), enc["special_tokens_mask"][j].tolist(),
                                    cls[j], spans[i + j]))
    finally:
        net.set_attn_implementation(before)
    return out


def coefficients(model: Any, texts: list[str], words: list[tuple], spans: list[tuple], idx: np.ndarray,
                 opt: dict) -> list[np.ndarray]:
    vec, clf = linear_parts(model)
    pre, tokenize, vocab = vec.build_preprocessor(), vec.build_tokenizer(), vec.vocabulary_
    classes = [str(c) for c in clf.classes_]
    x = vec.transform(texts).tocsr()
    out = []
    for i, ws in enumerate(words):
        name = model.label_names[idx[i]]
        k = classes.index(name) if name in classes else int(idx[i])
        # binary logistic regression keeps one row, for classes_[1]; the other class's evidence is its negation
        coef = clf.coef_[k] if clf.coef_.shape[0] > 1 else clf.coef_[0] * (1 if k == 1 else -1)
        seq = [(t, j) for j, w in enumerate(ws) for t in tokenize(pre(w))]
        grams = [(" ".join(t for t, _ in seq[a:a + n]), [j for _, j in seq[a:a + n]])
                 for n in range(vec.ngram_range[0], vec.ngram_range[1] + 1) for a in range(len(seq) - n + 1)]
        counts: dict[str, int] = {}
        for g, _ in grams:
            counts[g] = counts.get(g, 0) + 1
        row = dict(zip(x[i].indices, x[i].data))
        scores = np.zeros(len(ws))
        for g, owners in grams:
            f = vocab.get(g)
            if f is not None and f in row:
                share = row[f] * coef[f] / counts[g] / len(owners)
                for j in owners:
                    scores[j] += share
        out.append(scores)
    return out


SCORERS: dict[str, Scorer] = {
    "occlusion": occlusion, "random": random_scores, "attention": attention, "coefficients": coefficients,
    "integrated_gradients": lambda *a: gradients(*a, method="integrated_gradients"),
    "gradient_x_input": lambda *a: gradients(*a, method="gradient_x_input"),
}

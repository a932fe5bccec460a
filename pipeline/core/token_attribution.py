"""Why a token model found an entity: a score per word of the text for each entity it tagged.

The words are the ones the model reads (token_scoring.WordTagger.words: the training pre-tokeniser, each word
normalised as clean normalised it), with offsets into the raw text. An entity's probability is the mean, over its
words, of the probability of the tag each got (B-X, then I-X): the `score` its span carries when served. Methods:

- `occlusion` (every token model: torch, the int8 ONNX student with no gradients, the CRF through its marginals):
  a word's score is p(entity) - p(entity with that word replaced by the model's mask word). The word is replaced,
  not removed: removing it would shift every tag after it, and an entity's tags are read by position. One variant
  sentence per word serves every entity of the text, so a text costs one forward pass per word, batched.
- `random`: a seeded random score per word, the floor faithfulness is measured against.

The entity's own words are scored too: a name that is a person because of itself shows up, as does one that is a
person because of "said" two words on. Faithfulness (faithfulness.entity_removal_scores, bench/token_faithfulness.py)
masks an entity's top-k% words, or all but them, and measures the drop in its probability, as ERASER does for a
class.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.explanation import AttributionError, Explanation, torch_parts
from pipeline.core.metrics import label_index, softmax
from pipeline.core.progress import logged
from pipeline.core.tags import spans

METHODS = ("occlusion", "integrated_gradients", "random")
GRADIENT_METHODS = ("integrated_gradients",)
DEFAULT_ORDER = ("occlusion",)  # what `auto` picks (bench/results/TOKEN_FAITHFULNESS.md)
MASK = "[MASK]"  # the mask word of a model whose tokenizer has none (the CRF: an unseen word, shaped as none)


def methods_of(model: Any) -> tuple[str, ...]:
    """The methods a token model can run: integrated gradients needs a torch model's gradients."""
    return tuple(m for m in METHODS if m not in GRADIENT_METHODS or torch_parts(model) is not None)


def entity_types(model: Any) -> list[str]:
    return sorted({t[2:] for t in model.label_names if t[:2] in ("B-", "I-")})


def mask_word(model: Any) -> str:
    """What stands in for an occluded word: the encoder's [MASK] (the gap its pre-training taught it to read),
    else its unknown token, else MASK."""
    tok = getattr(model, "tokenizer", None)
    return getattr(tok, "mask_token", None) or getattr(tok, "unk_token", None) or MASK


def word_probs(model: Any, sentences: list[list[str]], batch_size: int) -> list[np.ndarray]:
    """Per sentence, [words, tags] probabilities (a word no window read: all 0)."""
    out = []
    for x in model.word_logits(sentences, batch_size):
        unread = np.isnan(x).any(axis=1) if len(x) else np.zeros(0, bool)
        p = softmax(np.where(unread[:, None], 0.0, x)) if len(x) else np.zeros((0, len(model.label_names)))
        out.append(np.where(unread[:, None], 0.0, p))
    return out


def entity_probability(probs: np.ndarray, at: tuple[int, int], tag_ids: tuple[int, ...]) -> float:
    return float(np.mean(probs[np.arange(at[0], at[1]), list(tag_ids)]))


def explain_entities(model: Any, texts: list[str], method: str = "occlusion", target: str | None = None,
                     batch_size: int = 32, seed: int = 0, steps: int = 20) -> list[list[Explanation]]:
    """Per raw text, one Explanation per entity the model tags (of type `target` only, when given), in text order:
    `target` the entity's type, `probability` its probability, `entity` its span (start, end, type, text)."""
    read = [model.words(t) for t in texts]
    empty = [i for i, (ws, _) in enumerate(read) if not ws]
    if empty:
        raise AttributionError(f"text {empty[0]}: empty_text (nothing to explain)")
    return explain_sentences(model, texts, [ws for ws, _ in read], [o for _, o in read], method, target,
                             batch_size, seed, steps)


def explain_sentences(model: Any, texts: list[str], sentences: list[list[str]], offsets: list[list[tuple[int, int]]],
                      method: str = "occlusion", target: str | None = None, batch_size: int = 32, seed: int = 0,
                      steps: int = 20) -> list[list[Explanation]]:
    """explain_entities on sentences already cut into the words the model reads (evaluate's test sentences), with
    each word's offsets in its text."""
    if method not in methods_of(model):
        raise AttributionError(f"{model.folder}: method {method!r} is not available for this {model.kind} token "
                               f"model (available: {', '.join(methods_of(model))})")
    types = entity_types(model)
    if target is not None and target not in types:
        raise AttributionError(f"unknown entity type {target!r}; the model's types: {', '.join(types)}")
    tags, _ = model.tags(sentences, batch_size)
    full = word_probs(model, sentences, batch_size)
    index = label_index(model.label_names)
    found = [[s for s in spans(t) if target is None or s.type == target] for t in tags]
    scores = SCORERS[method](model, sentences, tags, found, full, {"batch_size": batch_size, "seed": seed,
                                                                   "steps": steps})
    out = []
    for i, text in enumerate(texts):
        row = []
        for s, sc in zip(found[i], scores[i]):
            ids = tuple(index[g] for g in tags[i][s.start:s.end])
            start, end = offsets[i][s.start][0], offsets[i][s.end - 1][1]
            row.append(Explanation(text, tuple(sentences[i]), tuple(offsets[i]), tuple(float(v) for v in sc),
                                   s.type, s.type, entity_probability(full[i], (s.start, s.end), ids), method,
                                   {"start": int(start), "end": int(end), "type": s.type, "text": text[start:end]},
                                   (s.start, s.end), ids))
        out.append(row)
    return out


def occlusion(model: Any, sentences: list[list[str]], tags: list[list[str]], found: list[list[Any]],
              full: list[np.ndarray], opt: dict) -> list[list[np.ndarray]]:
    """Each entity's drop in probability with each word masked in turn (texts without an entity cost nothing)."""
    mask, index = mask_word(model), label_index(model.label_names)
    todo = [i for i in range(len(sentences)) if found[i]]
    variants = [[*sentences[i][:j], mask, *sentences[i][j + 1:]] for i in todo for j in range(len(sentences[i]))]
    probs: list[np.ndarray] = []
    for a in logged(range(0, len(variants), 512), "occlusion", unit="batches"):
        probs += word_probs(model, variants[a:a + 512], opt["batch_size"])
    out: list[list[np.ndarray]] = [[] for _ in sentences]
    at = 0
    for i in todo:
        n = len(sentences[i])
        for s in found[i]:
            ids = tuple(index[g] for g in tags[i][s.start:s.end])
            base = entity_probability(full[i], (s.start, s.end), ids)
            out[i].append(np.array([base - entity_probability(probs[at + j], (s.start, s.end), ids)
                                    for j in range(n)]))
        at += n
    return out


def random_scores(model: Any, sentences: list[list[str]], tags: list[list[str]], found: list[list[Any]],
                  full: list[np.ndarray], opt: dict) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(opt["seed"])
    return [[rng.standard_normal(len(sentences[i])) for _ in found[i]] for i in range(len(sentences))]


def integrated_gradients(model: Any, sentences: list[list[str]], tags: list[list[str]], found: list[list[Any]],
                         full: list[np.ndarray], opt: dict) -> list[list[np.ndarray]]:
    """Captum's LayerIntegratedGradients on the word embeddings, one path per entity, of the mean log-probability of
    the entity's tags at its words' first sub-words (the positions the model is trained and read at), from a
    reference of [PAD] between the special tokens. A word's score sums its sub-words'. A sentence must fit one
    window: the windows of a longer one see different contexts, and occlusion explains it instead."""
    import torch
    from captum.attr import LayerIntegratedGradients

    net, tok = torch_parts(model)
    net.eval()
    device = next(net.parameters()).device
    index = label_index(model.label_names)

    def forward(ids: Any, mask: Any, pos: Any, tag: Any, valid: Any) -> Any:
        logp = torch.log_softmax(net(input_ids=ids, attention_mask=mask).logits, -1)
        at = logp.gather(1, pos.unsqueeze(-1).expand(-1, -1, logp.shape[-1])).gather(2, tag.unsqueeze(-1))
        return (at.squeeze(-1) * valid).sum(1) / valid.sum(1)

    algo = LayerIntegratedGradients(forward, net.get_input_embeddings())
    items = [(i, s) for i in range(len(sentences)) for s in found[i]]
    out: list[list[np.ndarray]] = [[] for _ in sentences]
    bs = max(1, opt["batch_size"] // 4)
    for a in logged(range(0, len(items), bs), "integrated gradients", unit="batches"):
        batch = items[a:a + bs]
        enc = tok([sentences[i] for i, _ in batch], is_split_into_words=True, padding=True, truncation=False,
                  return_special_tokens_mask=True, return_tensors="pt")
        if enc["input_ids"].shape[1] > model.max_length:
            raise AttributionError(f"a sentence of {enc['input_ids'].shape[1]} sub-words is longer than the "
                                   f"model's window of {model.max_length}: explain it with occlusion")
        width = max(s.end - s.start for _, s in batch)
        pos, tag, valid = (torch.zeros(len(batch), width, dtype=torch.long) for _ in range(3))
        for r, (i, s) in enumerate(batch):
            first = {}
            for p, w in enumerate(enc.word_ids(r)):
                if w is not None:
                    first.setdefault(w, p)
            for k, w in enumerate(range(s.start, s.end)):
                pos[r, k], tag[r, k], valid[r, k] = first[w], index[tags[i][w]], 1
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        ref = torch.where(enc["special_tokens_mask"].bool().to(device), ids, tok.pad_token_id or 0)
        attr = algo.attribute(ids, baselines=ref, additional_forward_args=(mask, pos.to(device), tag.to(device),
                                                                           valid.to(device).float()),
                              n_steps=opt["steps"], internal_batch_size=bs * opt["steps"])
        per_token = attr.sum(-1).detach().cpu().numpy()
        for r, (i, _) in enumerate(batch):
            scores = np.zeros(len(sentences[i]))
            for p, w in enumerate(enc.word_ids(r)):
                if w is not None:
                    scores[w] += float(per_token[r, p])
            out[i].append(scores)
    return out


SCORERS = {"occlusion": occlusion, "random": random_scores, "integrated_gradients": integrated_gradients}

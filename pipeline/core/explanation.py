"""What an attribution answers: one text's (or one entity's) score per word, shared by the methods of
pipeline/core/attribution.py (text classifiers) and pipeline/core/token_attribution.py (token models)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.io import KnownError


class AttributionError(KnownError, ValueError):
    """A request attributions cannot answer (a method the model cannot run, an unknown class)."""


@dataclass(frozen=True)
class Explanation:
    """One text's attribution for `target`: `scores[i]` is the evidence word `words[i]` (at `spans[i]` in `text`)
    gives for it."""

    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    scores: tuple[float, ...]
    target: str
    label: str
    probability: float  # the model's probability of `target` for the whole text (an entity's: of its tags)
    method: str
    entity: dict | None = None  # a token model's entity explained: start, end (in `text`), type, text
    at: tuple[int, ...] = ()  # its words, [at[0], at[1])
    tag_ids: tuple[int, ...] = ()  # the label index of each of its words' tags

    def ranking(self) -> list[int]:
        """Word indices from the strongest evidence for the class to the strongest against (ties: reading order)."""
        return sorted(range(len(self.words)), key=lambda i: (-self.scores[i], i))

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The `k` words that most support the class, with their scores (only words with a positive score)."""
        return [(self.words[i], self.scores[i]) for i in self.ranking()[:k] if self.scores[i] > 0]

    def as_dict(self) -> dict:
        out = {"text": self.text, "label": self.label, "target": self.target, "probability": self.probability,
               "method": self.method, "words": [{"word": w, "start": s, "end": e, "score": round(float(v), 6)}
                                                for w, (s, e), v in zip(self.words, self.spans, self.scores)]}
        return {**out, "entity": self.entity} if self.entity is not None else out


def torch_parts(model: Any) -> tuple[Any, Any] | None:
    """(torch module, tokenizer) of a packaged transformers model; None for a model without gradients."""
    import torch

    net = getattr(model, "model", None)
    return (net, model.tokenizer) if isinstance(net, torch.nn.Module) and model.tokenizer is not None else None

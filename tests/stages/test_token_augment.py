"""Entity-safe augmentation for the token task, on the real tweets: a variant's tags are known word by word, no
entity is lost or moved, every variant is added or dropped with a reason, and the same seed gives the same rows."""
from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from pipeline.core.param_errors import ParamsError
from pipeline.core.params import Params, replace
from pipeline.core.splitting import split
from pipeline.core.tags import spans
from pipeline.core.tasks import task_for
from pipeline.core.token_clean import NO_ENTITY


@pytest.fixture(scope="module")
def tweets(wnut16_file) -> pd.DataFrame:
    from pipeline.core.token_clean import strata
    from pipeline.core.token_io import read_tokens

    df = read_tokens(wnut16_file).frame.head(600)
    ids = [f"s{i}" for i in range(len(df))]
    return df.assign(id=ids, source_id=ids, origin="original", text=df["tokens"].map(" ".join),
                     label=strata(df["tags"]), raw_row=range(len(df)))


def params(**augment) -> Params:
    p = replace(Params(), task="token")
    return replace(p, augment=p.augment.model_copy(update=augment))


def mentions_on(**kw) -> Params:
    p = params()
    return params(mentions=p.augment.mentions.model_copy(update={"enabled": True, "classes": "all", **kw}),
                  filter=p.augment.filter.model_copy(update={"enabled": False}))


def outside(words, tags) -> list[str]:
    return [w for w, t in zip(words, tags) if t == "O"]


def test_mention_replacement_swaps_mentions_for_others_of_their_type(tweets):
    p = mentions_on(p=1.0)
    result = task_for(p).augment(tweets, p.augment, p.seed)
    added = result.rows[result.rows["origin"] == "mention_replacement"]
    assert len(added) > 100
    assert result.generated["mention_replacement"] == len(added) + len(result.dropped)  # nothing vanishes
    assert set(result.dropped["reason"]) <= {"identical_to_source", "duplicate_of_existing_text"}
    source = tweets.set_index("source_id")
    splits = split(tweets, p.split, p.seed).splits  # where the split stage will put each sentence

    def mentions(frame):
        return {(s.type, tuple(w[s.start:s.end])) for w, t in zip(frame["tokens"], frame["tags"])
                for s in spans(list(t))}

    pool = mentions(splits["train"])
    held_out_only = (mentions(splits["val"]) | mentions(splits["test"])) - pool
    assert held_out_only  # the tweets' held-out sentences do name entities the training ones never do
    seen = set()
    for _, v in added.iterrows():
        src = source.loc[v["source_id"]]
        assert len(v["tokens"]) == len(v["tags"]) and v["text"] == " ".join(v["tokens"])
        new, old = spans(list(v["tags"])), spans(list(src["tags"]))
        assert [s.type for s in new] == [s.type for s in old]  # same entities, same order, same types
        assert outside(v["tokens"], v["tags"]) == outside(src["tokens"], src["tags"])  # other words untouched
        seen |= {(s.type, tuple(v["tokens"][s.start:s.end])) for s in new}
        assert v["label"] == src["label"] and v["label"] != NO_ENTITY
    assert seen <= pool and not seen & held_out_only  # no validation or test entity is taught through a variant
    assert (added["id"] != added["source_id"]).all() and added["id"].is_unique


def test_the_same_seed_gives_the_same_variants_in_any_row_order(tweets):
    p = mentions_on()
    a = task_for(p).augment(tweets, p.augment, p.seed).rows
    b = task_for(p).augment(tweets.iloc[::-1], p.augment, p.seed).rows
    key = ["id", "text"]
    assert a[key].sort_values("id").reset_index(drop=True).equals(b[key].sort_values("id").reset_index(drop=True))
    other = task_for(p).augment(tweets, p.augment, p.seed + 1).rows
    assert set(other["text"]) != set(a["text"])


def test_minority_plan_never_grows_a_stratum_past_the_largest_with_an_entity(tweets):
    p = mentions_on(classes="minority", variants=3)
    result = task_for(p).augment(tweets, p.augment, p.seed)
    before = Counter(tweets["label"])
    after = Counter(result.rows["label"])
    largest = max(n for t, n in before.items() if t != NO_ENTITY)
    assert after[NO_ENTITY] == before[NO_ENTITY]  # sentences with no entity are not a class to grow
    assert all(after[t] <= largest for t in after if t != NO_ENTITY)
    assert sum(after.values()) > sum(before.values())


def test_auto_replaces_mentions_where_entities_are_spans_among_untagged_words(tweets):
    from pipeline.core.augmenting import stage_metrics

    p = params(filter=params().augment.filter.model_copy(update={"enabled": False}))
    assert p.augment.mentions.enabled == "auto"  # the default
    result = task_for(p).augment(tweets, p.augment, p.seed)
    decided = stage_metrics(tweets, result)["auto"]["mentions"]
    words = [t for tags in tweets["tags"] for t in tags]
    assert decided["enabled"] and decided["outside_share"] == round(words.count("O") / len(words), 4) > 0.5
    assert result.generated["mention_replacement"] > 0
    # the same sentences tagged word by word, as a part-of-speech treebank is: a swap would be grammatical noise
    tagged = tweets.assign(tags=[[f"B-{'CAP' if w[:1].isupper() else 'LOW'}" for w in ws] for ws in tweets["tokens"]])
    off = task_for(p).augment(tagged, p.augment, p.seed)
    assert off.decisions["mentions"] == {"enabled": False, "setting": "auto", "outside_share": 0.0,
                                         "min_outside_share": 0.5}
    assert off.generated == {} and len(off.rows) == len(tagged)
    no = params(mentions=p.augment.mentions.model_copy(update={"enabled": False}))
    assert task_for(no).augment(tweets, no.augment, no.seed).generated == {}  # an explicit false wins
    seq = replace(p, task="sequence")
    task_for(seq).check_augment(seq.augment)  # auto is no error for text classes: it means off there


def test_synonym_swap_touches_only_words_outside_entities(tweets):
    p = params()
    p = params(synonym=p.augment.synonym.model_copy(update={"enabled": True, "classes": "all", "aug_p": 0.3}),
               mentions=p.augment.mentions.model_copy(update={"enabled": False}),
               filter=p.augment.filter.model_copy(update={"enabled": False}))
    result = task_for(p).augment(tweets, p.augment, p.seed)
    added = result.rows[result.rows["origin"] == "synonym"]
    assert len(added) > 50
    source = tweets.set_index("source_id")
    changed = 0
    for _, v in added.iterrows():
        src = source.loc[v["source_id"]]
        assert list(v["tags"]) == list(src["tags"])
        for w, old, t in zip(v["tokens"], src["tokens"], v["tags"]):
            if t != "O":
                assert w == old  # an entity word never changes
            changed += w != old
    assert changed >= len(added)  # every kept variant changed at least one word


def test_what_cannot_keep_its_tags_is_refused_by_name():
    p = params()
    bt = params(back_translation=p.augment.back_translation.model_copy(update={"enabled": True}))
    with pytest.raises(ParamsError, match="augment.back_translation.enabled"):
        task_for(bt).check_augment(bt.augment)
    seq = replace(mentions_on(), task="sequence")
    with pytest.raises(ParamsError, match="augment.mentions.enabled"):
        task_for(seq).check_augment(seq.augment)

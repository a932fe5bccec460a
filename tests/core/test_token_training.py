"""Training and scoring a token classifier (issue 33): the token collator and entity-F1 metric through the
pipeline's own trainers.fit, and per-word logits that do not depend on how windows are batched."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MINILM

from pipeline.core.tags import bio_labels

pytestmark = pytest.mark.model  # loads a real transformer


@pytest.fixture(scope="module")
def tweets(wnut16_file):
    from pipeline.core.token_io import read_tokens

    return read_tokens(wnut16_file).frame


@pytest.fixture(scope="module")
def setup(tweets):
    from pipeline.core.metrics import label_config
    from pipeline.core.modeling import encoder_layers, load_token_classifier, load_tokenizer

    names = bio_labels(tweets["tags"].tolist())
    model = load_token_classifier(MINILM, "m", **label_config(names))
    del encoder_layers(model)[2:]  # two layers: a real model, small enough for a test
    model.config.num_hidden_layers = 2
    return model, load_tokenizer(MINILM, "m"), names


def test_gold_predictions_score_entity_f1_one_through_trainers_metric(tweets, setup):
    from types import SimpleNamespace

    from pipeline.core.token_training import encode_frame, metrics_fn

    _, tok, names = setup
    val = tweets.head(80)
    enc = encode_frame(val, tok, names, 24, 8)
    width = max(map(len, enc.features["input_ids"]))
    padded = np.full((len(enc.starts), width, len(names)), -100.0, np.float32)  # as Trainer pads predictions
    for w, row in enumerate(enc.starts):
        for p, word in enumerate(row):
            padded[w, p] = np.eye(len(names))[names.index(val["tags"].iloc[enc.sentence[w]][word])] if word >= 0 \
                else 0.0
    got = metrics_fn(enc, val["tags"].tolist(), names)(SimpleNamespace(predictions=padded))
    assert got == {"entity_f1": 1.0, "token_accuracy": 1.0}


def test_word_logits_do_not_depend_on_the_batch(tweets, setup):
    from pipeline.core.token_training import encode_frame, predict_word_logits

    model, tok, names = setup
    enc = encode_frame(tweets.head(40), tok, names, 32, 8, with_labels=False)
    one, unread = predict_word_logits(model, enc, batch_size=1)
    many, _ = predict_word_logits(model, enc, batch_size=16)  # padded next to longer windows
    assert unread == 0 and all(np.allclose(a, b, atol=1e-4) for a, b in zip(one, many))


def _fit(model, tok, names, train, val, tmp_path, **changes):
    from transformers import set_seed

    from pipeline.core.params import TrainParams, replace
    from pipeline.core.token_training import PRIMARY, TokenTrainer, collator, encode_frame, metrics_fn, window_dataset
    from pipeline.core.trainers import fit

    p = replace(TrainParams(), min_steps=0, **changes)
    assert p.group_by_length  # on, as by default: it must not reorder the validation windows the metric reads
    set_seed(0)
    val_enc = encode_frame(val, tok, names, 64, 16)
    return fit(TokenTrainer, model, tok, p, 0, window_dataset(encode_frame(train, tok, names, 64, 16)),
               window_dataset(val_enc), checkpoints=str(tmp_path / "ckpt"), data_files=[], resume=False,
               live=None, collator=collator(tok), compute_metrics=metrics_fn(val_enc, val["tags"].tolist(), names),
               metric_for_best_model=PRIMARY)


def test_fit_trains_a_token_classifier_through_the_token_collator(tweets, setup, tmp_path):
    model, tok, names = setup
    trainer, result, best = _fit(model, tok, names, tweets.iloc[:192], tweets.iloc[192:256], tmp_path,
                                 max_steps=12, eval_steps=6, batch_size=16, learning_rate=5e-4)
    assert result["global_step"] == 12 and 0 <= best["eval_entity_f1"] <= 1
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]  # it learns: the labels reach the loss through the token collator
    assert best["eval_token_accuracy"] > 0.8  # most words are O, and 12 steps learn that


def test_the_validation_metric_is_what_predicting_the_validation_sentences_gives(tweets, tmp_path):
    from pipeline.core.entities import entity_counts, entity_f1
    from pipeline.core.metrics import label_config
    from pipeline.core.modeling import encoder_layers, load_token_classifier, load_tokenizer
    from pipeline.core.token_encoding import predicted_tags
    from pipeline.core.token_training import encode_frame, predict_word_logits

    names = bio_labels(tweets["tags"].tolist())
    model = load_token_classifier(MINILM, "m", **label_config(names))
    del encoder_layers(model)[2:]
    model.config.num_hidden_layers = 2
    tok = load_tokenizer(MINILM, "m")
    val = tweets.iloc[192:288]
    # A barely trained head predicts many different tags, so the order the windows are scored in shows; eight
    # windows a batch make several batches for length grouping to reorder.
    trainer, _, best = _fit(model, tok, names, tweets.iloc[:64], val, tmp_path, max_steps=2, eval_steps=2,
                            batch_size=16, eval_batch_size=8, learning_rate=1e-7)
    per_word, _ = predict_word_logits(trainer.model, encode_frame(val, tok, names, 64, 16, with_labels=False))
    tags = [predicted_tags(x, names)[0] for x in per_word]
    assert len({t for ts in tags for t in ts}) >= 5, "the check needs varied predictions to mean anything"
    gold = val["tags"].tolist()
    accuracy = sum(a == b for ps, gs in zip(tags, gold) for a, b in zip(ps, gs)) / sum(map(len, gold))
    assert best["eval_token_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert best["eval_entity_f1"] == pytest.approx(entity_f1(entity_counts(gold, tags)), abs=1e-9)

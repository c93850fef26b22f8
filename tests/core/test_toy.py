"""The toy language: planted attributes, the sampling process, and a short training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechrec.toy import (
    GRAMMAR_STATES,
    KINDS,
    make_toy_language,
    toy_loss,
    train_toy_model,
)


def test_attribute_table_shape_padding_and_one_hot_groups():
    lang = make_toy_language(n_topics=5, n_nouns=3, n_verbs=2, n_adjectives=2, n_function=3)
    table, groups = lang.attributes, lang.groups
    assert lang.d_vocab == 1 + 3 + 5 * 7
    assert table.shape == (lang.d_vocab, 5 + len(KINDS))
    assert (table.dtypes == np.float32).all()
    assert list(table.index) == list(range(lang.d_vocab))
    assert set(np.unique(table.to_numpy())) <= {0.0, 1.0}
    assert (table.loc[0] == 0).all()  # padding carries nothing
    assert list(groups.index) == list(table.columns)
    assert groups.value_counts().to_dict() == {"topic": 5, "kind": len(KINDS)}
    topic = table.loc[:, groups == "topic"].to_numpy()
    kind = table.loc[:, groups == "kind"].to_numpy()
    assert (kind[1:].sum(1) == 1).all()  # every real token has exactly one kind
    is_function = kind[:, KINDS.index("function")] == 1
    assert (topic[is_function].sum(1) == 0).all()  # function words are topic-free
    assert (topic[1:][~is_function[1:]].sum(1) == 1).all()  # content words: one topic
    # token_id, token_topic and token_kind agree with the table
    tok = lang.token_id("verb", 1, topic=2)
    assert table.loc[tok, "topic=sports"] == 1 and table.loc[tok, "kind=verb"] == 1
    assert lang.token_topic()[tok] == 2 and KINDS[lang.token_kind()[tok]] == "verb"
    assert lang.token_names[tok] == "sports.verb_1"
    assert lang.token_topic()[lang.token_id("function", 0)] == -1
    assert len(lang.token_names) == lang.d_vocab


def test_sampling_is_deterministic_with_a_seed():
    lang = make_toy_language(seed=3)
    a, b = lang.sample(50, 20, seed=7), lang.sample(50, 20, seed=7)
    assert a.dtype == torch.long and a.shape == (50, 20)
    assert torch.equal(a, b)
    assert not torch.equal(a, lang.sample(50, 20, seed=8))
    assert torch.equal(lang.sample(50, 20), make_toy_language(seed=3).sample(50, 20))
    assert torch.equal(lang.sample_with_latents(50, 20, seed=7).tokens, a)
    assert int(a.min()) >= 1 and int(a.max()) < lang.d_vocab  # no padding


def test_padded_samples_are_left_padded_prefixes():
    lang = make_toy_language()
    tokens, mask = lang.sample_padded(40, 12, min_len=3, seed=5)
    full = lang.sample(40, 12, seed=5)
    assert tokens.shape == mask.shape == (40, 12)
    lengths = mask.sum(1)
    assert int(lengths.min()) >= 3 and int(lengths.max()) <= 12
    assert ((tokens == 0) == (mask == 0)).all()
    assert (mask.diff(dim=1) >= 0).all()  # padding on the left only
    for row, n in enumerate(lengths.tolist()):
        assert torch.equal(tokens[row, 12 - n:], full[row, :n])
    again = lang.sample_padded(40, 12, min_len=3, seed=5)
    assert torch.equal(again[0], tokens) and torch.equal(again[1], mask)


def test_sequences_follow_the_planted_process():
    lang = make_toy_language(switch_prob=0.3, p_adjective=0.4)
    s = lang.sample_with_latents(4000, 24, seed=1)
    tokens, topic, state = s.tokens.numpy(), s.topic.numpy(), s.state.numpy()
    kind = lang.token_kind()[tokens]
    tok_topic = lang.token_topic()[tokens]
    # grammar: each token's kind is allowed by its state, and states advance as planted
    nominal = np.isin(state, [GRAMMAR_STATES.index("subject"), GRAMMAR_STATES.index("object")])
    assert np.isin(kind[nominal], [KINDS.index("noun"), KINDS.index("adjective")]).all()
    assert (kind[state == GRAMMAR_STATES.index("verb")] == KINDS.index("verb")).all()
    assert (kind[state == GRAMMAR_STATES.index("end")] == KINDS.index("function")).all()
    assert (state[:, 0] == GRAMMAR_STATES.index("subject")).all()
    adjective_rate = (kind[nominal] == KINDS.index("adjective")).mean()
    assert adjective_rate == pytest.approx(0.4, abs=0.01)
    # topic: content words belong to the sequence's current topic
    content = kind != KINDS.index("function")
    assert (tok_topic[content] == topic[content]).all()
    # topic persistence across clause boundaries is 1 - switch_prob; it never changes inside
    start = s.clause_start.numpy()
    same = topic[:, 1:] == topic[:, :-1]
    assert same[~start[:, 1:]].all()
    assert same[start[:, 1:]].mean() == pytest.approx(0.7, abs=0.015)
    assert (start[:, 1:] == (kind[:, :-1] == KINDS.index("function"))).all()
    # a sequence's first topic is uniform
    first = np.bincount(topic[:, 0], minlength=lang.n_topics) / len(topic)
    assert np.abs(first - 1 / lang.n_topics).max() < 0.03


def test_entropy_baselines():
    lang = make_toy_language()
    base = lang.entropy(n_sequences=500, seq_len=16)
    assert 0 < base["conditional"] < base["unigram"] <= math.log(lang.d_vocab - 1)
    # one topic, no adjectives: the clause is noun verb noun function, the entropy exact
    flat = make_toy_language(n_topics=1, switch_prob=0.0, p_adjective=0.0, n_nouns=4,
                             n_verbs=2, n_function=2)
    h = flat.entropy(n_sequences=10, seq_len=9)["conditional"]  # predicts v n f n v n f n
    expected = (2 * math.log(2) + 4 * math.log(4) + 2 * math.log(2)) / 8
    assert h == pytest.approx(expected)


@pytest.mark.parametrize("bad", [dict(switch_prob=1.5), dict(p_adjective=1.0),
                                 dict(n_nouns=0), dict(n_topics=1)])
def test_make_toy_language_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        make_toy_language(**bad)


def test_short_training_lowers_the_loss_and_is_seeded():
    lang = make_toy_language()
    kwargs = dict(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, steps=60,
                  batch_size=16, lr=1e-2)
    losses: list[float] = []
    model = train_toy_model(lang, seed=0, progress=lambda step, loss: losses.append(loss), **kwargs)
    assert len(losses) == 60 and not model.training
    assert model.cfg.d_vocab == lang.d_vocab and model.cfg.attention_dir == "causal"
    held_out = toy_loss(model, lang, n_sequences=200)
    unigram = lang.entropy(n_sequences=500, seq_len=16)["unigram"]
    assert losses[0] > math.log(lang.d_vocab) - 0.5
    assert held_out < unigram - 0.5  # it uses the context, not just token frequencies
    again = train_toy_model(lang, seed=0, **kwargs)
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)

"""A synthetic language with planted token attributes, and a small model trained on it.

The core's recipes (activations, SAEs, alignment of features with token attributes, steering)
work on any ``HookedTransformer``; this module gives them a non-recommender subject whose ground
truth is known, in the spirit of :func:`sklearn.datasets.make_classification`: deterministic
with a seed, fast, and small enough to train on one CPU thread in well under a minute.

The language (:func:`make_toy_language`):

* **Tokens.** Token 0 is padding. Then ``n_function`` topic-free *function words*, then, for each
  of ``n_topics`` topics, a block of *nouns*, *verbs* and *adjectives* of that topic.
* **Attributes.** Every token carries a one-hot *topic* (``topic=animals``...; function words
  and padding have none) and a one-hot *kind* (``kind=noun``, ``kind=verb``,
  ``kind=adjective``, ``kind=function``; padding has none):
  :attr:`ToyLanguage.attributes` is that ``(V, A)`` 0/1 table and
  :attr:`ToyLanguage.groups` maps each attribute to ``"topic"`` or ``"kind"``.
* **Grammar.** Sequences are clauses ``adj* noun verb adj* noun function``: before each noun
  an adjective comes with probability ``p_adjective`` (so adjective runs have geometric
  length), and a function word ends the clause.
* **Topic.** A sequence starts on a uniformly drawn topic; every content word (noun, verb,
  adjective) is drawn uniformly among the words of the current topic and kind. After each
  function word the topic switches, with probability ``switch_prob``, to another topic drawn
  uniformly; otherwise it persists.

So the next token is predictable from the topic of the context (revealed by its last content
word) and the grammar state (revealed by the kinds so far): a model that predicts well has to
carry "current topic" and "expected kind" in its residual stream, which is what SAE features
should align with, and steering towards a topic should raise that topic's share of the
next-token predictions. For alignment, rows are labelled by their *input* token
(:func:`mechrec.alignment.token_attributes` with :attr:`ToyLanguage.attributes`): content tokens
carry their topic and kind, function words only their kind.

:func:`train_toy_model` trains a standard TransformerLens ``HookedTransformer`` on sampled
sequences; :meth:`ToyLanguage.entropy` gives the baselines to judge its loss against (the
unigram entropy, and the process's conditional entropy: the lowest loss any model can reach).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

__all__ = [
    "GRAMMAR_STATES",
    "KINDS",
    "ToyLanguage",
    "ToySample",
    "make_toy_language",
    "toy_loss",
    "train_toy_model",
]

#: Word kinds, in the order of the ``kind=`` attribute columns.
KINDS: tuple[str, ...] = ("noun", "verb", "adjective", "function")

#: Names of the first topics; more topics are called ``topic_6``, ``topic_7``...
_TOPIC_NAMES = ("animals", "food", "sports", "music", "weather", "travel")

# Grammar states: where the clause ``adj* noun verb adj* noun function`` stands.
_SUBJECT, _VERB, _OBJECT, _END = 0, 1, 2, 3
#: Names of the grammar states of :attr:`ToySample.state`, by value.
GRAMMAR_STATES: tuple[str, ...] = ("subject", "verb", "object", "end")

_NOUN, _VERB_KIND, _ADJ, _FUNC = range(4)


class ToySample(NamedTuple):
    """Sequences with the latent variables that generated them.

    Attributes:
        tokens: ``(N, T)`` token ids (no padding).
        topic: ``(N, T)`` topic index in force at each position (a function word gets the topic
            of the clause it ends; a switch shows from the next position on).
        state: ``(N, T)`` grammar state each token was drawn in (index into
            :data:`GRAMMAR_STATES`: ``subject``/``object`` draw an adjective or a noun,
            ``verb`` a verb, ``end`` a function word).
        clause_start: ``(N, T)`` bool, True where a new clause starts after a function word,
            i.e. where the topic may just have switched.
    """

    tokens: torch.Tensor
    topic: torch.Tensor
    state: torch.Tensor
    clause_start: torch.Tensor


@dataclass(frozen=True)
class ToyLanguage:
    """A synthetic language: token attributes and the process that generates sequences.

    Build one with :func:`make_toy_language`. Token layout: 0 is padding, ``1..n_function``
    are function words, then one block per topic holding its nouns, verbs and adjectives.

    Attributes:
        topics: topic names, one per topic.
        n_function: number of (topic-free) function words.
        n_nouns: nouns per topic.
        n_verbs: verbs per topic.
        n_adjectives: adjectives per topic.
        switch_prob: probability that the topic changes after a function word.
        p_adjective: probability of one more adjective before a noun.
        seed: the seed the language was made with (also the default sampling seed).
    """

    topics: tuple[str, ...]
    n_function: int
    n_nouns: int
    n_verbs: int
    n_adjectives: int
    switch_prob: float
    p_adjective: float
    seed: int = 0
    _attributes: pd.DataFrame = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_attributes", self._build_attributes())

    # ---- vocabulary -----------------------------------------------------------------------

    @property
    def n_topics(self) -> int:
        """Number of topics."""
        return len(self.topics)

    @property
    def words_per_topic(self) -> int:
        """Content words (nouns + verbs + adjectives) of each topic."""
        return self.n_nouns + self.n_verbs + self.n_adjectives

    @property
    def d_vocab(self) -> int:
        """Vocabulary size, padding included."""
        return 1 + self.n_function + self.n_topics * self.words_per_topic

    def _kind_sizes(self) -> np.ndarray:
        return np.array([self.n_nouns, self.n_verbs, self.n_adjectives], dtype=np.int64)

    def _kind_offsets(self) -> np.ndarray:
        """Offset of each content kind's words inside a topic block."""
        return np.concatenate([[0], np.cumsum(self._kind_sizes())[:-1]])

    def token_id(self, kind: str, index: int, topic: int | None = None) -> int:
        """The id of the ``index``-th word of ``kind`` (of ``topic``, for content words).

        Args:
            kind: one of :data:`KINDS`.
            index: position of the word among the words of that kind (and topic).
            topic: topic index; required for content words, must be ``None`` for function
                words.

        Returns:
            the token id.
        """
        k = KINDS.index(kind)
        if k == _FUNC:
            if topic is not None or not 0 <= index < self.n_function:
                raise ValueError(f"function word {index} (topic {topic}) does not exist")
            return 1 + index
        if topic is None or not 0 <= topic < self.n_topics:
            raise ValueError(f"content words need a topic in 0..{self.n_topics - 1}, got {topic}")
        if not 0 <= index < self._kind_sizes()[k]:
            raise ValueError(f"{kind} {index} does not exist (a topic has "
                             f"{self._kind_sizes()[k]})")
        return (1 + self.n_function + topic * self.words_per_topic
                + int(self._kind_offsets()[k]) + index)

    @property
    def token_names(self) -> list[str]:
        """A readable name per token id: ``<pad>``, ``function_0``, ``animals.noun_0``..."""
        names = ["<pad>"] + [f"function_{i}" for i in range(self.n_function)]
        for topic in self.topics:
            for kind, size in zip(KINDS[:3], self._kind_sizes(), strict=True):
                names += [f"{topic}.{kind}_{i}" for i in range(size)]
        return names

    def _build_attributes(self) -> pd.DataFrame:
        values = np.zeros((self.d_vocab, self.n_topics + len(KINDS)), dtype=np.float32)
        values[1:1 + self.n_function, self.n_topics + _FUNC] = 1.0
        for t in range(self.n_topics):
            start = 1 + self.n_function + t * self.words_per_topic
            values[start:start + self.words_per_topic, t] = 1.0
            spans = zip(self._kind_offsets(), self._kind_sizes(), strict=True)
            for k, (off, size) in enumerate(spans):
                values[start + off:start + off + size, self.n_topics + k] = 1.0
        columns = [f"topic={t}" for t in self.topics] + [f"kind={k}" for k in KINDS]
        frame = pd.DataFrame(values, columns=columns)
        frame.index.name = "token"
        return frame

    @property
    def attributes(self) -> pd.DataFrame:
        """``(V, A)`` float32 0/1 table indexed by token id: ``topic=...`` then ``kind=...``.

        Row 0 (padding) is all zeros; function words have no topic. A copy: edit it freely.
        """
        return self._attributes.copy()

    @property
    def groups(self) -> pd.Series:
        """The group (``"topic"`` or ``"kind"``) of each attribute column."""
        groups = ["topic"] * self.n_topics + ["kind"] * len(KINDS)
        return pd.Series(groups, index=pd.Index(self._attributes.columns, name="attribute"),
                         name="group")

    def token_topic(self) -> np.ndarray:
        """``(V,)`` topic index of each token, ``-1`` for padding and function words."""
        out = np.full(self.d_vocab, -1, dtype=np.int64)
        start = 1 + self.n_function
        out[start:] = np.arange(self.d_vocab - start) // self.words_per_topic
        return out

    def token_kind(self) -> np.ndarray:
        """``(V,)`` kind index (into :data:`KINDS`) of each token, ``-1`` for padding."""
        table = self._attributes[[f"kind={k}" for k in KINDS]].to_numpy()
        return np.where(table.any(axis=1), table.argmax(axis=1), -1)

    # ---- sampling -------------------------------------------------------------------------

    def sample_with_latents(self, n_sequences: int, seq_len: int,
                            seed: int | None = None) -> ToySample:
        """Sample sequences together with their topic and grammar state per position.

        Args:
            n_sequences: number of sequences ``N``.
            seq_len: tokens per sequence ``T`` (each starts at the beginning of a clause).
            seed: sampling seed (default: the language's seed); the same seed gives the same
                sequences.

        Returns:
            a :class:`ToySample` of ``(N, T)`` tensors.
        """
        import torch

        if n_sequences < 0 or seq_len < 1:
            raise ValueError(f"need n_sequences >= 0 and seq_len >= 1, got {n_sequences}, "
                             f"{seq_len}")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        n, big_t = n_sequences, seq_len
        tokens = np.empty((n, big_t), dtype=np.int64)
        topics = np.empty((n, big_t), dtype=np.int64)
        states = np.empty((n, big_t), dtype=np.int64)
        starts = np.zeros((n, big_t), dtype=bool)
        topic = rng.integers(self.n_topics, size=n)
        state = np.full(n, _SUBJECT)
        sizes, offsets = self._kind_sizes(), self._kind_offsets()
        block = 1 + self.n_function + topic * self.words_per_topic
        for t in range(big_t):
            topics[:, t], states[:, t] = topic, state
            nominal = (state == _SUBJECT) | (state == _OBJECT)
            adjective = nominal & (rng.random(n) < self.p_adjective)
            kind = np.select([adjective, nominal, state == _VERB], [_ADJ, _NOUN, _VERB_KIND],
                             _FUNC)
            u = rng.random(n)
            content = kind != _FUNC
            safe = np.where(content, kind, 0)
            within = np.minimum((u * sizes[safe]).astype(np.int64), sizes[safe] - 1)
            func = np.minimum((u * self.n_function).astype(np.int64), self.n_function - 1)
            tokens[:, t] = np.where(content, block + offsets[safe] + within, 1 + func)
            # Next grammar state: an adjective keeps it, a noun/verb/function word moves on.
            state = np.where(adjective, state, (state + 1) % 4)
            switch = (kind == _FUNC) & (rng.random(n) < self.switch_prob)
            shift = rng.integers(1, max(self.n_topics, 2), size=n)
            topic = np.where(switch, (topic + shift) % self.n_topics, topic)
            block = 1 + self.n_function + topic * self.words_per_topic
            if t + 1 < big_t:
                starts[:, t + 1] = kind == _FUNC
        return ToySample(torch.from_numpy(tokens), torch.from_numpy(topics),
                         torch.from_numpy(states), torch.from_numpy(starts))

    def sample(self, n_sequences: int, seq_len: int, seed: int | None = None) -> torch.Tensor:
        """Sample ``(N, T)`` token sequences (a ``torch.LongTensor``, no padding).

        Args:
            n_sequences: number of sequences ``N``.
            seq_len: tokens per sequence ``T``.
            seed: sampling seed (default: the language's seed).

        Returns:
            the token ids; :meth:`sample_with_latents` with the same seed gives the same tokens
            and their topics and grammar states.
        """
        return self.sample_with_latents(n_sequences, seq_len, seed).tokens

    def sample_padded(self, n_sequences: int, max_len: int, min_len: int = 2,
                      seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ragged sequences, left-padded to ``max_len``, with their attention mask.

        Each row is the start of a sampled sequence, of a length drawn uniformly in
        ``min_len..max_len``, moved to the right end of the row; padding is token 0.

        Args:
            n_sequences: number of sequences ``N``.
            max_len: row width ``T``.
            min_len: shortest real length (at least 1).
            seed: sampling seed (default: the language's seed).

        Returns:
            ``(tokens, mask)``, both ``(N, T)`` int64, the mask 1 on real positions: one batch
            as :func:`mechrec.activations.collect_activations` takes it.
        """
        import torch

        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        full = self.sample(n_sequences, max_len, seed)
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        lengths = torch.randint(min_len, max_len + 1, (n_sequences,), generator=gen)
        pad = max_len - lengths
        cols = torch.arange(max_len)
        mask = (cols[None, :] >= pad[:, None]).long()
        source = (cols[None, :] - pad[:, None]).clamp(min=0)
        return torch.gather(full, 1, source) * mask, mask

    # ---- baselines ------------------------------------------------------------------------

    def _nominal_entropy(self) -> float:
        p = self.p_adjective
        h_choice = -sum(x * math.log(x) for x in (p, 1 - p) if x > 0)
        return h_choice + p * math.log(self.n_adjectives) + (1 - p) * math.log(self.n_nouns)

    def _topic_switch_entropy(self) -> float:
        s, k = self.switch_prob, self.n_topics
        if k == 1:
            return 0.0
        parts = [1 - s] + [s / (k - 1)] * (k - 1)
        return -sum(x * math.log(x) for x in parts if x > 0)

    def entropy(self, n_sequences: int = 2000, seq_len: int = 32,
                seed: int | None = None) -> dict[str, float]:
        """Loss baselines (nats per predicted token) on sampled sequences.

        ``"conditional"`` is the entropy of each next token given everything before it, averaged
        over the predicted positions ``1..T-1``: the loss of a perfect model, computed exactly
        per position from the latent state (the history always reveals the grammar state, and
        the topic except right after a function word, where it may have switched).
        ``"unigram"`` is the entropy of the token frequencies of the sample: the loss of a model
        that ignores the context. A trained model's loss should sit between them, near the
        first.

        Args:
            n_sequences: sequences to average over.
            seq_len: tokens per sequence (the model's training length).
            seed: sampling seed (default: the language's seed).

        Returns:
            ``{"conditional": ..., "unigram": ...}``.
        """
        if seq_len < 2:
            raise ValueError("seq_len must be at least 2 (there is nothing to predict)")
        s = self.sample_with_latents(n_sequences, seq_len, seed)
        state = s.state[:, 1:].numpy()
        start = s.clause_start[:, 1:].numpy()
        per_state = np.array([self._nominal_entropy(), math.log(self.n_verbs),
                              self._nominal_entropy(), math.log(self.n_function)])
        h = per_state[state] + np.where(start, self._topic_switch_entropy(), 0.0)
        counts = np.bincount(s.tokens[:, 1:].reshape(-1).numpy(), minlength=self.d_vocab)
        freq = counts[counts > 0] / counts.sum()
        return {"conditional": float(h.mean()), "unigram": float(-(freq * np.log(freq)).sum())}


def make_toy_language(
    n_topics: int = 6,
    *,
    n_nouns: int = 4,
    n_verbs: int = 3,
    n_adjectives: int = 3,
    n_function: int = 4,
    switch_prob: float = 0.1,
    p_adjective: float = 0.4,
    seed: int = 0,
) -> ToyLanguage:
    """Make a :class:`ToyLanguage` (see the module docstring for the process).

    The defaults give 6 topics of 10 content words and 4 function words: 65 tokens with
    padding.

    Args:
        n_topics: number of topics (the first six are named ``animals``, ``food``, ``sports``,
            ``music``, ``weather``, ``travel``; more are ``topic_6``...).
        n_nouns: nouns per topic.
        n_verbs: verbs per topic.
        n_adjectives: adjectives per topic.
        n_function: topic-free function words.
        switch_prob: probability that the topic changes after a function word (to another
            topic, uniformly); ``1 - switch_prob`` is the topic persistence rate.
        p_adjective: probability of one more adjective before a noun.
        seed: default seed of :meth:`ToyLanguage.sample`.

    Returns:
        the language.
    """
    for name, value in [("n_topics", n_topics), ("n_nouns", n_nouns), ("n_verbs", n_verbs),
                        ("n_adjectives", n_adjectives), ("n_function", n_function)]:
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, prob in [("switch_prob", switch_prob), ("p_adjective", p_adjective)]:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {prob!r}")
    if p_adjective == 1.0:
        raise ValueError("p_adjective must be below 1 (a noun must eventually come)")
    if n_topics == 1 and switch_prob > 0:
        raise ValueError("with one topic there is nothing to switch to: use switch_prob=0")
    topics = tuple(_TOPIC_NAMES[i] if i < len(_TOPIC_NAMES) else f"topic_{i}"
                   for i in range(n_topics))
    return ToyLanguage(topics, int(n_function), int(n_nouns), int(n_verbs), int(n_adjectives),
                       float(switch_prob), float(p_adjective), int(seed))


def train_toy_model(
    language: ToyLanguage,
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_mlp: int = 128,
    n_ctx: int = 32,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> HookedTransformer:
    """Train a causal ``HookedTransformer`` on the language's sequences (next-token loss).

    Each step draws ``batch_size`` fresh sequences of ``n_ctx`` tokens and takes one AdamW step
    on the mean next-token cross-entropy; the learning rate warms up linearly over the first 5%
    of the steps, then decays along a cosine to 10%. The defaults reach a loss near the
    process's conditional entropy (:meth:`ToyLanguage.entropy`) in well under a minute on one
    CPU thread.

    Args:
        language: the language to learn.
        n_layers: transformer blocks.
        d_model: residual stream width.
        n_heads: attention heads per block (``d_head = d_model // n_heads``).
        d_mlp: MLP hidden width.
        n_ctx: context length, and the length of the training sequences.
        steps: optimiser steps.
        batch_size: sequences per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        seed: seeds the weights and the training sequences: the same seed gives the same model.
        device: torch device.
        progress: called as ``progress(step, loss)`` after every step.

    Returns:
        the trained model, in eval mode; :func:`toy_loss` measures its held-out loss.
    """
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    if steps < 1 or batch_size < 1 or n_ctx < 2:
        raise ValueError("need steps >= 1, batch_size >= 1 and n_ctx >= 2")
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
        d_mlp=d_mlp, d_vocab=language.d_vocab, n_ctx=n_ctx, act_fn="gelu",
        normalization_type="LN", attention_dir="causal", seed=seed, device=device,
    )
    model = HookedTransformer(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    # One draw of all training sequences: the sampler is vectorised over sequences.
    data = language.sample(steps * batch_size, n_ctx, seed=seed + 1).to(device)
    for step in range(steps):
        batch = data[step * batch_size:(step + 1) * batch_size]
        loss = model(batch, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    model.eval()
    return model


def toy_loss(model: HookedTransformer, language: ToyLanguage, *, n_sequences: int = 1000,
             seq_len: int | None = None, seed: int = 12345, batch_size: int = 250) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` on fresh sequences of the language.

    Args:
        model: a model over the language's vocabulary.
        language: the language.
        n_sequences: held-out sequences to average over.
        seq_len: their length (default: the model's ``n_ctx``).
        seed: sampling seed (pick one the training did not use; training uses ``seed + 1``).
        batch_size: sequences per forward pass.

    Returns:
        the loss, comparable with :meth:`ToyLanguage.entropy` at the same ``seq_len``.
    """
    import torch

    length = model.cfg.n_ctx if seq_len is None else seq_len
    tokens = language.sample(n_sequences, length, seed=seed)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in tokens.split(batch_size):
            loss = model(chunk.to(device), return_type="loss")
            n = chunk.shape[0] * (length - 1)
            total += float(loss) * n
            count += n
    return total / max(count, 1)


def _timed_demo() -> None:  # pragma: no cover - a manual check: python -m mechrec.toy
    lang = make_toy_language()
    t0 = time.perf_counter()
    model = train_toy_model(lang)
    seconds = time.perf_counter() - t0
    base = lang.entropy(seq_len=model.cfg.n_ctx)
    print(f"trained in {seconds:.1f} s: held-out loss {toy_loss(model, lang):.3f} nats; "
          f"conditional entropy {base['conditional']:.3f}, unigram {base['unigram']:.3f}")


if __name__ == "__main__":  # pragma: no cover
    _timed_demo()

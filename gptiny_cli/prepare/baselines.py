"""The two baselines that say whether a model's loss is any good, counted while the tokens are written.

Both are fitted on the training split and scored on the validation split, on exactly the
predictions a model's whole-split val loss scores (every validation token but the first):

    unigram  p(c) = (n(c) + 1) / (N + V)                 the character frequencies
    bigram   p(c | b) = (n(b, c) + 1) / (n(b, ·) + V)     the previous character, add-one smoothed

with n the training counts, N the training tokens, n(b, ·) the training pairs that start with b
and V the vocabulary size. Add-one smoothing keeps a character the training split never saw
from costing an infinite loss. A model that does no better than the bigram has learnt nothing
a 65 × 65 table could not. With BPE the tokens are pieces of text and the nats are per token;
bits per character divide the same total by the characters the predicted tokens hold.
"""

from __future__ import annotations

import math

import numpy as np

# Pairs counted in a dense V × V table up to this many cells, beyond it as sorted sparse keys.
_DENSE_CELLS = 2**20
_SPARSE_BACKLOG = 2**20  # sparse pair keys held unmerged at least
# Tokens gathered before their pairs are counted: a folder of many small files then costs a few
# counts rather than one per file. A dense count touches all V × V cells, so a dense count waits
# for V² / 4 tokens at least; small batches stay in cache (measured faster than 2**20 at a time).
_FLUSH_TOKENS = 2**16


class PairCounts:
    """Occurrences of each token and of each (previous, next) pair in a stream of token chunks."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.tokens = 0
        self.first: int | None = None
        self._last: int | None = None  # the last token counted so far
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0
        self._dense = np.zeros(vocab_size * vocab_size, dtype=np.int64) if vocab_size**2 <= _DENSE_CELLS else None
        self._flush_at = max(_FLUSH_TOKENS, vocab_size**2 // 4) if self._dense is not None else _FLUSH_TOKENS
        self._keys: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._backlog = 0

    def add(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.first is None:
            self.first = int(ids[0])
        self.tokens += len(ids)
        self._pending.append(ids)
        self._pending_tokens += len(ids)
        if self._pending_tokens >= self._flush_at:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        head = [np.array([self._last], dtype=np.int64)] if self._last is not None else []
        ids = np.concatenate(head + [p.astype(np.int64, copy=False) for p in self._pending])
        self._pending, self._pending_tokens = [], 0
        self._last = int(ids[-1])
        # Every token but the last is the start of a pair: the unigram counts are the pairs' row sums
        # (see ``unigram``) plus the last token, so they need no pass of their own.
        pairs = ids[:-1] * self.vocab_size
        pairs += ids[1:]
        self._count_pairs(pairs)

    def _count_pairs(self, pairs: np.ndarray) -> None:
        if self._dense is not None:
            self._dense += np.bincount(pairs, minlength=len(self._dense))
            return
        keys, counts = np.unique(pairs, return_counts=True)
        self._keys.append(keys)
        self._counts.append(counts)
        self._backlog += len(keys)
        # Merge once the unmerged keys outnumber the merged ones: each key is merged O(log n) times.
        if self._backlog > max(_SPARSE_BACKLOG, len(self._keys[0])):
            self._merge()

    @property
    def unigram(self) -> np.ndarray:
        """Occurrences of each token."""
        keys, counts = self.pairs()
        counts = np.bincount(keys // self.vocab_size, weights=counts, minlength=self.vocab_size).astype(np.int64)
        if self._last is not None:
            counts[self._last] += 1
        return counts

    def _merge(self) -> None:
        keys, inverse = np.unique(np.concatenate(self._keys), return_inverse=True)
        self._keys, self._counts = [keys], [np.bincount(inverse, weights=np.concatenate(self._counts))
                                            .astype(np.int64)]
        self._backlog = 0

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The pairs seen, as keys ``previous * V + next``, and how often each occurred."""
        self._flush()
        if self._dense is not None:
            keys = np.flatnonzero(self._dense)
            return keys, self._dense[keys]
        if not self._keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        self._merge()
        return self._keys[0], self._counts[0]


def _bigram_log_probs(train: PairCounts, keys: np.ndarray) -> np.ndarray:
    """log p(next | previous) for each pair key, from the training counts."""
    v = train.vocab_size
    train_keys, train_counts = train.pairs()
    starts = np.bincount(train_keys // v, weights=train_counts, minlength=v)  # pairs that start with each token
    seen = np.zeros(len(keys))
    if len(train_keys):
        where = np.minimum(np.searchsorted(train_keys, keys), len(train_keys) - 1)
        hit = train_keys[where] == keys
        seen[hit] = train_counts[where[hit]]
    return np.log((seen + 1.0) / (starts[keys // v] + v))


def cross_entropies(train: PairCounts, val: PairCounts, predicted_chars: int | None = None) -> dict:
    """The baselines in nats per token and bits per character, for ``meta.json`` (none when val has
    one token); ``predicted_chars``: the characters the predicted tokens hold (for BPE)."""
    predictions = val.tokens - 1
    per_char = predictions / predicted_chars if predicted_chars else 1.0
    if predictions < 1 or train.tokens < 1:
        return {}
    v = train.vocab_size
    targets = val.unigram.copy()
    targets[val.first] -= 1  # the first validation token is never predicted
    log_p = np.log((train.unigram + 1.0) / (train.tokens + v))
    unigram = -float(targets @ log_p) / predictions
    keys, counts = val.pairs()
    bigram = -float(counts @ _bigram_log_probs(train, keys)) / predictions
    return {name: {"nats": value, "bits_per_char": value / math.log(2) * per_char}
            for name, value in (("unigram", unigram), ("bigram", bigram))} | {"predictions": predictions}

"""Decode steps of many requests as one batch: what lets a server with 16 clients do more than 16
times the work of one.

Each request (``Stream``) is one prompt's n samples with a ``Sampler`` of its own seeded generator;
its samples are rows of the batch's one cache (``decode.Pool``), fed exactly as ``gptiny sample``
feeds its rows (``decode.Rows``: the same prompt pass, the same refill of a full fixed cache). A
step (``Batch.step``) runs the new position of every row in flight through one ``Decoder.step``:
the linear layers and feed-forward as one matrix, and one attention call per layer, each row at
its own position. A request that ends gives its rows back at once (the rows after it move up), so
the rows in flight are always the pool's first R, and a step reads no row it does not need.

A full learned-position cache waits, up to ``WAIT_ROUNDS`` rounds, for others to fill, so that
they refill in one prompt pass (``decode.refill_together``): each refill costs a stream the same
alone or in a batch, and done one by one they were a sixth of a 16-stream round. A waiting
stream draws nothing, so its text is what it would be without waiting (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from gptiny_cli.generation.decode import Pool, Rows, decoder_for, refill_together, step_rows
from gptiny_cli.generation.sample import Sampler, draw_together
from gptiny_cli.model import Bigram

# How many rounds a full cache waits for company: at about 2.3 ms a round of 16 streams, a pause
# of under 20 ms once in 97 characters, where 8 streams refill in 2.6 times the time of one (int8,
# avx512-bf16 class; 3.1 times in float32 held to AVX2; benchmarks/README.md).
WAIT_ROUNDS = 8


@dataclass
class Completion:
    """One prompt's generation, as a request asked for it: n samples of up to max_tokens tokens."""

    prompt: list[int]
    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stops: tuple[str, ...] = ()


class Stream:
    """One request's n samples between steps: its rows, its sampler, the logits to draw from next.

    A bigram needs no cache (the next token depends on the current one alone): it looks up its
    logits by itself.
    """

    def __init__(self, sampler: Sampler, rows: Rows | None, model: nn.Module, context: torch.Tensor) -> None:
        self.sample, self.rows, self.model = sampler, rows, model
        self.n = context.shape[0]
        self.bigram_logits = None if rows is not None else model(context[:, -1:])[:, -1]  # (n, V)
        self.token = torch.empty(0)
        self.waited: int | None = None  # rounds its full cache has waited to be refilled

    @property
    def drawing(self) -> bool:
        """Whether it draws this round: not while it waits, with its last token not yet fed."""
        return self.waited is None

    @property
    def logits(self) -> torch.Tensor:
        """What the next tokens are drawn from (n, V)."""
        return self.rows.logits if self.rows is not None else self.bigram_logits

    def took(self, token: torch.Tensor) -> None:
        """The next token of each sample (n,) was drawn: the next step feeds it."""
        self.token = token
        if self.rows is not None:
            self.rows.token = token


class Batch:
    """The streams in flight, their samples rows 0..R of one pool in the order they joined."""

    def __init__(self, model: nn.Module, batch: bool = True) -> None:
        """``batch=False`` steps the streams one after another (for measuring the batch)."""
        self.model, self.batch = model, batch
        self.device = next(model.parameters()).device
        self.decoder = decoder_for(model)
        self.pool: Pool | None = None
        self.streams: list[Stream] = []

    def join(self, c: Completion, generator: torch.Generator, start_token: int) -> Stream:
        """A stream for ``c``, its prompt fed (cut to the model's block), in the rows after the others'."""
        prompt = (c.prompt or [start_token])[-self.model.block_size :]
        context = torch.tensor([prompt], device=self.device).expand(c.n, -1)  # (n, T)
        sampler = Sampler(c.n, self.model.vocab_size, temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
                          generator=generator, device=self.device)
        rows = None
        if not isinstance(self.model, Bigram):
            start = sum(s.n for s in self.streams)
            if self.decoder is not None:
                if self.pool is None:
                    self.pool = Pool(self.model, start + c.n, self.device)
                self.pool.grow(start + c.n)
            rows = Rows(self.model, self.decoder, self.pool, context, start)
        stream = Stream(sampler, rows, self.model, context)
        self.streams.append(stream)
        return stream

    def keep(self, going: list[Stream]) -> None:
        """Only ``going`` stay in flight: the others' rows are given back, the rows after them move up."""
        if len(going) == len(self.streams):
            return
        if self.pool is not None and going:
            order = [torch.arange(s.rows.start, s.rows.start + s.n) for s in going]
            self.pool.keep(torch.cat(order).to(self.device))
        start = 0
        for s in going:
            if s.rows is not None:
                s.rows.start = start
            start += s.n
        self.streams = list(going)

    def draw(self) -> list[int]:
        """The next token of every sample of the drawing streams, in the order they joined, drawn
        together (``draw_together``: what each stream's sampler would draw alone)."""
        streams = [s for s in self.streams if s.drawing]
        if not streams:
            return []
        tokens = draw_together([s.sample for s in streams], [s.logits for s in streams])  # (R,)
        if len(streams) == 1:
            streams[0].took(tokens)
        else:
            for s, token in zip(streams, tokens.split([s.n for s in streams]), strict=True):
                s.took(token)
        return tokens.tolist()

    def step(self) -> None:
        """Every stream in flight one token further (each has drawn its token)."""
        if isinstance(self.model, Bigram):
            for s in self.streams:
                s.bigram_logits = self.model(s.token[:, None])[:, -1]
            return
        if self.decoder is None or not self.batch:
            for s in self.streams:
                s.rows.ready()
                s.rows.step()
        elif self.streams:
            waiting = self._make_room()
            step_rows(self.decoder, self.pool, [s.rows for s in self.streams], waiting)

    def _make_room(self) -> frozenset[int]:
        """Refill the full caches together once one has waited ``WAIT_ROUNDS`` rounds, or when no
        stream could step without a refill; the numbers of the streams that wait on."""
        full = [i for i, s in enumerate(self.streams) if s.rows.full]
        if not full:
            return frozenset()
        longest = max(self.streams[i].waited or 0 for i in full)
        if len(full) == len(self.streams) or longest >= WAIT_ROUNDS:
            refill_together(self.decoder, self.pool, [self.streams[i].rows for i in full])
            for i in full:
                self.streams[i].waited = None
            return frozenset()
        for i in full:
            waited = self.streams[i].waited
            self.streams[i].waited = 0 if waited is None else waited + 1
        return frozenset(full)

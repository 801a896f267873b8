"""One decode step for everything that generates: ``gptiny sample``, the server's batch, the notebooks.

Samples decode as rows of one cache (``Pool``): keys and values (L, 2, R, H, S, D), preallocated, and
each row's position on the device. A step (``Decoder.step``) feeds one new token to every row of a
contiguous range of rows, each at its own position: the linear layers and feed-forward take the
rows as one matrix, and one attention call per layer covers them all, each row masked to the
slots it has filled. So the one sequence of ``gptiny sample`` and sixteen requests at sixteen
positions in a server run the same code, and a seed gives the same text in both (with int8
weights, up to a batch of ``inference.DENSE_ROWS`` rows).

Nothing in a batch's step depends on a value read back from the device: the positions are a
device tensor, the cache is not sliced to a length, the rotary frequencies are built once; that
is what lets a GPU replay the step as a graph. One prompt's rows share a position the host
knows, and their step reads only the slots filled so far, which is faster on a CPU.

``Rows`` are one prompt's n samples (the rows a..b of a pool): it feeds the prompt, and refills a
full fixed cache (learned positions) before the step that would overflow it, by itself or, in a
server's batch, with other full rows in one prompt pass (``refill_together``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.model import GPT, Block, KVCache


class Pool:
    """Cache rows for samples at positions of their own: ``kv`` (L, 2, R, H, S, D), every layer's
    keys and values (``keys``, ``values``: its two halves), in float32 (attention over a cache in
    bfloat16 is slow on CPUs), and ``positions`` (R,), what each row has been fed. One tensor for
    both, so that a step stores a layer's new key and value in one operation. A rolling pool
    (rotary positions) keeps each row's newest S positions."""

    def __init__(self, model: GPT, rows: int, device: torch.device) -> None:
        cfg = model.cfg
        self.kv = torch.zeros(cfg.n_layer, 2, rows, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head,
                              device=device)
        self.rolling = cfg.position == "rope"
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)

    @property
    def keys(self) -> torch.Tensor:
        return self.kv[:, 0]  # (L, R, H, S, D)

    @property
    def values(self) -> torch.Tensor:
        return self.kv[:, 1]

    @property
    def rows(self) -> int:
        return self.kv.shape[2]

    @property
    def capacity(self) -> int:
        return self.kv.shape[4]

    def view(self, start: int, stop: int) -> KVCache:
        """Rows start..stop as an empty KVCache (in place), for a prompt pass of the model into them."""
        return KVCache(self.keys[:, start:stop], self.values[:, start:stop], rolling=self.rolling)

    def grow(self, rows: int) -> None:
        """Room for at least ``rows`` rows, the filled ones kept (doubling, so growth is rare)."""
        if rows <= self.rows:
            return
        new = max(rows, 2 * self.rows)
        grown = self.kv.new_zeros((*self.kv.shape[:2], new, *self.kv.shape[3:]))
        grown[:, :, : self.rows] = self.kv
        self.kv = grown
        self.positions = torch.cat([self.positions, self.positions.new_zeros(new - len(self.positions))])

    def keep(self, rows: torch.Tensor) -> None:
        """Move the listed rows (in that order) to the front, dropping the others' contents."""
        n = len(rows)
        self.kv[:, :, :n] = self.kv[:, :, rows]
        self.positions[:n] = self.positions[rows]


class Decoder:
    """One new position for each row of a pool, in fewer operations than the model's forward pass.

    The layers' own norms, linear layers and feed-forward functions, called directly, on (R, C)
    rows. Tests hold its logits to the model's full forward pass.
    """

    def __init__(self, model: GPT) -> None:
        cfg = model.cfg
        self.model = model
        self.heads, self.width, self.rotary = cfg.n_head, cfg.n_embd, cfg.position == "rope"
        self.tok_emb = model.tok_emb.weight  # (V, C)
        self.pos_emb = None if self.rotary else model.pos_emb.weight  # (S, C)
        self.layers = [(b.ln1.forward, b.attn.qkv.forward, b.attn.proj.forward, b.ln2.forward, b.ffn.forward)
                       for b in model.blocks]
        self.ln_f, self.head = model.ln_f.forward, model.head.forward
        D = cfg.n_embd // cfg.n_head
        device = model.tok_emb.weight.device
        self.inv_freq = 10000.0 ** (-torch.arange(0, D, 2, device=device).float() / D)  # (D/2,), as model.Rotary
        self.slots = torch.arange(cfg.block_size, device=device)  # (S,)

    def prefill(self, context: torch.Tensor, pool: Pool, start: int, logits: bool = True) -> torch.Tensor | None:
        """Feed the contexts (n, T) to rows start..start + n (which forget what they held): the last
        logits (n, V), or, without ``logits``, None: a refill needs only the keys and values."""
        n, T = context.shape
        cache = pool.view(start, start + n)
        last = self.model(context, cache)[:, -1] if logits else self.keys_and_values(context, cache)
        pool.positions[start : start + n] = T
        return last

    def keys_and_values(self, context: torch.Tensor, cache: KVCache) -> None:
        """Store every layer's keys and values of the contexts (n, T) in ``cache``, as the model's
        forward pass does, but no further: past the last layer's keys and values, its attention,
        feed-forward and the head would serve only logits. A refill costs a fifth less."""
        x, rope = self.model.embed(context)  # (n, T, C)
        *first, last = self.model.blocks
        for layer, block in enumerate(first):
            x = block(x, rope, cache, layer)
        n, T, C = x.shape
        qkv = last.attn.qkv(last.ln1(x)).view(n, T, 3, self.heads, C // self.heads)  # as CausalSelfAttention splits
        k, v = qkv[:, :, 1:].permute(2, 0, 3, 1, 4)  # (n, H, T, D) each, in the weights' dtype as there
        cache.update(len(first), rope.rotate(k) if rope is not None else k, v)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (R, H, D) rotated as model.Rotary rotates a position: each row by its own angles (R, 1, D/2)."""
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def step(self, tokens: torch.Tensor, pool: Pool, start: int = 0, position: int | None = None) -> torch.Tensor:
        """Logits (R, V) for one new token per row, tokens (R,), fed to rows start..start + R of ``pool``.

        ``position``: every row's position, when they share one the host knows (one prompt's
        samples); the step then reads only the filled slots, which on a CPU makes one stream's step
        a fifth faster. Without it each row is masked to its own slots: rows at different
        positions, and a step that reads nothing back from the device. A fixed (learned-position)
        row must have room (position < S); a rolling row overwrites its oldest slot.
        """
        R, H, C = tokens.shape[0], self.heads, self.width
        S, rows = pool.capacity, slice(start, start + R)
        positions = pool.positions[rows]  # (R,)
        x = F.embedding(tokens, self.tok_emb)  # (R, C)
        if self.rotary:
            angles = positions.float()[:, None, None] * self.inv_freq  # (R, 1, D/2)
            cos, sin = angles.cos(), angles.sin()
        elif position is not None:
            x = x + self.pos_emb[position]  # a view: no index tensor
        else:
            x = x + F.embedding(positions, self.pos_emb)
        if position is None:
            (store, mask), seen = self._where(positions, S), S
        else:  # one slot for every row, the filled ones read without a mask
            store, mask, seen = (slice(None), slice(None), slice(None), position % S), None, min(position + 1, S)
        for layer, (ln1, qkv, proj, ln2, ffn) in enumerate(self.layers):
            qkv_rows = qkv(ln1(x)).float().view(R, 3, H, C // H)  # (R, 3, H, D), in the pool's dtype
            q, new = qkv_rows[:, 0], qkv_rows[:, 1:]  # (R, H, D); this position's key and value (R, 2, H, D)
            if self.rotary:
                q = self._rotate(q, cos, sin)
                new[:, 0] = self._rotate(new[:, 0], cos, sin)
            layer_kv = pool.kv[layer, :, rows]  # (2, R, H, S, D)
            layer_kv[store] = new if mask is not None else new.transpose(0, 1)  # indexed by tensors: rows first
            keys, values = layer_kv  # (R, H, S, D) each
            if mask is None:
                y = F.scaled_dot_product_attention(q[:, :, None], keys[:, :, :seen], values[:, :, :seen])
            else:
                y = masked_attention(q, keys, values, mask)
            x = x + proj(y.reshape(R, C).to(x.dtype))  # y (R, H, 1, D) or (R * H, 1, D)
            x = x + ffn(ln2(x))
        pool.positions[rows] += 1
        return self.head(self.ln_f(x))  # (R, V)

    def _where(self, positions: torch.Tensor, S: int) -> tuple[tuple, torch.Tensor]:
        """For rows at positions (R,) of their own: the index of each row's new slot in a layer's keys
        and values (2, R, H, S, D), and the additive mask (R * H, 1, S) that hides the slots a row has
        not filled, from every head."""
        R = len(positions)
        filled = torch.clamp(positions + 1, max=S)  # (R,) slots that hold a position, the new one included
        mask = torch.zeros(R, self.heads, 1, S, device=positions.device)
        mask.masked_fill_(self.slots >= filled[:, None, None, None], float("-inf"))  # one mask for every layer
        slot = (slice(None), torch.arange(R, device=positions.device), slice(None), positions % S)
        return slot, mask.view(R * self.heads, 1, S)


def masked_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One query a row and head, q (R, H, D), over every slot of keys and values (R, H, S, D), the
    additive ``mask`` (R * H, 1, S) hiding the empty ones: (R * H, 1, D).

    Written out as two batched matrix products: on a CPU, 20% faster a batch step than the fused
    kernel, whose per-(row, head) blocks suit long queries, not one (benchmarks/README.md).
    """
    R, H, S, D = keys.shape
    scores = torch.baddbmm(mask, q.reshape(R * H, 1, D), keys.view(R * H, S, D).transpose(1, 2),
                           alpha=D**-0.5)  # (R * H, 1, S)
    return torch.bmm(torch.softmax(scores, dim=-1), values.view(R * H, S, D))


def decoder_for(model: nn.Module) -> Decoder | None:
    """A Decoder for a GPT built of the package's own blocks; None for another model (a bigram, or
    blocks of its own), which generates through its own forward pass instead."""
    if type(model) is GPT and all(type(block) is Block for block in model.blocks):
        return Decoder(model)
    return None


def refill(recent: list[torch.Tensor], capacity: int) -> list[torch.Tensor]:
    """What a full fixed (learned-position) cache keeps of the tokens it was fed before taking the
    next: its newest quarter block less one, so that with the next token it holds a quarter block
    and the next three quarters of a block of steps need no refill.

    A quarter rather than half a block: on the ten-minute recipe's model the loss of text decoded
    this way was 1.4348 against 1.4333, and refilling costs about half as much a character
    (benchmarks/README.md).
    """
    keep = capacity // 4 - 1  # 0 below a block of 8, where recent[-0:] would be the whole list
    return recent[-keep:] if keep > 0 else []


class Rows:
    """One prompt's n samples as they decode: their rows of a pool (or, for a model a Decoder cannot
    take, a cache of their own), the tokens a full fixed cache is refilled from, the next logits.

    ``ready()`` before each step refills a full fixed cache with the newest positions (one prompt
    pass), so that the step can take the new token; the step itself is ``Decoder.step`` over these
    rows, alone (``step``) or with others (``step_rows``), or the model's own forward pass.
    """

    def __init__(self, model: nn.Module, decoder: Decoder | None, pool: Pool | None, context: torch.Tensor,
                 start: int = 0) -> None:
        self.model, self.decoder, self.pool, self.start = model, decoder, pool, start
        self.n, self.length = context.shape[0], context.shape[1]
        self.capacity = model.block_size
        self.cache = None if decoder is not None else model.new_cache(self.n, context.device, torch.float32)
        self.rolling = pool.rolling if pool is not None else self.cache.rolling
        self.recent = [] if self.rolling else list(context.unbind(1))  # (n,) per position fed
        self.logits = self._feed_context(context)  # (n, V)
        self.token = torch.empty(0)

    def _feed_context(self, context: torch.Tensor, logits: bool = True) -> torch.Tensor | None:
        """The context fed to rows that forget what they held: its last logits (n, V), when asked for
        (after a refill the next step makes them; a Decoder then spares the work)."""
        if self.decoder is not None:
            return self.decoder.prefill(context, self.pool, self.start, logits)
        self.cache.length = 0
        return self.model(context, self.cache)[:, -1]

    @property
    def full(self) -> bool:
        """A fixed cache with no room for the next step: it must be refilled first."""
        return not self.rolling and self.length >= self.capacity

    def ready(self) -> None:
        """Make room for the next step: a full fixed cache keeps its newest positions (``refill``)."""
        if not self.full:
            return
        self.recent = refill(self.recent, self.capacity)
        self.length = len(self.recent)
        if self.recent:
            self._feed_context(torch.stack(self.recent, dim=1), logits=False)
        elif self.decoder is not None:
            self.pool.positions[self.start : self.start + self.n] = 0
        else:
            self.cache.length = 0

    def step(self) -> None:
        """Feed this prompt's tokens by themselves: the decoder's step over its rows, or the model's forward."""
        if self.decoder is not None:
            self.took(self.decoder.step(self.token, self.pool, self.start, self.length))
        else:
            self.took(self.model(self.token[:, None], self.cache)[:, -1])

    def took(self, logits: torch.Tensor) -> None:
        """The step fed ``token``: keep its logits (n, V) for the next draw."""
        self.length += 1
        if not self.rolling:
            self.recent.append(self.token)
        self.logits = logits


def refill_together(decoder: Decoder, pool: Pool, group: list[Rows]) -> None:
    """Refill the full fixed caches of ``group``, rows anywhere in ``pool``, in one prompt pass.

    Each keeps what ``Rows.ready`` would keep, computed as one batch: 16 rows of the CPU config
    refill in 4.6 times the time of one in int8 (benchmarks/README.md). The keys and values are
    made in a cache of just the kept positions, then copied to the rows' first slots.
    """
    kept = [refill(g.recent, g.capacity) for g in group]
    rows = torch.cat([torch.arange(g.start, g.start + g.n) for g in group]).to(pool.kv.device)
    keep = len(kept[0])  # the same for every row: it depends on the block alone
    if keep:
        context = torch.cat([torch.stack(k, dim=1) for k in kept])  # (rows, keep)
        kv = pool.kv.new_empty((*pool.kv.shape[:2], len(rows), *pool.kv.shape[3:4], keep, pool.kv.shape[5]))
        decoder.keys_and_values(context, KVCache(kv[:, 0], kv[:, 1]))  # (L, 2, rows, H, keep, D)
        pool.kv[:, :, rows, :, :keep] = kv
    pool.positions[rows] = keep
    for g, k in zip(group, kept, strict=True):
        g.recent, g.length = k, keep


def step_rows(decoder: Decoder, pool: Pool, group: list[Rows], waiting: frozenset[int] = frozenset()) -> None:
    """One step for every row of ``group``, which hold rows 0..R of ``pool`` in order, as one batch.

    The groups numbered in ``waiting`` are full fixed caches waiting to be refilled: their rows
    are stepped along (one contiguous batch is cheaper than leaving rows out) at position 0,
    which their refill overwrites, and take nothing from the step.
    """
    if len(group) == 1 and not waiting:
        group[0].step()
        return
    for i in waiting:
        pool.positions[group[i].start : group[i].start + group[i].n] = 0
    logits = decoder.step(torch.cat([g.token for g in group]), pool)  # (R, V)
    for i, (g, part) in enumerate(zip(group, logits.split([g.n for g in group]), strict=True)):
        if i not in waiting:
            g.took(part)

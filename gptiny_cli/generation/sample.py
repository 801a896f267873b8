"""Text generation: the logits-to-probabilities maths as pure functions, and the decoding loops.

With a KV cache each new character costs one position instead of the whole context. Past
block_size characters the context has to slide, and how depends on the positions:

- Rotary positions: the cache rolls (``KVCache``), each new character attending to the
  block_size - 1 characters before it. That is exactly what running the whole text through
  the model with a sliding attention window gives, which is what the plain loop does.
- Learned positions: position block_size has no embedding, so when the cache is full it is
  refilled from the last quarter block of text (one forward pass over it). From then on, until
  it is full again, each new character is predicted from the last 64 to 256 characters
  (block 256) instead of always the last 256, as the plain loop does by cropping the text
  to the last block_size characters at every step. A fuller refill would condition slightly
  better and cost more: it would come around more often, and each would be longer.

A prompt longer than block_size is cut to its last block_size characters, in both loops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from gptiny_cli.data import TextStream
from gptiny_cli.errors import GptinyError
from gptiny_cli.generation.decode import Pool, Rows, decoder_for
from gptiny_cli.model import Bigram

SEEDS = range(-(2**63), 2**64)  # what torch.Generator.manual_seed takes: a signed or unsigned 64-bit integer


def seeded_generator(device: torch.device | str, seed: int | None) -> torch.Generator:
    """The random source of the draws on ``device``: seeded for reproducible text, else from the OS."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    elif seed in SEEDS:
        generator.manual_seed(seed)
    else:
        raise GptinyError(f"seed {seed} is out of range: give an integer from {SEEDS.start} to {SEEDS.stop - 1}")
    return generator


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits (..., V) divided by temperature (> 0), those outside top-k or top-p set to -inf.

    top_k keeps exactly the k largest logits, ties broken by token index; top_p then keeps the
    smallest set of most likely tokens whose probability reaches top_p (always at least one).
    """
    logits = logits.float() / temperature
    if 0 < top_k < logits.size(-1):
        order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # (..., V)
        drop = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, order[..., :top_k], False)
        logits = logits.masked_fill(drop, float("-inf"))
    if top_p < 1.0:
        probs, order = torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True, stable=True)
        before = probs.cumsum(dim=-1) - probs  # the mass of the more likely tokens
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def logits_to_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Next-token probabilities (..., V) from logits (..., V); temperature must be > 0."""
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)


class Sampler:
    """Picks each row's next token from its logits (B, V), reproducibly for a seeded generator.

    A draw uses the Gumbel-max trick: the argmax of the filtered logits plus independent Gumbel
    noise is distributed exactly as ``logits_to_probs``. The noise is drawn ahead, ``chunk``
    steps at a time, so a step costs two tensor operations, and the draw at step t depends only
    on the generator and t, never on how the logits were computed (cached or not). The noise
    is drawn on the generator's device and moved to the logits' device.
    Temperature 0 takes the most likely token (the lowest index among equals).
    """

    def __init__(
        self, batch: int, vocab: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
        generator: torch.Generator | None = None, device: torch.device | None = None, chunk: int = 256,
    ) -> None:
        self.shape = (chunk, batch, vocab)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.plain = not (0 < top_k < vocab) and top_p >= 1.0
        self.generator, self.device = generator, device
        self.noise = torch.empty(0)
        self.step = 0

    def gumbel(self) -> torch.Tensor:
        if self.step == len(self.noise):
            # Drawn where the generator lives (a CPU generator may drive a GPU model), then moved.
            where = self.generator.device if self.generator is not None else self.device
            uniform = torch.rand(self.shape, generator=self.generator, device=where).to(self.device)
            self.noise = -torch.log(-torch.log(uniform))  # (chunk, B, V); uniform 0 gives -inf
            self.step = 0
        self.step += 1
        return self.noise[self.step - 1]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return torch.argmax(logits, dim=-1)  # (B,)
        noise = self.gumbel()  # (B, V)
        if self.plain:  # as draw_together computes it, so that a batch draws what each would alone
            return (logits.float() * (1 / self.temperature)).add_(noise).argmax(dim=-1)
        return (filter_logits(logits, self.temperature, self.top_k, self.top_p) + noise).argmax(dim=-1)


def draw_together(samplers: list[Sampler], logits: list[torch.Tensor]) -> torch.Tensor:
    """The next token of every row of every sampler, in order (R,): each sampler's rows get exactly
    what it draws alone (its own generator's noise). When every sampler is plain (a temperature
    above 0 and no filter), their rows are drawn as one operation instead of one per sampler."""
    if len(samplers) == 1:
        return samplers[0](logits[0])
    if not all(s.plain and s.temperature > 0 for s in samplers):
        return torch.cat([sample(rows) for sample, rows in zip(samplers, logits, strict=True)])
    noise = torch.cat([s.gumbel() for s in samplers])  # (R, V)
    if len({s.temperature for s in samplers}) == 1:  # one scalar for all, as each sampler takes it
        return (torch.cat(logits).float() * (1 / samplers[0].temperature)).add_(noise).argmax(dim=-1)
    inverse = torch.tensor([1 / s.temperature for s, rows in zip(samplers, logits, strict=True)
                            for _ in range(len(rows))],
                           dtype=torch.float32, device=noise.device)  # (R,), as the scalar is taken
    return (torch.cat(logits).float() * inverse[:, None]).add_(noise).argmax(dim=-1)


def plain_context(model: nn.Module) -> int:
    """How many of the latest characters the plain loop runs the model on at every step.

    With learned positions, block_size. With rotary positions the window slides one attention
    layer at a time, so the last character depends on n_layer * (block_size - 1) before it.
    """
    cfg = model.cfg
    return cfg.n_layer * (cfg.block_size - 1) + 1 if cfg.position == "rope" else cfg.block_size


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt: list[int],
    n_tokens: int,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    start_token: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield ``n_tokens`` steps of (num_samples,) token ids continuing ``prompt``.

    An empty prompt starts from ``start_token``, which is not part of the output. Stop
    iterating to stop early.
    """
    model.eval()
    device = next(model.parameters()).device
    prompt = (prompt or [start_token])[-model.block_size :]
    context = torch.tensor([prompt], device=device).expand(num_samples, -1)  # (B, T)
    sample = Sampler(num_samples, model.vocab_size, temperature=temperature, top_k=top_k, top_p=top_p,
                     generator=generator, device=device)
    if isinstance(model, Bigram):  # the next character depends on the current one alone
        steps = _bigram_steps(model, context[:, -1:], n_tokens, sample)
    elif use_cache:
        steps = _cached_steps(model, context, n_tokens, sample)
    else:
        steps = _plain_steps(model, context, n_tokens, sample)
    yield from steps


def _bigram_steps(model: nn.Module, token: torch.Tensor, n_tokens: int, sample: Sampler) -> Iterator[torch.Tensor]:
    for _ in range(n_tokens):
        token = sample(model(token)[:, -1])
        yield token
        token = token[:, None]


def _plain_steps(model: nn.Module, context: torch.Tensor, n_tokens: int, sample: Sampler) -> Iterator[torch.Tensor]:
    """Re-run the model on the latest ``plain_context`` characters for every new one."""
    keep = plain_context(model)
    for _ in range(n_tokens):
        token = sample(model(context[:, -keep:])[:, -1])  # (B,)
        context = torch.cat([context[:, -keep:], token[:, None]], dim=1)
        yield token


def _cached_steps(model: nn.Module, context: torch.Tensor, n_tokens: int, sample: Sampler) -> Iterator[torch.Tensor]:
    """Feed the prompt once, then one position per character, as the server's batch does (``Rows``)."""
    decoder = decoder_for(model)
    pool = Pool(model, context.shape[0], context.device) if decoder is not None else None
    rows = Rows(model, decoder, pool, context)
    for step in range(n_tokens):
        rows.token = sample(rows.logits)
        yield rows.token
        if step + 1 == n_tokens:
            return
        rows.ready()
        rows.step()


@dataclass
class SampleText:
    """One sample's generated text as it grows, ended where any of its stop strings first appears
    (the stop string not included).

    ``pending`` holds the generated characters that might be the start of a stop string: they
    are not yet known to belong to the text.
    """

    stops: tuple[str, ...] = ()
    text: str = ""
    pending: str = ""
    generated: int = 0  # characters the model produced for this sample, a stop string included
    tokens: int = 0  # tokens drawn for it, likewise
    stopped: bool = False
    seconds: float = 0.0  # from the start of generation until this sample ended

    def add(self, chars: str) -> str:
        """Take newly generated characters; return those that now certainly belong to the text."""
        if self.stopped:
            return ""
        self.generated += len(chars)
        if not self.stops:  # nothing to look for: every character is the text's (the server's usual case)
            return self._accept(chars)
        buffer = self.pending + chars
        found = [at for at in (buffer.find(stop) for stop in self.stops if stop) if at >= 0]
        if found:
            self.stopped, self.pending = True, ""
            return self._accept(buffer[: min(found)])
        hold = max((self._held(buffer, stop) for stop in self.stops), default=0)
        self.pending = buffer[len(buffer) - hold :]
        return self._accept(buffer[: len(buffer) - hold])

    @staticmethod
    def _held(buffer: str, stop: str) -> int:
        """How many characters at the end of ``buffer`` could be the start of ``stop``."""
        return next((n for n in range(min(len(stop) - 1, len(buffer)), 0, -1) if stop.startswith(buffer[-n:])), 0)

    def finish(self) -> str:
        """End without a stop string: what was pending belongs to the text after all."""
        rest, self.pending = self.pending, ""
        return self._accept(rest)

    def _accept(self, chars: str) -> str:
        self.text += chars
        return chars


def follow(
    steps: Iterator[torch.Tensor], table: Sequence[str] | Sequence[bytes], samples: list[SampleText],
    on_text: Callable[[int, str], None] | None = None, clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Turn token steps into ``samples``' texts, calling ``on_text(i, text)`` as sample i grows.

    ``table`` gives each id's text: its character (a character vocabulary's ``pieces``) or its bytes
    (``token_bytes``, which BPE needs: a token may end inside a character, held back until whole).
    Stops drawing once every sample has met its stop string. Interrupted (Ctrl-C), the samples
    still end properly, with what was generated until then.
    """
    start = clock()
    texts = [_texts(table) for _ in samples]
    try:
        for tokens in steps:
            for i, token in enumerate(tokens.tolist()):
                sample = samples[i]
                if sample.stopped:
                    continue
                sample.tokens += 1
                accepted = sample.add(texts[i](token))
                if on_text and accepted:
                    on_text(i, accepted)
                if sample.stopped:
                    sample.seconds = clock() - start
            if all(sample.stopped for sample in samples):
                return
    finally:
        for i, sample in enumerate(samples):
            if not sample.stopped:
                sample.seconds = clock() - start
                sample.add(texts[i](None))
                rest = sample.finish()
                if on_text and rest:
                    on_text(i, rest)


def _texts(table: Sequence[str] | Sequence[bytes]) -> Callable[[int | None], str]:
    """Each token's text, or (given None) what a byte stream holds back at its end."""
    if table and isinstance(table[0], str):
        return lambda token: "" if token is None else table[token]
    stream = TextStream(tuple(table))
    return lambda token: stream.flush() if token is None else stream.push(token)

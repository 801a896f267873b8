"""``POST /api/explain``: for a text, what the model predicted at each position and where each head
looked, within one block of the text (the positions the model sees at once). ``POST /api/tokenize``:
how a text splits into those positions, for a page that lets its reader pick one.

Request: ``{"text": str, "top": 10, "positions": [int, ...] | null}``, positions indexing the text's
tokens (its characters, for a character run; default: every position of its last block); the block
ends at the last of them. Per position t the response has the token there, the ``top`` most likely
tokens to follow it with their probabilities, the one that did follow (``next``, null at the end of
the text), and per layer and head the weights that t gave positions 0..t of the block. A token is
shown as ``vocab.pieces`` shows it, under the key that ``unit`` names: ``char`` for a character
run, ``piece`` for BPE (bytes that are not whole characters written ``\\xNN``); ``pieces`` holds
the block's, as its ``text`` cannot be cut at tokens that end inside a character.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch.nn as nn

from gptiny_cli.data import TextStream, Tokenizer
from gptiny_cli.errors import GptinyError
from gptiny_cli.report.attention import insight, top_next
from gptiny_cli.serve.protocol import ApiError, check_characters, is_int, units

DIGITS = 5
# Each position's answer holds layers × heads × up to block_size weights: capped, so one request
# cannot have the worker build (and the client read) millions of numbers.
MAX_POSITIONS = 64


@dataclass
class ExplainRequest:
    tokens: list[int]  # the block of the text that ends at the last position asked about
    offset: int  # where it starts in the text's tokens
    positions: list[int]  # within the block
    top: int
    after: list[int]  # the token after the block, if the text has one


def _text(body: dict, empty: bool = False) -> str:
    text = body.get("text")
    if not isinstance(text, str) or not (text or empty):
        expected = "a string" if empty else "a non-empty string"
        raise ApiError(400, f"'text' must be {expected}, not {json.dumps(text)}", param="text", code="invalid_type")
    return text


def parse_explain(body: dict, vocab: Tokenizer, block_size: int) -> ExplainRequest:
    text = _text(body)
    check_characters("text", text, vocab)
    top = body.get("top", 10)
    if not is_int(top) or not 1 <= top <= vocab.size:
        raise ApiError(400, f"'top' must be an integer from 1 to {vocab.size}, not {json.dumps(top)}", param="top")
    tokens, unit = vocab.encode(text), units(vocab)
    wanted = body.get("positions")
    if wanted is None:
        wanted = list(range(max(0, len(tokens) - min(block_size, MAX_POSITIONS)), len(tokens)))
    if not isinstance(wanted, list) or not wanted or not all(is_int(p) and 0 <= p < len(tokens) for p in wanted):
        raise ApiError(400, f"'positions' must be a non-empty list of indices into the text's {unit}, "
                            f"0 to {len(tokens) - 1}", param="positions")
    wanted = sorted(set(wanted))
    if len(wanted) > MAX_POSITIONS:
        raise ApiError(400, f"'positions' has {len(wanted)} positions; at most {MAX_POSITIONS} per request",
                       param="positions")
    last = max(wanted)
    offset = max(0, last + 1 - block_size)
    if min(wanted) < offset:
        raise ApiError(400, f"'positions' must lie within one block ({block_size} {unit}) of each other",
                       param="positions")
    return ExplainRequest(tokens[offset : last + 1], offset, [p - offset for p in wanted], top,
                          tokens[last + 1 : last + 2])


def explain_json(model: nn.Module, vocab: Tokenizer, wanted: ExplainRequest) -> bytes:
    """The explanation as the response's bytes, built on the worker: on the event loop, turning
    thousands of floats into JSON would hold up every stream."""
    return json.dumps(explain(model, vocab, wanted), ensure_ascii=False).encode()


def explain(model: nn.Module, vocab: Tokenizer, wanted: ExplainRequest) -> dict:
    """The explanation of ``wanted``'s positions (run on the thread that owns the model)."""
    try:
        seen = insight(model, wanted.tokens)
    except GptinyError as error:
        raise ApiError(400, str(error), code="no_attention") from None
    pieces, key = vocab.pieces, "char" if vocab.kind == "char" else "piece"
    tops = top_next(seen.probs[wanted.positions], pieces, wanted.top)
    positions = []
    for t, top in zip(wanted.positions, tops, strict=True):
        rest = wanted.tokens[t + 1 :] + wanted.after
        following = rest[0] if rest else None
        positions.append({
            "index": wanted.offset + t,
            key: pieces[wanted.tokens[t]],
            "top": [{key: c, "prob": round(p, DIGITS)} for c, p in top],
            "next": None if following is None else {key: pieces[following],
                                                    "prob": round(seen.probs[t, following].item(), DIGITS)},
            "attention": [[[round(w, DIGITS) for w in head[: t + 1]] for head in layer]
                          for layer in seen.attention[:, :, t].tolist()],
        })
    layers, heads = seen.attention.shape[:2]
    return {"unit": key, "text": vocab.decode(wanted.tokens), "pieces": [pieces[i] for i in wanted.tokens],
            "offset": wanted.offset, "layers": layers, "heads": heads, "positions": positions}


def tokenized(body: dict, vocab: Tokenizer) -> dict:
    """``/api/tokenize``: a text's tokens, their pieces, and the text each one completes (empty for
    one that ends inside a character, whose bytes the next completes); the texts join into the text."""
    text = _text(body, empty=True)
    check_characters("text", text, vocab)
    tokens = vocab.encode(text)
    stream = TextStream(vocab.token_bytes)
    return {"tokens": tokens, "pieces": [vocab.pieces[t] for t in tokens], "texts": [stream.push(t) for t in tokens]}

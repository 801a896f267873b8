"""``POST /api/explain``: for a text, what the model predicted at each position and where each head
looked, within one block of the text (the positions the model sees at once).

Request: ``{"text": str, "top": 10, "positions": [int, ...] | null}``, positions indexing the text
(default: every position of its last block); the block ends at the last of them. Per position t
the response has the character there, the ``top`` most likely characters to follow it with their
probabilities, the one that did follow (``next``, null at the end of the text), and per layer and
head the weights that t gave positions 0..t of the block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch.nn as nn

from gptiny_cli.data import Vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.report.attention import insight, top_next
from gptiny_cli.serve.protocol import ApiError, check_characters, is_int

DIGITS = 5
# Each position's answer holds layers × heads × up to block_size weights: capped, so one request
# cannot have the worker build (and the client read) millions of numbers.
MAX_POSITIONS = 64


@dataclass
class ExplainRequest:
    tokens: list[int]  # the block of the text that ends at the last position asked about
    offset: int  # where it starts in the text
    positions: list[int]  # within the block
    top: int
    after: list[int]  # the character after the block, if the text has one


def parse_explain(body: dict, vocab: Vocab, block_size: int) -> ExplainRequest:
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise ApiError(400, f"'text' must be a non-empty string, not {json.dumps(text)}", param="text",
                       code="invalid_type")
    check_characters("text", text, vocab)
    top = body.get("top", 10)
    if not is_int(top) or not 1 <= top <= vocab.size:
        raise ApiError(400, f"'top' must be an integer from 1 to {vocab.size}, not {json.dumps(top)}", param="top")
    wanted = body.get("positions")
    if wanted is None:
        wanted = list(range(max(0, len(text) - min(block_size, MAX_POSITIONS)), len(text)))
    if not isinstance(wanted, list) or not wanted or not all(is_int(p) and 0 <= p < len(text) for p in wanted):
        raise ApiError(400, f"'positions' must be a non-empty list of indices into the text, 0 to {len(text) - 1}",
                       param="positions")
    wanted = sorted(set(wanted))
    if len(wanted) > MAX_POSITIONS:
        raise ApiError(400, f"'positions' has {len(wanted)} positions; at most {MAX_POSITIONS} per request",
                       param="positions")
    offset = max(0, max(wanted) + 1 - block_size)
    if min(wanted) < offset:
        raise ApiError(400, f"'positions' must lie within one block ({block_size} characters) of each other",
                       param="positions")
    tokens = vocab.encode(text[offset : max(wanted) + 2])
    return ExplainRequest(tokens[: max(wanted) + 1 - offset], offset, [p - offset for p in wanted], top,
                          tokens[max(wanted) + 1 - offset :])


def explain_json(model: nn.Module, chars: tuple[str, ...], wanted: ExplainRequest) -> bytes:
    """The explanation as the response's bytes, built on the worker: on the event loop, turning
    thousands of floats into JSON would hold up every stream."""
    return json.dumps(explain(model, chars, wanted), ensure_ascii=False).encode()


def explain(model: nn.Module, chars: tuple[str, ...], wanted: ExplainRequest) -> dict:
    """The explanation of ``wanted``'s positions (run on the thread that owns the model)."""
    try:
        seen = insight(model, wanted.tokens)
    except GptinyError as error:
        raise ApiError(400, str(error), code="no_attention") from None
    tops = top_next(seen.probs[wanted.positions], chars, wanted.top)
    positions = []
    for t, top in zip(wanted.positions, tops, strict=True):
        rest = wanted.tokens[t + 1 :] + wanted.after
        following = rest[0] if rest else None
        positions.append({
            "index": wanted.offset + t,
            "char": chars[wanted.tokens[t]],
            "top": [{"char": c, "prob": round(p, DIGITS)} for c, p in top],
            "next": None if following is None else {"char": chars[following],
                                                    "prob": round(seen.probs[t, following].item(), DIGITS)},
            "attention": [[[round(w, DIGITS) for w in head[: t + 1]] for head in layer]
                          for layer in seen.attention[:, :, t].tolist()],
        })
    layers, heads = seen.attention.shape[:2]
    return {"text": "".join(chars[i] for i in wanted.tokens), "offset": wanted.offset,
            "layers": layers, "heads": heads, "positions": positions}

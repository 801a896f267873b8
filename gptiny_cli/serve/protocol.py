"""OpenAI's completions protocol without the web framework: request bodies checked and turned into
``Completion``s, errors in OpenAI's shape, and the response and stream-chunk objects.

Every check names the parameter it is about, as OpenAI's own errors do, so a client library
shows the user which argument to fix.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from gptiny_cli.data import Tokenizer
from gptiny_cli.generation.sample import SEEDS
from gptiny_cli.serve.batch import Completion

MAX_N = 16
# Only a prompt's last block is read, so a body needs no more than 16 prompts of a long block.
MAX_BODY = 256_000  # bytes
# A BPE prompt is cut to this many characters per position of the block before it is encoded, so a
# long prompt costs no more than a short one; a token seldom spans more (a word is cut at spaces).
TAIL_CHARS_PER_TOKEN = 16


@dataclass
class Limits:
    """What the server lets a request ask for."""

    max_tokens: int = 2000
    max_n: int = MAX_N
    # Each prompt takes a place in the queue: more than it holds could never be accepted, and a
    # 503 would tell the client to retry for ever. ``gptiny serve`` lowers it to --queue-size.
    max_prompts: int = MAX_N
    # Samples in all (prompts × n): each is a row of every decode step for as long as it runs.
    max_samples: int = 4 * MAX_N


@dataclass
class Defaults:
    """Values for the parameters a request leaves out: the run's [sample] section, OpenAI's max_tokens."""

    temperature: float = 1.0
    top_k: int = 0
    max_tokens: int = 16


class ApiError(Exception):
    """An error response: HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def parse_json(raw: bytes) -> dict:
    """The JSON object of a request body, or a 400 that says what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:  # nesting deeper than Python's stack: malformed input, not a server fault
        raise ApiError(400, "the request body is not valid JSON: it is nested too deeply",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _wrong(param: str, expected: str, value: object) -> ApiError:
    return ApiError(400, f"'{param}' must be {expected}, not {json.dumps(value)}", param=param,
                    code="invalid_type" if not isinstance(value, (int, float)) else "invalid_value")


def _int(body: dict, param: str, default: int | None, low: int) -> int | None:
    value = body.get(param)
    if value is None:
        return default
    if not is_int(value) or value < low:
        raise _wrong(param, f"an integer of at least {low}", value)
    return value


def _number(body: dict, param: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(param)
    if value is None:
        return default
    if not _is_number(value) or value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise _wrong(param, f"a number in {interval}", value)
    return float(value)


def units(vocab: Tokenizer) -> str:
    """What a position of the model holds, as messages name it."""
    return "characters" if vocab.kind == "char" else "tokens"


def _prompts(body: dict, vocab: Tokenizer, most: int, block_size: int) -> tuple[list[list[int]], int]:
    """The prompts' tokens cut to their last ``block_size`` (all the model reads), and their tokens
    in all, for the usage: a character prompt's whole length, a BPE prompt's encoded tail."""
    prompt = body.get("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _wrong("prompt", "a string or a non-empty list of strings", prompt)
    if len(prompts) > most:
        raise ApiError(400, f"'prompt' has {len(prompts)} strings; at most {most} per request", param="prompt",
                       code="invalid_value")
    if vocab.kind == "char":
        tails = [p[len(p) - block_size :] if len(p) > block_size else p for p in prompts]
        check_characters("prompt", "".join(tails), vocab)
        return [vocab.encode(t) for t in tails], sum(len(p) for p in prompts)
    encoded = [vocab.encode(p[-TAIL_CHARS_PER_TOKEN * block_size :]) for p in prompts]
    return [tokens[-block_size:] for tokens in encoded], sum(len(tokens) for tokens in encoded)


def check_characters(param: str, text: str, vocab: Tokenizer) -> None:
    """A 400 listing the characters of ``text`` that the vocabulary lacks, if any."""
    unknown = "".join(vocab.unknown(text))
    if unknown:
        raise ApiError(400, f"'{param}' has characters this model's vocabulary lacks: "
                       f"{json.dumps(unknown, ensure_ascii=False)}", param=param, code="unknown_characters")


MAX_STOPS = 4  # as OpenAI's API


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _wrong("stop", "a non-empty string or a list of them", stop)
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"'stop' has {len(stops)} strings; give at most {MAX_STOPS}",
                       param="stop", code="invalid_value")
    return tuple(stops)


def parse_completion(body: dict, vocab: Tokenizer, limits: Limits, defaults: Defaults,
                     block_size: int) -> tuple[list[Completion], int]:
    """One ``Completion`` per prompt of a /v1/completions body and the prompts' tokens, or the
    ApiError for its first fault."""
    prompts, prompt_tokens = _prompts(body, vocab, limits.max_prompts, block_size)
    max_tokens = _int(body, "max_tokens", defaults.max_tokens, 1)
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"'max_tokens' is {max_tokens}, above this server's limit of {limits.max_tokens}",
                       param="max_tokens", code="invalid_value")
    n = _int(body, "n", 1, 1)
    if n > limits.max_n:
        raise ApiError(400, f"'n' is {n}; at most {limits.max_n} samples per prompt", param="n", code="invalid_value")
    if n * len(prompts) > limits.max_samples:
        raise ApiError(400, f"{len(prompts)} prompts × n {n} is {n * len(prompts)} samples; at most "
                            f"{limits.max_samples} per request", param="n", code="invalid_value")
    temperature = _number(body, "temperature", defaults.temperature, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    top_k = _int(body, "top_k", defaults.top_k, 0)
    seed = body.get("seed")
    if seed is not None and not (is_int(seed) and seed in SEEDS):
        raise _wrong("seed", f"an integer from {SEEDS.start} to {SEEDS.stop - 1}", seed)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _wrong("stream", "true or false", stream)
    stop = _stop(body)
    return [Completion(p, max_tokens, n, temperature, top_k, top_p, seed, stop)
            for p in prompts], prompt_tokens


def completion_object(request_id: str, model: str, texts: list[str], reasons: list[str],
                      prompt_tokens: int, generated: int) -> dict:
    """The response to a whole (not streamed) completion; usage counts tokens (a character run's are
    its characters)."""
    return {
        "id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"text": text, "index": i, "logprobs": None, "finish_reason": reason}
                    for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                  "total_tokens": prompt_tokens + generated},
    }


def chunk_event(request_id: str, model: str, index: int, text: str, reason: str | None) -> str:
    """One server-sent event of a streamed completion."""
    chunk = {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
             "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}]}
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

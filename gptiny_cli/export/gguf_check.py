"""The check of a GGUF export by its consumer: llama.cpp itself, through llama-cpp-python.

Three things, each against gptiny in float32: llama.cpp's tokenizer gives our ids for every
character and decodes them back; its logits over a random context of block_size characters;
and its greedy text from a newline. llama.cpp's CPU backend computes GELU from a table, on its
input rounded to float16, so its logits are close to ours, not equal (docs/export.md): a greedy
text may part from ours only where gptiny's two best characters are closer than that error.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptiny_cli.data import Vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.generation.sample import generate
from gptiny_cli.model import GPT

# The largest logit difference from gptiny's float32 logits accepted, by the file's number format.
TOLERANCE = {"f32": 2e-2, "f16": 1e-1}
GREEDY_CHARS = 64  # at most; fewer when block_size is shorter


@dataclass(frozen=True)
class GgufCheck:
    difference: float  # the largest logit difference from gptiny, the logit shift undone
    greedy_chars: int  # how many greedy characters were compared
    agreed: int  # how many of them were the same before a near tie parted the texts (all, mostly)


def installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


_silent: list = []  # the one no-op log callback, kept alive while llama.cpp holds a pointer to it


@contextlib.contextmanager
def quiet_llama() -> Iterator[None]:
    """llama.cpp's log lines off, then llama-cpp-python's own callback back.

    Without ``verbose`` that callback still prints llama.cpp's warnings: it reads ggml's log levels
    as they were numbered before ggml renumbered them, so a warning passes as an error.
    """
    import llama_cpp
    from llama_cpp import _logger

    if not _silent:
        _silent.append(llama_cpp.llama_log_callback(lambda level, text, user_data: None))
    llama_cpp.llama_log_set(_silent[0], ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def load(path: Path, n_ctx: int):
    """A llama_cpp.Llama for the file at ``path``, keeping the logits of every position."""
    from llama_cpp import Llama

    try:
        return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False)
    except (ValueError, RuntimeError) as error:
        raise GptinyError(f"llama.cpp could not load the GGUF file ({error}); nothing was written") from None


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits (T, V) for ``ids`` fed at once into an empty context."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def check_tokenizer(llm, vocab: Vocab) -> None:
    text = "".join(vocab.chars)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    if ids != list(range(vocab.size)):
        raise GptinyError("llama.cpp's tokenizer does not give gptiny's ids for its own vocabulary; "
                          "nothing was written")
    if llm.detokenize(ids).decode("utf-8") != text:
        raise GptinyError("llama.cpp does not decode gptiny's ids back to its characters; nothing was written")


def gptiny_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    return [int(step[0]) for step in generate(model, prompt, n, temperature=0.0)]


def llama_greedy(llm, vocab: Vocab, prompt: list[int], n: int) -> list[int]:
    """llama.cpp's greedy continuation of ``prompt``, through llama-cpp-python's completion API."""
    llm.reset()
    text = llm.create_completion(vocab.decode(prompt), max_tokens=n, temperature=0.0, top_k=0, top_p=1.0,
                                 min_p=0.0, repeat_penalty=1.0)["choices"][0]["text"]
    return vocab.encode(text)


def check_greedy(model: GPT, llm, vocab: Vocab, difference: float, n: int) -> int:
    """Compare the greedy texts from a newline; how many characters agree. They may part only at a near tie."""
    prompt = [vocab.start_token]
    ours, theirs = gptiny_greedy(model, prompt, n), llama_greedy(llm, vocab, prompt, n)
    agreed = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                  min(len(ours), len(theirs)))
    if agreed == n:
        return agreed
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ours[:agreed]]))[0, -1]
    top = logits.topk(2).values
    margin = (top[0] - top[1]).item()
    if len(theirs) < n or margin > 2 * difference:
        raise GptinyError(f"llama.cpp's greedy text parts from gptiny's after {agreed} characters, where gptiny's "
                          f"choice leads by {margin:.2e}; nothing was written")
    return agreed


def verify(path: Path, model: GPT, vocab: Vocab, shift: float, dtype: str, seed: int = 0) -> GgufCheck:
    """Load ``path`` with llama.cpp and compare it with ``model``; raise GptinyError where it differs."""
    with quiet_llama():
        return _verify(path, model, vocab, shift, dtype, seed)


def _verify(path: Path, model: GPT, vocab: Vocab, shift: float, dtype: str, seed: int) -> GgufCheck:
    c = model.cfg
    llm = load(path, c.block_size)
    try:
        check_tokenizer(llm, vocab)
        ids = torch.randint(0, vocab.size, (c.block_size,), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ours = model(ids[None])[0].double().numpy()
        difference = float(np.abs(llama_logits(llm, ids.tolist()) + shift - ours).max())
        if not difference <= TOLERANCE[dtype]:
            raise GptinyError(f"llama.cpp's logits differ from gptiny's by {difference:.2e} (more than "
                              f"{TOLERANCE[dtype]:.0e} for {dtype}); nothing was written")
        n = min(GREEDY_CHARS, c.block_size - 1)
        return GgufCheck(difference, n, check_greedy(model, llm, vocab, difference, n))
    finally:
        llm.close()

"""``gptiny serve`` on a byte-level BPE run: a token may end inside a UTF-8 character, so streamed
text is held back until whole, counts are tokens, and the explanation speaks of pieces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from gptiny_cli.serve.protocol import TAIL_CHARS_PER_TOKEN
from gptiny_cli.store.runs import load_run
from tests.conftest import cli_env
from tests.servetools import serving
from tests.training import train_tiny_bpe

# CJK and emoji, each more than one byte; what follows in the text it learnt, " 跳过", is split
# across tokens (" 跳" and the first byte of "过", then the rest of "过").
PROMPT = "BOB: 你好，世界 7 🙂 the quick brown fox 🦊"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bpe(root=tmp_path_factory.mktemp("serve-bpe"), max_iters=150)  # enough to learn " 跳过"


@pytest.fixture(scope="module")
def vocab(run_dir: Path):
    return load_run(run_dir).vocab


@pytest.fixture(scope="module")
def url(run_dir: Path):
    with serving(run_dir, max_tokens=500) as base:
        yield base


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def complete(client: openai.OpenAI, run_dir: Path, **options):
    return client.completions.create(model=run_dir.name, **{"prompt": PROMPT, "max_tokens": 40, **options})


def streamed(url: str, run_dir: Path, **options) -> list[bytes]:
    """The raw bytes of each server-sent event of a streamed completion, ``[DONE]`` left out."""
    body = {"model": run_dir.name, "prompt": PROMPT, "max_tokens": 40, "stream": True, **options}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response:
        raw = response.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    return events[:-1]


def test_the_health_and_the_model_say_the_tokenizer_and_its_size(url, client, vocab):
    health = httpx.get(f"{url}/health").json()
    assert (health["tokenizer"], health["vocab_size"]) == ("bpe", vocab.size) and vocab.size > 256
    (model,) = client.models.list().data
    assert (model.tokenizer, model.vocab_size) == ("bpe", vocab.size)


def test_a_streamed_cjk_and_emoji_completion_is_whole_utf8_and_the_text_gptiny_sample_gives(url, client, run_dir):
    events = streamed(url, run_dir, seed=7)
    chunks = [json.loads(e.decode("utf-8", errors="strict")) for e in events]  # every event valid UTF-8
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "过" in text  # a character whose bytes came in two tokens, sent whole
    assert text == complete(client, run_dir, seed=7).choices[0].text
    sampled = subprocess.run(
        [sys.executable, "-m", "gptiny_cli", "sample", str(run_dir), "--prompt", PROMPT, "--tokens", "40",
         "--seed", "7", "--json"], capture_output=True, text=True, env=cli_env(), check=True)
    assert text == json.loads(sampled.stdout)["text"][len(PROMPT):]


def test_usage_and_max_tokens_count_tokens(client, run_dir, vocab):
    result = complete(client, run_dir, max_tokens=25, seed=1)
    prompt_tokens = len(vocab.encode(PROMPT))
    assert prompt_tokens < len(PROMPT.encode()) and result.choices[0].finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        prompt_tokens, 25, prompt_tokens + 25)


def test_a_stop_string_of_several_bytes_ends_the_text_before_it_streamed_or_not(url, client, run_dir):
    alone = complete(client, run_dir, temperature=0).choices[0].text
    stops = ["过", "🙂", "你"]
    first = min((alone.index(s) for s in stops if s in alone), default=None)
    assert first is not None, alone
    result = complete(client, run_dir, temperature=0, stop=stops)
    assert result.choices[0].finish_reason == "stop" and result.choices[0].text == alone[:first]
    assert result.usage.completion_tokens < 40
    chunks = [json.loads(e) for e in streamed(url, run_dir, temperature=0, stop=stops)]
    assert "".join(c["choices"][0]["text"] for c in chunks) == alone[:first]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_long_prompt_is_cut_to_a_bounded_text_then_to_its_last_block_of_tokens(client, run_dir, vocab):
    long = "ALICE: 你好 " * 5000
    result = complete(client, run_dir, prompt=long, max_tokens=5, temperature=0)
    tail = complete(client, run_dir, prompt=long[-40:], max_tokens=5, temperature=0)
    assert result.choices[0].text == tail.choices[0].text
    assert result.usage.prompt_tokens == len(vocab.encode(long[-TAIL_CHARS_PER_TOKEN * 8 :]))


def test_explain_gives_each_token_position_the_pieces_likely_to_follow(url, vocab):
    text = "ALICE: 跳过 🦊"  # "跳" and "过" are split across tokens
    tokens = vocab.encode(text)
    result = httpx.post(f"{url}/api/explain", json={"text": text}).json()
    assert (result["unit"], result["offset"]) == ("piece", len(tokens) - 8)
    block = tokens[result["offset"] :]
    assert result["pieces"] == [vocab.pieces[t] for t in block] and any("\\x" in p for p in result["pieces"])
    assert result["text"] == vocab.decode(block)
    first, last = result["positions"][0], result["positions"][-1]
    assert (last["index"], last["piece"], last["next"]) == (len(tokens) - 1, vocab.pieces[tokens[-1]], None)
    assert first["next"]["piece"] == vocab.pieces[block[1]] and 0 < first["next"]["prob"] < 1
    assert len(last["top"]) == 10 and all(entry["piece"] in vocab.pieces for entry in last["top"])


def test_explain_positions_index_tokens_not_characters(url, vocab):
    text = "ALICE: 你好 🦊"
    tokens = len(vocab.encode(text))
    assert tokens < len(text)
    refused = httpx.post(f"{url}/api/explain", json={"text": text, "positions": [tokens]})
    assert refused.status_code == 400 and f"text's tokens, 0 to {tokens - 1}" in refused.json()["error"]["message"]


def test_tokenize_gives_each_token_its_piece_and_the_whole_characters_it_completes(url, vocab):
    text = "BOB: 跳过🙂!"  # the emoji without its space: two tokens, "\\xf0\\x9f" and "\\x99\\x82"
    result = httpx.post(f"{url}/api/tokenize", json={"text": text}).json()
    assert result["tokens"] == vocab.encode(text) and result["pieces"] == [vocab.pieces[t] for t in result["tokens"]]
    assert "".join(result["texts"]) == text and "" in result["texts"]  # a token ending inside a character

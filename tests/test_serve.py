"""``gptiny serve``: OpenAI's completions protocol over HTTP, spoken to by OpenAI's own client and by
raw httpx, against the real app under uvicorn on 127.0.0.1, serving a tiny trained run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from gptiny_cli.report.attention import insight
from gptiny_cli.serve import flight
from gptiny_cli.store.runs import load_run
from tests.conftest import cli_env
from tests.servetools import serving
from tests.training import train_tiny


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(name="serve", root=tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def url(run_dir: Path):
    with serving(run_dir, max_tokens=500) as base:
        yield base


@pytest.fixture
def client(url: str, run_dir: Path) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def complete(client: openai.OpenAI, run_dir: Path, **options):
    return client.completions.create(model=run_dir.name, **{"prompt": "ALICE:", "max_tokens": 30, **options})


def test_the_run_is_the_one_model(client, run_dir):
    assert [m.id for m in client.models.list()] == [run_dir.name]


def test_a_completion_has_its_text_finish_reason_and_usage_in_characters(client, run_dir):
    result = complete(client, run_dir, max_tokens=25, seed=1)
    (choice,) = result.choices
    assert len(choice.text) == 25 and choice.finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (6, 25, 31)


def test_a_streamed_completion_arrives_in_pieces_that_make_the_same_text(client, run_dir):
    chunks = list(complete(client, run_dir, seed=4, stream=True))
    assert len(chunks) >= 2 and all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert "".join(c.choices[0].text for c in chunks) == complete(client, run_dir, seed=4).choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_n_gives_that_many_different_samples(client, run_dir):
    result = complete(client, run_dir, n=2, seed=2, temperature=1.5)
    assert [c.index for c in result.choices] == [0, 1]
    assert result.choices[0].text != result.choices[1].text


def test_a_list_of_prompts_gets_n_choices_each(client, run_dir):
    result = complete(client, run_dir, prompt=["ALICE:", "BOB:"], n=2, max_tokens=5)
    assert [c.index for c in result.choices] == [0, 1, 2, 3] and result.usage.prompt_tokens == 10


def test_a_stop_string_ends_the_text_before_it(client, run_dir):
    result = complete(client, run_dir, prompt="ALICE: the quick", stop=" ", temperature=0, max_tokens=50)
    assert result.choices[0].finish_reason == "stop" and " " not in result.choices[0].text


def test_of_several_stop_strings_the_first_that_appears_ends_the_text(client, run_dir):
    alone = complete(client, run_dir, prompt="ALICE: the quick", temperature=0, max_tokens=50).choices[0].text
    stops = ["o", "zz", " "]
    first = min(alone.index(s) for s in stops if s in alone)
    result = complete(client, run_dir, prompt="ALICE: the quick", stop=stops, temperature=0, max_tokens=50)
    assert result.choices[0].finish_reason == "stop" and result.choices[0].text == alone[:first]


def test_the_same_seed_gives_the_same_text_as_gptiny_sample(client, run_dir):
    first = complete(client, run_dir, seed=7, temperature=0.9, top_p=0.9, max_tokens=40, extra_body={"top_k": 5})
    again = complete(client, run_dir, seed=7, temperature=0.9, top_p=0.9, max_tokens=40, extra_body={"top_k": 5})
    sampled = subprocess.run(
        [sys.executable, "-m", "gptiny_cli", "sample", str(run_dir), "--prompt", "ALICE:", "--tokens", "40",
         "--seed", "7", "--temperature", "0.9", "--top-p", "0.9", "--top-k", "5", "--json"],
        capture_output=True, text=True, env=cli_env(), check=True)
    assert first.choices[0].text == again.choices[0].text == json.loads(sampled.stdout)["text"][len("ALICE:"):]


def test_the_clients_errors_carry_our_messages(client, run_dir):
    with pytest.raises(openai.BadRequestError, match="above this server's limit of 500") as caught:
        complete(client, run_dir, max_tokens=501)
    assert caught.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="x")


BAD = [
    ({"prompt": "ALICE:", "temperature": "hot"}, "temperature", "must be a number in [0, 2]"),
    ({"prompt": 5}, "prompt", "must be a string or a non-empty list of strings"),
    ({"prompt": "ALICE: ¿Zebra?"}, "prompt", 'vocabulary lacks: "¿Z?"'),
    ({"prompt": "A", "max_tokens": 501}, "max_tokens", "above this server's limit of 500"),
    ({"prompt": "A", "max_tokens": 0}, "max_tokens", "an integer of at least 1"),
    ({"prompt": "A", "n": 17}, "n", "at most 16 samples"),
    ({"prompt": ["A"] * 17}, "prompt", "at most 16 per request"),
    ({"prompt": ["A"] * 5, "n": 13}, "n", "5 prompts × n 13 is 65 samples; at most 64 per request"),
    ({"prompt": "A", "top_p": 0}, "top_p", "a number in (0, 1]"),
    ({"prompt": "A", "top_k": 2.5}, "top_k", "must be an integer"),
    ({"prompt": "A", "seed": "x"}, "seed", "must be an integer"),
    ({"prompt": "A", "seed": 2**64}, "seed", "must be an integer from"),
    ({"prompt": "A", "stream": "yes"}, "stream", "true or false"),
    ({"prompt": "A", "stop": ["a", "b", "c", "d", "e"]}, "stop", "give at most 4"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD, ids=[param for _, param, _ in BAD])
def test_a_bad_parameter_is_a_400_that_names_it(url, body, param, message):
    response = httpx.post(f"{url}/v1/completions", json=body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and error["type"] == "invalid_request_error"
    assert message in error["message"]


JSON = {"Content-Type": "application/json"}


def test_malformed_json_is_a_400_that_says_so(url):
    response = httpx.post(f"{url}/v1/completions", content=b'{"prompt": "A",', headers=JSON)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_json_nested_too_deeply_is_a_400_not_a_server_error(url):
    response = httpx.post(f"{url}/v1/completions", content=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]["message"]


@pytest.mark.parametrize("kind", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_a_415(url, kind):
    # text/plain and forms are what any web page may POST here without a CORS preflight
    headers = {"Content-Type": kind} if kind else {}
    response = httpx.post(f"{url}/v1/completions", content=b'{"prompt": "A", "max_tokens": 1}', headers=headers)
    assert response.status_code == 415 and "application/json" in response.json()["error"]["message"]


def test_a_request_addressed_to_another_host_name_is_refused(url):
    # a page on evil.example whose name was rebound to 127.0.0.1 sends its own name as the Host
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "A", "max_tokens": 1},
                          headers={"Host": "evil.example"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"
    assert httpx.get(f"{url}/health", headers={"Host": "localhost:8000"}).status_code == 200


def test_a_body_over_256_kb_is_a_413(url):
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "A" * 256_001})
    assert response.status_code == 413 and "over 256,000 bytes" in response.json()["error"]["message"]


def test_a_prompt_longer_than_the_block_is_read_from_its_last_block_and_counted_whole(client, run_dir):
    # characters the vocabulary lacks before the last block do not matter: the model never reads them
    long = "\x00" * 1000 + "ALICE:" * 100
    result = complete(client, run_dir, prompt=long, max_tokens=3, seed=1, temperature=0)
    tail = complete(client, run_dir, prompt=long[-64:], max_tokens=3, seed=1, temperature=0)
    assert result.usage.prompt_tokens == len(long) and result.choices[0].text == tail.choices[0].text


def test_health_answers_without_a_key(url):
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_health_and_the_model_say_the_tokenizer_and_its_size(url, client):
    health = httpx.get(f"{url}/health").json()
    assert health["tokenizer"] == "char" and health["vocab_size"] > 0
    (model,) = client.models.list().data
    assert (model.tokenizer, model.vocab_size) == ("char", health["vocab_size"])


def test_explain_names_the_unit_and_lists_the_blocks_pieces(url):
    result = httpx.post(f"{url}/api/explain", json={"text": "ALICE: the", "positions": [9]}).json()
    assert result["unit"] == "char" and result["pieces"] == list("ICE: the") and result["text"] == "ICE: the"


def test_with_an_api_key_a_missing_or_wrong_key_is_a_401(run_dir):
    with serving(run_dir, api_key="s3cret") as base:
        body = {"prompt": "A", "max_tokens": 2}
        missing = httpx.post(f"{base}/v1/completions", json=body)
        wrong = httpx.post(f"{base}/v1/completions", json=body, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{base}/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "no API key" in missing.json()["error"]["message"] and wrong.json()["error"]["code"] == "invalid_api_key"


async def stream_length(client: httpx.AsyncClient, url: str, n_chars: int) -> int:
    received = 0
    body = {"prompt": "BOB:", "max_tokens": n_chars, "stream": True}
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                received += len(json.loads(line[6:])["choices"][0]["text"])
    return received


def test_sixteen_concurrent_streaming_clients_all_receive_their_full_length(url):
    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(stream_length(client, url, 60) for _ in range(16)))

    assert asyncio.run(main()) == [60] * 16


def test_the_end_of_a_stream_is_not_held_back_by_the_pause_that_gathers_its_text(url, monkeypatch):
    # With a pause of 5 s between pieces, a stream whose last token comes during one would end 5 s late.
    monkeypatch.setattr(flight, "GATHER_S", 5.0)
    start = time.monotonic()
    with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "A", "max_tokens": 40, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and time.monotonic() - start < 2.5


def test_a_stream_is_neither_cached_nor_buffered_by_a_proxy(url):
    with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "A", "max_tokens": 3, "stream": True}) as r:
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"


def open_stream(client: httpx.Client, url: str, max_tokens: int) -> tuple[httpx.Response, object]:
    """A streaming request whose first piece has arrived (it is generating), and its lines to come."""
    request = client.build_request("POST", f"{url}/v1/completions",
                                   json={"prompt": "BOB:", "max_tokens": max_tokens, "stream": True})
    response = client.send(request, stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    while not next(lines).startswith("data: {"):
        pass
    return response, lines  # dropping the lines would close the stream


def test_a_client_that_disconnects_frees_the_model(run_dir):
    # One request at a time, and one long enough to take minutes if it were not stopped.
    with serving(run_dir, max_tokens=1_000_000, max_active=1) as base, httpx.Client(timeout=30) as client:
        open_stream(client, base, 1_000_000)[0].close()
        start = time.monotonic()
        after = client.post(f"{base}/v1/completions", json={"prompt": "A", "max_tokens": 5})
        assert after.status_code == 200 and time.monotonic() - start < 10


def test_a_client_that_gives_up_waiting_for_a_whole_completion_frees_the_model(run_dir):
    with serving(run_dir, max_tokens=1_000_000, max_active=1) as base, httpx.Client(timeout=30) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{base}/v1/completions", json={"prompt": "A", "max_tokens": 1_000_000}, timeout=0.5)
        start = time.monotonic()
        after = client.post(f"{base}/v1/completions", json={"prompt": "A", "max_tokens": 5})
        assert after.status_code == 200 and time.monotonic() - start < 10


def test_a_full_queue_is_a_503_with_retry_after(run_dir):
    with serving(run_dir, max_tokens=1_000_000, max_active=1, queue_size=1) as base, \
            httpx.Client(timeout=30) as client:
        running, _lines = open_stream(client, base, 1_000_000)
        waiting = client.send(client.build_request("POST", f"{base}/v1/completions", json={
            "prompt": "A", "max_tokens": 5, "stream": True}), stream=True)  # its answer starts once it is queued
        refused = client.post(f"{base}/v1/completions", json={"prompt": "A", "max_tokens": 5})
        running.close()
        waiting.close()
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "queue is full" in refused.json()["error"]["message"]


def test_explain_gives_each_positions_top_characters_and_every_heads_attention(url, run_dir):
    result = httpx.post(f"{url}/api/explain", json={"text": "ALICE: the", "positions": [8, 9]}).json()
    assert (result["offset"], result["text"], result["layers"], result["heads"]) == (2, "ICE: the", 1, 2)
    last = result["positions"][1]
    assert (last["index"], last["char"], last["next"]) == (9, "e", None)
    assert result["positions"][0]["next"]["char"] == "e" and len(last["top"]) == 10
    loaded = load_run(run_dir)
    expected = insight(loaded.model, loaded.vocab.encode("ICE: the")).attention[:, :, 7]  # (L, H, T)
    assert len(last["attention"][0][1]) == 8
    assert last["attention"][0][1] == pytest.approx(expected[0, 1].tolist(), abs=0.02)  # int8 weights served


def test_explain_answers_at_most_64_positions(url):
    text = "ALICE: the " * 10
    refused = httpx.post(f"{url}/api/explain", json={"text": text, "positions": list(range(65))})
    assert refused.status_code == 400 and "at most 64" in refused.json()["error"]["message"]
    assert len(httpx.post(f"{url}/api/explain", json={"text": text}).json()["positions"]) == 8  # the last block


def test_explain_names_a_bad_text(url):
    response = httpx.post(f"{url}/api/explain", json={"text": "Zorro"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "text"


def test_explain_refuses_positions_that_are_not_integers(url):
    response = httpx.post(f"{url}/api/explain", json={"text": "ALICE: the", "positions": [True]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "positions"

"""Serving speed: characters/s and latency to the first character with 1, 4 and 16 concurrent clients.

    python benchmarks/bench_serve.py [--config configs/shakespeare-cpu.toml] [--corpus input.txt] [--run RUN]
                                     [--tokens 300] [--clients 1 4 16] [--precision auto] [--rounds 3]
                                     [--trials 0]

Without --run, makes a run of --config after one training step (speed does not depend on what
the weights are). Then two measurements, each client asking for --tokens characters from the
prompt "ROMEO:":

- The worker alone, in this process: every request submitted at once to an ``Engine``, its
  decode steps batched, and again stepped one request after another (``batch=False``), in
  alternating rounds; the ratio is what batching buys, measured in one process.
- ``gptiny sample``'s own loop (``generate``) on the same model, precision, prompt and length, in this
  process, beside the worker's single stream: the yardstick for one request (issue #25: ≥ 90%).
- With --trials N: N trials of one request, the most clients batched and one by one, in turn,
  and their medians (on a machine whose speed drifts, a trial's ratios are the ones to trust).
- End to end: ``gptiny serve`` in its own process on 127.0.0.1, each client a streaming
  ``/v1/completions`` request over HTTP (httpx), all started together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sample import CORPUS, make_run  # noqa: E402
from gptiny_cli.data import Vocab  # noqa: E402
from gptiny_cli.generation.inference import for_inference  # noqa: E402
from gptiny_cli.generation.sample import generate, seeded_generator  # noqa: E402
from gptiny_cli.hardware.device import auto_sample_precision  # noqa: E402
from gptiny_cli.serve.batch import Completion  # noqa: E402
from gptiny_cli.serve.engine import Engine, Job  # noqa: E402
from gptiny_cli.store.runs import load_run  # noqa: E402

PROMPT = "ROMEO:"


def engine_round(build, chars: tuple[str, ...], clients: int, tokens: int, batch: bool) -> tuple[float, float]:
    """All clients' requests through one Engine: (characters/s in all, median seconds to a first character)."""
    prompt = [chars.index(c) for c in PROMPT]
    first: list[float] = []
    done = threading.Semaphore(0)

    def deliver(event: tuple, seen: list[bool]) -> None:
        if event[0] == "text" and not seen:
            seen.append(True)
            first.append(time.perf_counter() - start)
        elif event[0] == "done":
            done.release()

    engine = Engine.built_on_worker(build, max_active=clients, batch=batch)  # as gptiny serve builds it
    engine.start()
    start = time.perf_counter()
    for i in range(clients):
        seen: list[bool] = []
        engine.submit(Job(Completion(prompt, tokens, seed=i), lambda e, seen=seen: deliver(e, seen)))
    for _ in range(clients):
        done.acquire()
    seconds = time.perf_counter() - start
    engine.close()
    return clients * tokens / seconds, statistics.median(first)


def sample_speed(build, chars: tuple[str, ...], tokens: int) -> float:
    """Characters/s of ``gptiny sample``'s loop: ``generate`` with the same prompt, drawing as sample does.

    It runs on a thread of its own that builds its own model and then ends, taking its OpenMP
    pool with it: this process's main thread runs no torch work, as in ``gptiny serve``, where a
    second pool would slow the worker down (see Engine.built_on_worker).
    """
    prompt = [chars.index(c) for c in PROMPT]
    speed: list[float] = []

    def measure() -> None:
        model = build()[0]
        start = time.perf_counter()
        steps = generate(model, prompt, tokens, generator=seeded_generator("cpu", 0))
        text = "".join(chars[int(step[0])] for step in steps)
        assert len(text) == tokens
        speed.append(tokens / (time.perf_counter() - start))

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    return speed[0]


async def http_client(client: httpx.AsyncClient, url: str, tokens: int, seed: int) -> tuple[float, int]:
    start, first, received = time.perf_counter(), None, 0
    body = {"prompt": PROMPT, "max_tokens": tokens, "stream": True, "seed": seed}
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                received += len(json.loads(line[6:])["choices"][0]["text"])
                first = first or time.perf_counter() - start
    return first, received


async def http_round(url: str, clients: int, tokens: int) -> tuple[float, float, float]:
    """(characters/s in all, median and worst seconds to a first character) over HTTP."""
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(http_client(client, url, tokens, i) for i in range(clients)))
        seconds = time.perf_counter() - start
    firsts = [f for f, _ in results]
    assert all(n == tokens for _, n in results), results
    return sum(n for _, n in results) / seconds, statistics.median(firsts), max(firsts)


def start_server(run_dir: Path, precision: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "gptiny_cli", "serve", str(run_dir), "--port", str(port),
                               "--device", "cpu", "--precision", precision, "--max-tokens", "100000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/health", timeout=1)
            return server, url
        except httpx.HTTPError:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read().decode()) from None
            time.sleep(0.1)
    raise RuntimeError("gptiny serve did not start")


def interleaved(build, chars: tuple[str, ...], clients: int, tokens: int, trials: int) -> None:
    """One request, ``clients`` batched and one by one, in turn, ``trials`` times: on a machine whose
    speed drifts, each trial's ratios compare runs made within seconds of each other."""
    rows = []
    for _ in range(trials):
        rows.append([engine_round(build, chars, n, tokens, batch)[0]
                     for n, batch in ((1, True), (clients, True), (clients, False))])
    one, many, apart = (statistics.median(r[i] for r in rows) for i in range(3))
    to_one = sorted(r[1] / r[0] for r in rows)
    print(f"{trials} interleaved trials, medians: one request {one:,.0f} chars/s, {clients} batched {many:,.0f}, "
          f"one by one {apart:,.0f}; batched against one request {statistics.median(to_one):.2f}x "
          f"({to_one[0]:.2f}-{to_one[-1]:.2f}), against one by one "
          f"{statistics.median(r[1] / r[2] for r in rows):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare-cpu.toml")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the text a one-step run is prepared from")
    parser.add_argument("--run", type=Path, help="an existing run instead of a one-step run of --config")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="runs of the worker alone, the best one kept")
    parser.add_argument("--trials", type=int, default=0,
                        help="then this many interleaved trials of one request and the most clients, medians")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or make_run(args.config, args.corpus, Path(tmp))
        vocab = Vocab.load(run_dir / "vocab.json")
        chars, cpu = vocab.chars, torch.device("cpu")
        precision = auto_sample_precision(cpu)[0] if args.precision == "auto" else args.precision

        def build():  # on the thread that generates, as gptiny serve does
            return for_inference(load_run(run_dir).model, precision, cpu), chars, vocab.start_token

        print(f"{run_dir.name}: {precision}, {torch.get_num_threads()} threads, {args.tokens} characters per client")
        engine_round(build, chars, 1, args.tokens, batch=True)  # warm-up, not counted
        # one request against gptiny sample's loop, alternating, each keeping its best
        sample, single = 0.0, 0.0
        for _ in range(args.rounds):
            sample = max(sample, sample_speed(build, chars, args.tokens))
            single = max(single, engine_round(build, chars, 1, args.tokens, batch=True)[0])
        print(f"one request: gptiny sample's loop {sample:,.0f} chars/s, the worker's stream {single:,.0f} "
              f"chars/s ({single / sample:.0%})")
        print("worker alone     clients  batched chars/s  one by one chars/s  ratio  first char (batched)")
        for clients in args.clients:
            # rounds alternate the two ways; each keeps its best (other processes can only slow one down)
            together, first, apart = 0.0, float("inf"), 0.0
            for _ in range(args.rounds):
                speed, latency = engine_round(build, chars, clients, args.tokens, batch=True)
                together, first = max(together, speed), min(first, latency)
                apart = max(apart, engine_round(build, chars, clients, args.tokens, batch=False)[0])
            print(f"{'':17}{clients:>7}  {together:>15,.0f}  {apart:>18,.0f}  {together / apart:>5.2f}  "
                  f"{first * 1000:>8.1f} ms")
        if args.trials:
            interleaved(build, chars, max(args.clients), args.tokens, args.trials)
        server, url = start_server(run_dir, args.precision)
        try:
            asyncio.run(http_round(url, 1, 50))  # warm-up: a server's first request pays for lazy set-up
            print("over HTTP        clients  chars/s in all  first char median  worst")
            for clients in args.clients:
                # the round with the best throughput of --rounds (other processes can only slow one down)
                speed, median, worst = max(asyncio.run(http_round(url, clients, args.tokens))
                                           for _ in range(args.rounds))
                print(f"{'':17}{clients:>7}  {speed:>14,.0f}  {median * 1000:>14.1f} ms  {worst * 1000:>6.1f} ms")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()

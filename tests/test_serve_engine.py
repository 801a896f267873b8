"""The serve worker (serve/engine.py, serve/batch.py): requests in flight together are decoded as one
batch, and each still gets exactly the text ``generate`` gives it alone with its seed."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gptiny_cli.config import ModelConfig
from gptiny_cli.generation.inference import for_inference
from gptiny_cli.generation.sample import generate
from gptiny_cli.model import build_model
from gptiny_cli.serve.batch import Batch, Completion
from gptiny_cli.serve.engine import Engine, Job, QueueFull

CHARS = tuple("abcdefghij")


def tiny_model(arch: str = "gpt", position: str = "learned", precision: str = "float32") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_embd=32, block_size=8, n_layer=2, n_head=2, dropout=0.0, position=position)
    return for_inference(build_model(cfg, len(CHARS)), precision, torch.device("cpu"))


def alone(model: torch.nn.Module, c: Completion) -> list[str]:
    generator = torch.Generator().manual_seed(c.seed)
    steps = generate(model, c.prompt, c.max_tokens, num_samples=c.n, temperature=c.temperature, top_k=c.top_k,
                     top_p=c.top_p, generator=generator)
    rows = torch.stack(list(steps), dim=1).tolist()  # (n, max_tokens)
    return ["".join(CHARS[t] for t in row) for row in rows]


def together(model: torch.nn.Module, completions: list[Completion], table: tuple = CHARS) -> list[list[str]]:
    """Every completion submitted before the worker starts, so that all run in the same rounds."""
    texts = [[""] * c.n for c in completions]
    finished = threading.Semaphore(0)

    def collector(j: int):
        def deliver(event: tuple) -> None:
            kind, a, b = event
            if kind == "text":
                texts[j][a] += b
            elif kind in ("done", "error"):
                assert kind == "done", a
                finished.release()
        return deliver

    engine = Engine(model, table)
    for j, c in enumerate(completions):
        engine.submit(Job(c, collector(j)))
    engine.start()
    for _ in completions:
        assert finished.acquire(timeout=30)
    engine.close()
    return texts


MIXED = [Completion([1, 2, 3], 30, n=1, seed=1), Completion([4], 12, n=3, seed=2, temperature=0.7),
         Completion([5, 6, 7, 8, 9, 0, 1], 25, n=2, seed=3, top_k=4), Completion([], 20, n=1, seed=4, top_p=0.8)]


@pytest.mark.parametrize(("arch", "position", "precision"), [
    ("gpt", "learned", "float32"), ("gpt", "rope", "float32"), ("gpt", "rope", "int8"),
    ("bigram", "learned", "float32")])
def test_requests_decoded_together_get_the_texts_each_gets_alone(arch, position, precision):
    # prompts of different lengths: the batch holds caches at different positions, and past
    # block_size (8) learned positions refill their cache while the others step on
    model = tiny_model(arch, position, precision)
    assert together(model, MIXED) == [alone(model, c) for c in MIXED]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_full_caches_wait_for_each_other_and_refill_together_each_text_still_its_own(precision):
    # one stream joins per round, as in the engine, so their block-8 caches fill rounds apart
    model, completions = tiny_model(precision=precision), [Completion([1, 2, 3], 24, seed=seed) for seed in range(3)]
    batch, drawn, waits = Batch(model), {}, 0
    for round_ in range(40):
        if round_ < len(completions):
            c = completions[round_]
            drawn[batch.join(c, torch.Generator().manual_seed(c.seed), 0)] = []
        drawing = [s for s in batch.streams if s.drawing]
        waits += len(batch.streams) - len(drawing)
        tokens = batch.draw()
        for i, s in enumerate(drawing):
            drawn[s].append(CHARS[tokens[i]])
        batch.keep([s for s in batch.streams if len(drawn[s]) < 24])
        batch.step()
    assert waits > 0
    assert [["".join(text)] for text in drawn.values()] == [alone(model, c) for c in completions]


def test_a_request_cancelled_while_its_full_cache_waits_is_done_at_once_and_the_others_go_on():
    # prompt 3, block 8: after its 5th step the first cache is full; it draws its 6th token, then
    # waits for the second (a round behind) and is cancelled then, with no token in between
    model = tiny_model()
    first, second = Completion([1, 2, 3], 20, seed=1), Completion([1, 2, 3], 20, seed=2)
    events: list[tuple] = []
    finished = threading.Semaphore(0)

    texts, second_at_done = [""], []

    def deliver_first(event: tuple) -> None:
        events.append(event)
        if event[0] == "text" and sum(e[0] == "text" for e in events) == 6:
            job.cancel()
        if event[0] == "done":
            second_at_done.append(len(texts[0]))
            finished.release()

    def deliver_second(event: tuple) -> None:
        if event[0] == "text":
            texts[0] += event[2]
        elif event[0] == "done":
            finished.release()

    engine = Engine(model, CHARS)
    job = Job(first, deliver_first)
    engine.submit(job)
    engine.submit(Job(second, deliver_second))
    engine.start()
    assert finished.acquire(timeout=30) and finished.acquire(timeout=30)
    engine.close()
    assert [e[0] for e in events] == ["text"] * 6 + ["done"] and events[-1][1] == 6
    assert second_at_done == [5]  # the next round, not once the wait was over
    assert texts == alone(model, second)


# BPE's table: tokens of bytes, some ending inside a character ("你" is e4 bd a0, "🙂" f0 9f 99 82)
BYTES = (b"a", b" ", b"\xe4\xbd", b"\xa0", b"\xf0\x9f\x99", b"\x82", b"\xe4\xbd\xa0", b"\n", b"b", b"c")


def test_tokens_of_bytes_arrive_as_whole_characters_the_text_of_their_bytes():
    model = tiny_model()
    completion = Completion([2], 300, n=2, seed=6)
    steps = generate(model, completion.prompt, completion.max_tokens, num_samples=2,
                     generator=torch.Generator().manual_seed(completion.seed))
    rows = torch.stack(list(steps), dim=1).tolist()
    expected = [b"".join(BYTES[t] for t in row).decode("utf-8", errors="replace") for row in rows]
    # characters split across tokens, made whole (decoded a token at a time, each would be U+FFFD)
    assert all("你" in text and "🙂" in text for text in expected)
    assert together(model, [completion], BYTES) == [expected]


def test_the_worker_generates_with_the_threads_it_was_given():
    wanted = torch.get_num_threads() + 1  # not what this thread has: set on the worker's own
    engine = Engine(tiny_model(), CHARS, threads=wanted)
    engine.start()
    try:
        assert engine.call(lambda _: torch.get_num_threads()).result(timeout=30) == wanted
    finally:
        engine.close()


def test_a_full_queue_refuses_the_next_request():
    engine = Engine(tiny_model(), CHARS, queue_size=1)
    engine.submit(Job(Completion([1], 5), lambda _: None))
    with pytest.raises(QueueFull):
        engine.submit(Job(Completion([1], 5), lambda _: None))


def test_work_on_the_model_runs_between_rounds_even_with_every_slot_taken():
    engine = Engine(tiny_model(), CHARS, max_active=1)
    long = Job(Completion([1], 1_000_000), lambda _: None)
    engine.submit(long)
    engine.start()
    try:
        assert engine.call(lambda model: model.block_size).result(timeout=10) == 8
    finally:
        long.cancel()
        engine.close()


def test_a_cancelled_request_is_told_it_is_done_and_gets_nothing_more():
    events: list[tuple] = []
    engine = Engine(tiny_model(), CHARS)
    job = Job(Completion([1], 1_000_000), events.append)
    engine.submit(job)
    engine.start()
    while not events:
        threading.Event().wait(0.001)
    job.cancel()
    deadline = time.monotonic() + 10
    while events[-1][0] != "done" and time.monotonic() < deadline:
        threading.Event().wait(0.001)
    seen = len(events)
    for _ in range(2):  # two rounds pass
        engine.call(lambda _: None).result(timeout=10)
    engine.close()
    assert len(events) == seen and events[-1][0] == "done"
    assert all(kind == "text" for kind, _, _ in events[:-1])


def test_a_failure_while_drawing_is_delivered_and_the_worker_serves_on():
    model = tiny_model()
    with torch.no_grad():
        model.head.bias[-1] = 1e4  # always drawn, and the engine is given one character too few
    events: list[tuple] = []
    failed = threading.Event()

    def deliver(event: tuple) -> None:
        events.append(event)
        if event[0] == "error":
            failed.set()

    engine = Engine(model, CHARS[:-1])
    engine.submit(Job(Completion([1], 5), deliver))
    engine.start()
    try:
        assert failed.wait(timeout=10) and "generation failed" in events[-1][1]
        assert engine.call(lambda m: m.block_size).result(timeout=10) == 8  # the worker is still there
    finally:
        engine.close()


@pytest.mark.parametrize("block_size", range(2, 9))
def test_a_block_of_two_to_eight_positions_generates_past_it_alone_and_served(block_size):
    # A full learned-position cache is refilled with its newest quarter block less one: below a
    # block of 8, nothing but the new token (the refill once took the whole history and failed).
    torch.manual_seed(0)
    cfg = ModelConfig(n_embd=16, block_size=block_size, n_layer=1, n_head=2, dropout=0.0)
    model = for_inference(build_model(cfg, len(CHARS)), "float32", torch.device("cpu"))
    completion = Completion([1, 2], 12, n=2, seed=5)
    texts = alone(model, completion)
    assert [len(t) for t in texts] == [12, 12]
    assert together(model, [completion]) == [texts]


def test_a_request_cancelled_while_it_waited_is_done_without_a_prompt_pass():
    model = tiny_model()
    passes = []
    model.register_forward_hook(lambda *_: passes.append(1))
    events: list[tuple] = []
    engine = Engine(model, CHARS)
    job = Job(Completion([1, 2, 3], 5), events.append)
    job.cancel()
    engine.submit(job)
    engine.start()
    engine.call(lambda _: None).result(timeout=10)
    engine.close()
    assert events == [("done", 0, None)] and passes == []


def test_requests_waiting_together_join_the_running_batch_one_per_round():
    # each arrival's prompt pass is a pause for the streams in flight: at most one such pause per character
    drawn: list[int] = []  # the request of every character, in the order they were drawn
    finished = threading.Semaphore(0)

    def collector(j: int):
        def deliver(event: tuple) -> None:
            if event[0] == "text":
                drawn.append(j)
            elif event[0] == "done":
                finished.release()
        return deliver

    engine = Engine(tiny_model(), CHARS)
    for j in range(4):
        engine.submit(Job(Completion([1], 6, seed=j), collector(j)))
    engine.start()
    for _ in range(4):
        assert finished.acquire(timeout=30)
    engine.close()
    # request j joins at round j, so the first request has drawn j + 1 characters by its first
    assert [drawn[: drawn.index(j)].count(0) for j in (1, 2, 3)] == [2, 3, 4]


def test_an_engine_can_build_its_model_on_its_own_worker_thread():
    # every torch operation of the server on one thread: a second OpenMP pool made the worker 3x slower
    where = []

    def build():
        where.append(threading.current_thread().name)
        return tiny_model(), CHARS, 0

    engine = Engine.built_on_worker(build)
    engine.start()
    try:
        assert where == ["gptiny-generation"]
        assert engine.call(lambda model: model.block_size).result(timeout=10) == 8
    finally:
        engine.close()


def test_a_model_that_fails_to_build_on_the_worker_raises_from_start():
    def build():
        raise ValueError("no such run")

    engine = Engine.built_on_worker(build)
    with pytest.raises(ValueError, match="no such run"):
        engine.start()

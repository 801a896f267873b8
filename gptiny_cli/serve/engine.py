"""The generation worker: one thread owns the model and serves every request, in arrival order.

Generation is compute-bound, so requests never run in parallel threads. They wait in a bounded
queue; the worker takes up to ``max_active`` of them at a time and advances each in turn by one
step (a character per sample), so every streaming client makes progress and a long request does
not hold up a short one. A request's own steps are exactly ``generation.sample.generate``'s with
its own seeded generator, so a seed gives the same text as ``gptiny sample``. A cancelled
request (its client went away) is dropped before its next step. Other work on the model (an
explanation) is queued the same way and runs between two rounds of steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from gptiny_cli.generation.sample import SampleText, generate

# What a job delivers, in order: ("text", sample, piece) as sample texts grow, ("end", sample,
# "stop" | "length") once per sample, then ("done", characters generated, None); or ("error",
# message, None).
Event = tuple[str, object, object]


class QueueFull(Exception):
    """The queue in front of the model has no room; the client should retry later."""


@dataclass
class Completion:
    """One prompt's generation, as a request asked for it: n samples of up to max_tokens characters."""

    prompt: list[int]
    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: str = ""


@dataclass
class Job:
    """A completion in the queue or in flight; ``deliver`` is called on the worker thread."""

    completion: Completion
    deliver: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Active:
    job: Job
    steps: Iterator[torch.Tensor]
    samples: list[SampleText]
    done: int = 0


class Engine:
    """The model's one worker thread, with a queue of at most ``queue_size`` waiting requests."""

    def __init__(self, model: nn.Module, chars: tuple[str, ...], *, queue_size: int = 64,
                 max_active: int = 16, start_token: int = 0) -> None:
        self.model, self.chars, self.start_token = model, chars, start_token
        self.device = next(model.parameters()).device
        self.max_active = max_active
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="gptiny-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the worker after the round in progress; requests still queued are dropped."""
        self._queue.put(None)  # may wait for room: the worker keeps taking items until it meets this
        self._thread.join()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None

    def call(self, work: Callable[[nn.Module], object]) -> Future:
        """Run ``work(model)`` on the worker thread, in turn with the queued requests."""
        future: Future = Future()
        try:
            self._queue.put_nowait((work, future))
        except queue.Full:
            raise QueueFull() from None
        return future

    def _loop(self) -> None:
        active: list[_Active] = []
        while True:
            while len(active) < self.max_active:
                try:
                    item = self._queue.get(block=not active)
                except queue.Empty:
                    break
                if item is None:
                    return
                if isinstance(item, Job):
                    active.append(self._begin(item))
                else:
                    self._run_call(*item)
            active = [a for a in active if not self._advance(a)]

    def _run_call(self, work: Callable[[nn.Module], object], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work(self.model))
        except Exception as error:  # handed to the waiting request, which reports it
            future.set_exception(error)

    def _begin(self, job: Job) -> _Active:
        c = job.completion
        generator = torch.Generator(device=self.device)
        if c.seed is None:
            generator.seed()
        else:
            generator.manual_seed(c.seed)
        steps = generate(self.model, c.prompt, c.max_tokens, num_samples=c.n, temperature=c.temperature,
                         top_k=c.top_k, top_p=c.top_p, generator=generator, start_token=self.start_token)
        return _Active(job, steps, [SampleText(c.stop) for _ in range(c.n)])

    def _advance(self, a: _Active) -> bool:
        """One step of a request; True once it has ended (finished, cancelled or failed)."""
        if a.job.cancelled.is_set():
            a.steps.close()
            return True
        try:
            tokens = next(a.steps).tolist()
        except Exception as error:  # a request that breaks the model must not stop the others
            a.job.deliver(("error", f"generation failed: {error}", None))
            return True
        for i, token in enumerate(tokens):
            sample = a.samples[i]
            if sample.stopped:
                continue
            piece = sample.add(self.chars[token])
            if piece:
                a.job.deliver(("text", i, piece))
            if sample.stopped:
                a.job.deliver(("end", i, "stop"))
        a.done += 1
        if a.done < a.job.completion.max_tokens and not all(s.stopped for s in a.samples):
            return False
        a.steps.close()
        for i, sample in enumerate(a.samples):
            if not sample.stopped:
                rest = sample.finish()
                if rest:
                    a.job.deliver(("text", i, rest))
                a.job.deliver(("end", i, "length"))
        a.job.deliver(("done", sum(s.generated for s in a.samples), None))
        return True

"""The generation worker: one thread owns the model and serves every request, in arrival order.

Generation is compute-bound, so requests never run in parallel threads. They wait in a bounded
queue; the worker takes up to ``max_active`` of them at a time and moves them all one token
further per round, their decode steps run as one batch (``batch.py``), so every streaming client
makes progress and a long request does not hold up a short one. New requests join the running
batch one per round, so the live streams pause for at most one prompt pass per token. A
cancelled request (its client went away) is dropped before the next round, or before its prompt
pass if it was still waiting. Other work on the model (an explanation) has a
queue of its own and runs between two rounds, however many requests are in flight.

Tokens become text through the engine's table: a character per id for a character vocabulary
(looked up, nothing more per token), the bytes per id for BPE, decoded by a ``TextStream`` per
sample, since a token may end inside a UTF-8 character that the next one completes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from gptiny_cli.data import TextStream, Tokenizer
from gptiny_cli.generation.sample import SampleText, seeded_generator
from gptiny_cli.serve.batch import Batch, Completion, Stream

# What a job delivers, in order: ("text", sample, piece) as sample texts grow, ("end", sample,
# "stop" | "length") once per sample, then ("done", tokens generated, None); a cancelled job
# skips to "done"; a failed one delivers ("error", message, None) instead.
Event = tuple[str, object, object]
# Each id's text: its character (a character vocabulary's ``pieces``) or its bytes (``token_bytes``).
Table = tuple[str, ...] | tuple[bytes, ...]
# What builds the engine's model on its worker thread: the model, its table, the start token.
Build = Callable[[], tuple[nn.Module, Table, int]]


def table_of(vocab: Tokenizer) -> Table:
    """The engine's table for a vocabulary: characters looked up as they are, BPE's bytes decoded."""
    return vocab.pieces if vocab.kind == "char" else vocab.token_bytes


_WAKE = "wake"  # put in the queue to wake an idle worker for a call


class QueueFull(Exception):
    """The queue in front of the model has no room; the client should retry later."""


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
    stream: Stream
    samples: list[SampleText]
    texts: list[TextStream] | None  # one per sample for a table of bytes; None for characters
    done: int = 0  # tokens drawn per sample (those that met a stop string drew fewer)
    ended: bool = False  # its "done" was delivered


class Engine:
    """The model's one worker thread, with a queue of at most ``queue_size`` waiting requests."""

    def __init__(self, model: nn.Module | None, table: Table, *, queue_size: int = 64,
                 max_active: int = 16, start_token: int = 0, batch: bool = True, threads: int | None = None,
                 build: Build | None = None) -> None:
        """``batch=False`` steps the requests in flight one after another, for measuring the batch;
        ``threads``: the worker's CPU threads (torch's own count when None); ``build`` (instead of
        ``model``): makes the model on the worker thread when it starts (``Engine.built_on_worker``)."""
        self.table, self.start_token, self.batched, self.max_active = table, start_token, batch, max_active
        self.threads = threads or torch.get_num_threads()
        self._build = build
        if model is not None:
            self._adopt(model)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._calls: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="gptiny-generation", daemon=True)
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    @classmethod
    def built_on_worker(cls, build: Build, **options) -> Engine:
        """An engine whose model, table and start token come from ``build()``, run on the worker.

        Then every torch operation of the server runs on one thread. A model built on another
        thread leaves that thread an OpenMP pool of its own; with more pool threads than cores,
        libgomp's threads sleep between parallel regions instead of spinning, and the worker
        generated at a third of the speed of ``gptiny sample`` (benchmarks/README.md).
        """
        return cls(None, (), build=build, **options)

    def _adopt(self, model: nn.Module) -> None:
        self.model, self.device, self.batch = model, next(model.parameters()).device, Batch(model, self.batched)

    def start(self) -> None:
        """Start the worker (once; again is nothing); with ``build``, wait until the model is built and
        raise what building raised."""
        if self._thread.ident is not None:
            return
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            self._thread.join()
            raise self._failed

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
        """Run ``work(model)`` on the worker thread before its next round, even with every slot taken."""
        future: Future = Future()
        try:
            self._calls.put_nowait((work, future))
        except queue.Full:
            raise QueueFull() from None
        with contextlib.suppress(queue.Full):  # a full queue means the worker is not waiting on it
            self._queue.put_nowait(_WAKE)
        return future

    def _run(self) -> None:
        # The thread count is a setting of each thread's own OpenMP team: set where the work runs.
        torch.set_num_threads(self.threads)
        try:
            if self._build is not None:
                model, self.table, self.start_token = self._build()
                self._adopt(model)
        except BaseException as error:  # handed to start(), on the thread that waits for it
            self._failed = error
            return
        finally:
            self._ready.set()
        self._loop()

    def _loop(self) -> None:
        active: list[_Active] = []
        while True:
            # One new request joins per round while others are in flight: its prompt pass is the one
            # pause the live streams take for it. An idle worker waits for the next item.
            admitted = False
            while len(active) < self.max_active and not (admitted and active):
                try:
                    item = self._queue.get(block=not active)
                except queue.Empty:
                    break
                if item is None:
                    return
                if isinstance(item, Job):
                    begun = self._begin(item)
                    active.extend(begun)
                    admitted = admitted or bool(begun)
                self._run_calls()
            self._run_calls()
            active = self._round(active)

    def _run_calls(self) -> None:
        while True:
            try:
                work, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work(self.model))
            except Exception as error:  # handed to the waiting request, which reports it
                future.set_exception(error)

    def _begin(self, job: Job) -> list[_Active]:
        """The job in flight, its prompt fed; none if that failed (and the job was told)."""
        c = job.completion
        if job.cancelled.is_set():  # its client left while it waited: no prompt pass for it
            job.deliver(("done", 0, None))
            return []
        try:
            generator = seeded_generator(self.device, c.seed)
            with torch.inference_mode():
                stream = self.batch.join(c, generator, self.start_token)
        except Exception as error:  # handed to the request, which reports it
            job.deliver(("error", f"generation failed: {error}", None))
            return []
        bytewise = bool(self.table) and isinstance(self.table[0], bytes)
        texts = [TextStream(self.table) for _ in range(c.n)] if bytewise else None
        return [_Active(job, stream, [SampleText(c.stops) for _ in range(c.n)], texts)]

    @torch.inference_mode()
    def _round(self, active: list[_Active]) -> list[_Active]:
        """Every request in flight one token further; those that go on."""
        try:  # a failure anywhere in the round is delivered, rather than losing the worker thread
            tokens, going, at = self.batch.draw(), [], 0  # every drawing stream's, even one cancelled since
            for a in active:
                if not a.stream.drawing:  # waiting for a refill: it has no new token
                    if not (a.job.cancelled.is_set() and self._end(a)):
                        going.append(a)
                    continue
                if not self._take(a, tokens[at : at + a.stream.n]):
                    going.append(a)
                at += a.stream.n
            self.batch.keep([a.stream for a in going])
            self.batch.step()
        except Exception as error:
            for a in active:
                if not a.ended:
                    a.job.deliver(("error", f"generation failed: {error}", None))
            self.batch.keep([])
            return []
        return going

    def _take(self, a: _Active, tokens: list[int]) -> bool:
        """Pass the text of a request's next tokens on (one a sample); True once it has ended."""
        if a.job.cancelled.is_set():  # the request learns it is over, and waits no longer
            return self._end(a)
        table, texts = self.table, a.texts
        for i, token in enumerate(tokens):
            sample = a.samples[i]
            if sample.stopped:
                continue
            piece = sample.add(table[token] if texts is None else texts[i].push(token))
            if piece:
                a.job.deliver(("text", i, piece))
            if sample.stopped:
                sample.tokens = a.done + 1
                a.job.deliver(("end", i, "stop"))
        a.done += 1
        if a.done < a.job.completion.max_tokens and not all(s.stopped for s in a.samples):
            return False
        for i, sample in enumerate(a.samples):
            if not sample.stopped:
                self._finish(a, i, sample)
        return self._end(a)

    def _finish(self, a: _Active, i: int, sample: SampleText) -> None:
        """End a sample at its length: the bytes a text stream held back, then what a stop string held."""
        rest = "" if a.texts is None else sample.add(a.texts[i].flush())
        if not sample.stopped:
            rest += sample.finish()
        if rest:
            a.job.deliver(("text", i, rest))
        a.job.deliver(("end", i, "stop" if sample.stopped else "length"))

    @staticmethod
    def _end(a: _Active) -> bool:
        a.ended = True
        # a sample's tokens are counted when it meets a stop string; the others drew every round
        a.job.deliver(("done", sum(s.tokens or a.done for s in a.samples), None))
        return True

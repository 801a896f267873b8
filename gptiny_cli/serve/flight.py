"""A request's jobs in flight in the ``Engine`` and what they deliver, passed on to its client: as
one whole completion or as a stream of server-sent events.

The worker thread delivers events; the event loop takes them in batches (``Flight``), so that
waking it, which takes the GIL from the worker, happens once per gathered piece and not per token.
A job's end wakes the loop at once: the last piece does not wait out the gathering pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid

from fastapi import Request

from gptiny_cli.serve.batch import Completion
from gptiny_cli.serve.engine import Engine, Job, QueueFull
from gptiny_cli.serve.protocol import ApiError, chunk_event, completion_object

# How long a request's text gathers between two pieces sent. Waking the event loop takes the GIL
# from the worker: woken for every character, it halved the worker's speed.
GATHER_S = 0.02


def busy() -> ApiError:
    return ApiError(503, "the server is busy: its queue is full; retry in a moment", kind="server_error",
                    code="queue_full")


class Flight:
    """One request's jobs in the engine, their events gathered for the event loop.

    The worker appends events to a buffer and wakes the loop only when the buffer was empty, or
    when a job is over; the loop takes everything that piled up at once, then lets the next piece
    gather for ``GATHER_S`` or until a job ends.
    """

    def __init__(self, engine: Engine, completions: list[Completion]) -> None:
        self._loop = asyncio.get_running_loop()
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._over = asyncio.Event()  # a job ended (or failed) since the loop last took the buffer
        self.jobs = [Job(c, self._deliverer(p * c.n)) for p, c in enumerate(completions)]
        try:
            for job in self.jobs:
                engine.submit(job)
        except QueueFull:
            self.cancel()
            raise busy() from None
        self.pending = len(self.jobs)
        self.generated = 0

    def _deliverer(self, offset: int):
        def deliver(event: tuple) -> None:  # on the worker thread
            kind, a, b = event
            with self._lock:
                self._buffer.append((kind, a + offset, b) if kind in ("text", "end") else event)
                first = len(self._buffer) == 1
            over = kind in ("done", "error")
            if first or over:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                    self._loop.call_soon_threadsafe(self._wake, over)
        return deliver

    def _wake(self, over: bool) -> None:  # on the event loop
        self._ready.set()
        if over:
            self._over.set()

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    async def __aiter__(self):
        """Events ("text"|"end", choice, value) until every job is done; an engine error raises.

        Text that arrived while the client was being served comes as one piece per choice.
        """
        while self.pending:
            await self._ready.wait()
            with self._lock:
                events, self._buffer = self._buffer, []
                self._ready.clear()
                self._over.clear()
            for kind, a, b in _merged(events):
                if kind == "error":
                    raise ApiError(500, str(a), kind="server_error")
                if kind == "done":
                    self.pending -= 1
                    self.generated += a
                else:
                    yield kind, a, b
            if self.pending:  # let text gather: the first piece goes out at once, the rest in pieces
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._over.wait(), GATHER_S)


def _merged(events: list[tuple]) -> list[tuple]:
    """Consecutive pieces of text of the same choice joined into one."""
    out: list[tuple] = []
    for event in events:
        if out and event[0] == out[-1][0] == "text" and event[1] == out[-1][1]:
            out[-1] = ("text", event[1], out[-1][2] + event[2])
        else:
            out.append(event)
    return out


async def complete_whole(flight: Flight, request: Request, model_id: str, prompt_tokens: int) -> dict:
    """The whole completion, once every job is done; a client that leaves cancels them."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    watcher = asyncio.create_task(_watch_disconnect(request, flight))
    try:
        async for kind, choice, value in flight:
            if kind == "text":
                texts[choice] = texts.get(choice, "") + value
            else:
                reasons[choice] = value
    finally:  # an error in one prompt's job, or this handler cancelled: the other jobs stop too
        watcher.cancel()
        flight.cancel()
    order = sorted(reasons)
    return completion_object(f"cmpl-{uuid.uuid4().hex}", model_id, [texts.get(i, "") for i in order],
                             [reasons[i] for i in order], prompt_tokens, flight.generated)


async def _watch_disconnect(request: Request, flight: Flight) -> None:
    """Cancel the flight when its client goes; the body is read, so the next message is the disconnect
    (waited for, not polled)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    flight.cancel()


async def stream_events(flight: Flight, model_id: str):
    """The server-sent events of a streamed completion, ended by ``[DONE]`` or by an error's."""
    request_id = f"cmpl-{uuid.uuid4().hex}"
    try:
        async for kind, choice, value in flight:
            text, reason = (value, None) if kind == "text" else ("", value)
            yield chunk_event(request_id, model_id, choice, text, reason)
        yield "data: [DONE]\n\n"
    except ApiError as error:
        yield f"data: {json.dumps(error.body())}\n\n"
    finally:  # the client went away, or the stream ended: either way no more steps for it
        flight.cancel()

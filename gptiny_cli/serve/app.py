"""The ASGI app: OpenAI's ``/v1/models`` and ``/v1/completions``, ``/health``, ``/api/explain`` and
the playground at ``/``. FastAPI is the optional ``serve`` extra; this module is imported only
by ``gptiny serve`` and the tests.

Handlers never touch the model: they check a request, hand it to the ``Engine``'s worker thread
and pass on what it delivers, through an asyncio queue, to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import uuid
from dataclasses import dataclass, field
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from gptiny_cli.data import Vocab
from gptiny_cli.serve.batch import Completion
from gptiny_cli.serve.engine import Engine, Job, QueueFull
from gptiny_cli.serve.explain import explain_json, parse_explain
from gptiny_cli.serve.protocol import (
    MAX_BODY,
    ApiError,
    Defaults,
    Limits,
    chunk_event,
    completion_object,
    parse_completion,
    parse_json,
)

RETRY_AFTER_S = 1
# A stream's events as they come: neither a cache nor a proxy such as nginx may hold them back.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# How long a request's text gathers between two pieces sent. Waking the event loop takes the GIL
# from the worker: woken for every character, it halved the worker's speed.
GATHER_S = 0.02


@dataclass
class ServeOptions:
    """How the app behaves: the model's name, the key it asks for, what requests may ask."""

    model_id: str
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    defaults: Defaults = field(default_factory=Defaults)
    cors_origins: list[str] = field(default_factory=list)
    # Host names a request may be addressed to; None takes any. A server on this machine alone
    # answers only its own names, so a page whose DNS name is rebound to 127.0.0.1 reads nothing.
    hosts: tuple[str, ...] | None = None
    runtime: dict = field(default_factory=dict)  # device, precision and threads, shown by /health


def _error(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if error.status == 503 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _read_body(request: Request) -> dict:
    """The JSON body, refused with 413 past MAX_BODY bytes before it is all read.

    Only ``application/json``: a browser page may send ``text/plain`` anywhere without asking
    (no CORS preflight), so that content type would let any page use a server without a key.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"the request body must be sent as 'Content-Type: application/json', "
                            f"not {kind or 'without a content type'!r}", code="unsupported_media_type")
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise ApiError(413, f"the request body is over {MAX_BODY:,} bytes", code="body_too_large")
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY:,} bytes", code="body_too_large")
    return parse_json(bytes(raw))


def _busy() -> ApiError:
    return ApiError(503, "the server is busy: its queue is full; retry in a moment", kind="server_error",
                    code="queue_full")


class _Flight:
    """One request's jobs in the engine, their events gathered for the event loop.

    The worker appends events to a buffer and wakes the loop only when the buffer was empty;
    the loop takes everything that piled up at once, then lets the next piece gather.
    """

    def __init__(self, engine: Engine, completions: list[Completion]) -> None:
        self._loop = asyncio.get_running_loop()
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.jobs = [Job(c, self._deliverer(p * c.n)) for p, c in enumerate(completions)]
        try:
            for job in self.jobs:
                engine.submit(job)
        except QueueFull:
            self.cancel()
            raise _busy() from None
        self.pending = len(self.jobs)
        self.generated = 0

    def _deliverer(self, offset: int):
        def deliver(event: tuple) -> None:  # on the worker thread
            kind, a, b = event
            with self._lock:
                self._buffer.append((kind, a + offset, b) if kind in ("text", "end") else event)
                wake = len(self._buffer) == 1
            if wake:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                    self._loop.call_soon_threadsafe(self._ready.set)
        return deliver

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
            for kind, a, b in _merged(events):
                if kind == "error":
                    raise ApiError(500, str(a), kind="server_error")
                if kind == "done":
                    self.pending -= 1
                    self.generated += a
                else:
                    yield kind, a, b
            if self.pending:  # let text gather: the first piece goes out at once, the rest in pieces
                await asyncio.sleep(GATHER_S)


def _merged(events: list[tuple]) -> list[tuple]:
    """Consecutive pieces of text of the same choice joined into one."""
    out: list[tuple] = []
    for event in events:
        if out and event[0] == out[-1][0] == "text" and event[1] == out[-1][1]:
            out[-1] = ("text", event[1], out[-1][2] + event[2])
        else:
            out.append(event)
    return out


async def _complete_whole(flight: _Flight, request: Request, options: ServeOptions, prompt_chars: int) -> dict:
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
    return completion_object(f"cmpl-{uuid.uuid4().hex}", options.model_id, [texts.get(i, "") for i in order],
                             [reasons[i] for i in order], prompt_chars, flight.generated)


async def _watch_disconnect(request: Request, flight: _Flight) -> None:
    """Cancel the flight when its client goes; the body is read, so the next message is the disconnect
    (waited for, not polled)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    flight.cancel()


async def _stream(flight: _Flight, options: ServeOptions):
    request_id = f"cmpl-{uuid.uuid4().hex}"
    try:
        async for kind, choice, value in flight:
            text, reason = (value, None) if kind == "text" else ("", value)
            yield chunk_event(request_id, options.model_id, choice, text, reason)
        yield "data: [DONE]\n\n"
    except ApiError as error:
        yield f"data: {json.dumps(error.body())}\n\n"
    finally:  # the client went away, or the stream ended: either way no more steps for it
        flight.cancel()


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        what = "a wrong API key" if given else "no API key"
        raise ApiError(401, f"{what} was given: send 'Authorization: Bearer KEY' with the server's key",
                       code="invalid_api_key")


def create_app(engine: Engine, vocab: Vocab, options: ServeOptions) -> FastAPI:
    """The app, starting ``engine``'s worker when it starts and stopping it when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="gptiny", summary=f"Serving {options.model_id}", lifespan=lifespan)
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_exception_handler(ApiError, lambda _, error: _error(error))
    if options.hosts is not None:
        app.add_middleware(_KnownHost, hosts=options.hosts)
    _routes(app, engine, vocab, options)
    return app


class _KnownHost:
    """Answer 400 to a request whose Host header is not one of ``hosts`` (plain ASGI: Starlette's
    ``BaseHTTPMiddleware`` would hide a client's disconnect from the handlers)."""

    def __init__(self, app, hosts: tuple[str, ...]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.hosts:
                refusal = ApiError(400, "the Host header names another server; address this one by "
                                        f"{' or '.join(self.hosts)}", code="invalid_host")
                await _error(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` is ``::1``."""
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _routes(app: FastAPI, engine: Engine, vocab: Vocab, options: ServeOptions) -> None:
    page = resources.files("gptiny_cli.serve").joinpath("static/playground.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": options.model_id, "max_tokens": options.limits.max_tokens,
                "vocab_size": vocab.size, "block_size": engine.model.block_size,
                "api_key_required": options.api_key is not None, **options.runtime}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        _check_key(request, options.api_key)
        return {"object": "list", "data": [{"id": options.model_id, "object": "model", "created": 0,
                                            "owned_by": "gptiny"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        _check_key(request, options.api_key)
        body = await _read_body(request)
        model = body.get("model")
        if model is not None and model != options.model_id:
            raise ApiError(404, f"the model {model!r} does not exist; this server has {options.model_id!r}",
                           param="model", code="model_not_found")
        wanted, prompt_chars = parse_completion(body, vocab, options.limits, options.defaults,
                                                engine.model.block_size)
        flight = _Flight(engine, wanted)
        if body.get("stream"):
            return StreamingResponse(_stream(flight, options), media_type="text/event-stream", headers=SSE_HEADERS)
        return await _complete_whole(flight, request, options, prompt_chars)

    @app.post("/api/explain")
    async def explanation(request: Request) -> Response:
        _check_key(request, options.api_key)
        wanted = parse_explain(await _read_body(request), vocab, engine.model.block_size)
        try:
            future = engine.call(lambda model: explain_json(model, vocab.chars, wanted))
        except QueueFull:
            raise _busy() from None
        return Response(await asyncio.wrap_future(future), media_type="application/json")

"""The ASGI app: OpenAI's ``/v1/models`` and ``/v1/completions``, ``/health``, ``/api/explain``,
``/api/tokenize`` and the playground at ``/``. FastAPI is the optional ``serve`` extra; this module is imported only
by ``gptiny serve`` and the tests.

Handlers never touch the model: they check a request, hand it to the ``Engine``'s worker thread
and pass on what it delivers (``flight.py``) to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from dataclasses import dataclass, field
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from gptiny_cli.data import Tokenizer
from gptiny_cli.serve.engine import Engine, QueueFull
from gptiny_cli.serve.explain import explain_json, parse_explain, tokenized
from gptiny_cli.serve.flight import Flight, busy, complete_whole, stream_events
from gptiny_cli.serve.protocol import MAX_BODY, ApiError, Defaults, Limits, parse_completion, parse_json

RETRY_AFTER_S = 1
# A stream's events as they come: neither a cache nor a proxy such as nginx may hold them back.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        what = "a wrong API key" if given else "no API key"
        raise ApiError(401, f"{what} was given: send 'Authorization: Bearer KEY' with the server's key",
                       code="invalid_api_key")


def create_app(engine: Engine, vocab: Tokenizer, options: ServeOptions) -> FastAPI:
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


def _routes(app: FastAPI, engine: Engine, vocab: Tokenizer, options: ServeOptions) -> None:
    page = resources.files("gptiny_cli.serve").joinpath("static/playground.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": options.model_id, "max_tokens": options.limits.max_tokens,
                "tokenizer": vocab.kind, "vocab_size": vocab.size, "block_size": engine.model.block_size,
                "api_key_required": options.api_key is not None, **options.runtime}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        _check_key(request, options.api_key)
        return {"object": "list", "data": [{"id": options.model_id, "object": "model", "created": 0,
                                            "owned_by": "gptiny", "tokenizer": vocab.kind,
                                            "vocab_size": vocab.size}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        _check_key(request, options.api_key)
        body = await _read_body(request)
        model = body.get("model")
        if model is not None and model != options.model_id:
            raise ApiError(404, f"the model {model!r} does not exist; this server has {options.model_id!r}",
                           param="model", code="model_not_found")
        wanted, prompt_tokens = parse_completion(body, vocab, options.limits, options.defaults,
                                                 engine.model.block_size)
        flight = Flight(engine, wanted)
        if body.get("stream"):
            return StreamingResponse(stream_events(flight, options.model_id), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        return await complete_whole(flight, request, options.model_id, prompt_tokens)

    @app.post("/api/explain")
    async def explanation(request: Request) -> Response:
        _check_key(request, options.api_key)
        wanted = parse_explain(await _read_body(request), vocab, engine.model.block_size)
        try:
            future = engine.call(lambda model: explain_json(model, vocab, wanted))
        except QueueFull:
            raise busy() from None
        return Response(await asyncio.wrap_future(future), media_type="application/json")

    @app.post("/api/tokenize")
    async def tokenize(request: Request) -> dict:
        _check_key(request, options.api_key)
        return tokenized(await _read_body(request), vocab)

"""The ``serve`` command: a run behind an OpenAI-compatible HTTP API, with the playground at ``/``.

Registered on the app by ``cli/__init__.py``. FastAPI and uvicorn (``gptiny[serve]``) and torch
are imported inside the command, so ``--help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors
from gptiny_cli.errors import GptinyError
from gptiny_cli.serve.listen import LOCAL_HOSTS, listen

MISSING = "serving needs FastAPI and uvicorn, an optional extra: pip install 'gptiny[serve]'"
SERVE_PACKAGES = ("fastapi", "uvicorn", "starlette", "pydantic")


def serve(
    run: Annotated[str, typer.Argument(help="A run directory, or `latest`.")] = "latest",
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        help="Require 'Authorization: Bearer KEY' on the API \\[default: $GPTINY_API_KEY].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(
        help="auto, float32, bfloat16 or int8; auto: int8 on a CPU, float32 elsewhere.")] = "auto",
    threads: Annotated[int | None, typer.Option(
        help="CPU threads generating \\[default: torch's, one per core].", min=1)] = None,
    max_tokens: Annotated[int, typer.Option(
        help="The most tokens one request may ask for (characters, for a character run).")] = 2000,
    queue_size: Annotated[int, typer.Option(help="Requests that may wait; more are answered 503.")] = 64,
    cors_origin: Annotated[list[str] | None, typer.Option(
        help="Allow browser pages from this origin (repeatable); none by default.")] = None,
    checkpoint: Annotated[Which, typer.Option(help="Weights with the best val loss, or the last ones.")] = Which.best,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Serve a run: OpenAI's /v1/completions, a playground page at /, API docs at /docs.

    Examples: gptiny serve latest; gptiny serve runs/<id> --port 8080 --api-key s3cret;
    then: curl localhost:8000/v1/completions -H 'Content-Type: application/json'
    -d '{"prompt": "ROMEO:", "max_tokens": 100}'
    """
    try:
        import uvicorn

        from gptiny_cli.serve.app import create_app
    except ImportError as error:
        if (error.name or "").split(".")[0] not in SERVE_PACKAGES:
            raise
        with user_errors():
            raise GptinyError(MISSING) from None

    key = api_key or os.environ.get("GPTINY_API_KEY") or None
    with user_errors():
        if max_tokens < 1 or queue_size < 1:
            raise GptinyError("--max-tokens and --queue-size must be at least 1")
        sock = listen(host, port)  # before the model loads: a port in use fails at once
    with sock:
        with user_errors():
            engine, vocab, options, where = _load(run, runs_dir, checkpoint.value, device, precision, queue_size,
                                                  threads)
        options.api_key, options.limits.max_tokens, options.cors_origins = key, max_tokens, cors_origin or []
        options.hosts = LOCAL_HOSTS if host in LOCAL_HOSTS else None
        options.limits.max_prompts = min(options.limits.max_prompts, queue_size)
        _announce(host, sock.getsockname()[1], key, where)
        uvicorn.Server(uvicorn.Config(create_app(engine, vocab, options), log_level="warning")).run(sockets=[sock])


def _announce(host: str, port: int, key: str | None, where: str) -> None:
    """The warning for an open host, and the URLs (with the port the system chose for --port 0)."""
    warning = open_host_warning(host, key)
    if warning:
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    out.print(f"serving {where}\nplayground: http://{shown}:{port}/\n"
              f"API docs:   http://{shown}:{port}/docs", highlight=False)


def open_host_warning(host: str, api_key: str | None) -> str | None:
    """What to warn of when the server listens beyond this machine without a key."""
    if host in LOCAL_HOSTS or api_key:
        return None
    return (f"listening on {host} without an API key: anyone who can reach this machine can use it; "
            "set --api-key or GPTINY_API_KEY")


def _load(run: str, runs_dir: Path, which: str, device: str, precision: str, queue_size: int,
          threads: int | None) -> tuple:
    """The engine over the run's model, its vocabulary, the app's options and a line saying what is served."""
    from gptiny_cli.generation.inference import for_inference
    from gptiny_cli.hardware.device import auto_sample_precision, pick_device
    from gptiny_cli.hardware.setup import place, use_device
    from gptiny_cli.serve.app import ServeOptions
    from gptiny_cli.serve.engine import Engine, table_of
    from gptiny_cli.serve.protocol import Defaults
    from gptiny_cli.store.runs import load_run, resolve_run

    built: dict = {}

    def build() -> tuple:  # on the engine's worker thread: every torch operation of the server there
        loaded = load_run(resolve_run(run, runs_dir), which)
        dev = use_device(pick_device(device), tf32=False)  # as gptiny sample: the same seed, the same text
        chosen = auto_sample_precision(dev)[0] if precision == "auto" else precision
        built.update(loaded=loaded, dev=dev, chosen=chosen)
        return place(for_inference(loaded.model, chosen, dev), dev), table_of(loaded.vocab), loaded.vocab.start_token

    engine = Engine.built_on_worker(build, queue_size=queue_size, threads=threads)
    engine.start()
    loaded, dev, chosen = built["loaded"], built["dev"], built["chosen"]
    sample = loaded.config.sample
    options = ServeOptions(loaded.run_dir.name, defaults=Defaults(temperature=sample.temperature, top_k=sample.top_k),
                           runtime={"device": str(dev), "precision": chosen, "threads": engine.threads})
    return engine, loaded.vocab, options, f"{loaded.weights} on {dev}, {chosen}, {engine.threads} threads"

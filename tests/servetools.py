"""Helpers for the serve tests: the real app under uvicorn on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from gptiny_cli.generation.inference import for_inference
from gptiny_cli.serve.app import ServeOptions, create_app
from gptiny_cli.serve.engine import Engine, table_of
from gptiny_cli.serve.listen import LOCAL_HOSTS
from gptiny_cli.serve.protocol import Limits
from gptiny_cli.store.runs import load_run


@contextmanager
def serving(run_dir: Path, *, api_key: str | None = None, max_tokens: int = 500, queue_size: int = 64,
            max_active: int = 16) -> Iterator[str]:
    """The run served as ``gptiny serve`` serves it (int8 on the CPU), at the yielded base URL."""
    loaded = load_run(run_dir)
    model = for_inference(loaded.model, "int8", loaded.model.tok_emb.weight.device)
    engine = Engine(model, table_of(loaded.vocab), queue_size=queue_size, max_active=max_active,
                    start_token=loaded.vocab.start_token)
    options = ServeOptions(run_dir.name, api_key, Limits(max_tokens=max_tokens), hosts=LOCAL_HOSTS)
    app = create_app(engine, loaded.vocab, options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()

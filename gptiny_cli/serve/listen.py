"""The server's listening socket, bound before the model is loaded.

Binding first makes a port in use, a port out of range or an address this machine does not have
one clear error before any work, and lets ``--port 0`` (any free port) print the port it got.
"""

from __future__ import annotations

import socket

from gptiny_cli.errors import GptinyError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # the names of this machine alone


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``, for uvicorn to serve on (it calls ``listen``)."""
    if not 0 <= port <= 65535:
        raise GptinyError(f"--port {port} is invalid: must be between 0 and 65535 (0: any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise GptinyError(f"--host {host} is not an address to listen on ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise GptinyError(f"cannot listen on {host}:{port}: {err.strerror}; choose another --port "
                          "or stop what uses it") from None
    return sock

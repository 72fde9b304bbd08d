"""Running the inspection app with uvicorn: in the foreground (``distilad serve``) or in a
background thread on a free port (tests and the load benchmark)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from distilad.errors import DistiladError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port); DistiladError with one
    line when the address cannot be used (port taken, unknown host, no permission)."""
    if not 0 <= int(port) <= 65535:
        raise DistiladError(f"port must be 0..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise DistiladError(f"cannot listen on host {host!r}: {e.strerror}") from e
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise DistiladError(f"cannot listen on {host}:{port}: {e.strerror or e} (another server "
                            f"on that port? choose another with -p)") from e
    sock.set_inheritable(True)
    return sock


def _server(app: Any, quiet: bool) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning" if quiet else "info", access_log=not quiet,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def run_server(app: Any, sock: socket.socket, quiet: bool = False) -> None:
    """Serve ``app`` on the bound ``sock`` until Ctrl-C / SIGTERM (blocking)."""
    _server(app, quiet).run(sockets=[sock])


class BackgroundServer:
    """``app`` served by uvicorn in a daemon thread on ``host`` and a free port, as a context
    manager: ``with BackgroundServer(app) as srv: requests to srv.url``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", quiet: bool = True):
        self.sock = bind_socket(host, 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = _server(app, quiet)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True, name="distilad-serve")

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

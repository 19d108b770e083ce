"""The one way tests serve HTTP: a WSGI app on 127.0.0.1, answered by a daemon thread.

The fakes (Shopify, the Graph API, WooCommerce over TLS), the receivers standing in for the app
and the browser tests' real app all start and stop a server the same way; this is that way.
A request runs on its own thread (werkzeug's ``threaded=True``), so slow answers overlap.
``stop`` shuts the loop down, closes the socket and joins the thread: nothing outlives a test.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

HOST = "127.0.0.1"  # the only host the suite lets a socket reach (pytest-socket, pyproject.toml)
# Seconds between the serving loop's checks for shutdown: stop() returns within about this.
POLL_INTERVAL_SECONDS = 0.05
# Seconds stop() waits for the serving thread to end after shutdown.
JOIN_TIMEOUT_SECONDS = 5


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log per request; errors are still logged."""


class ThreadedServer:
    """``app`` served on 127.0.0.1:``port`` (a free port when 0) between ``start`` and ``stop``.

    ``ssl_context`` serves HTTPS; ``request_handler`` is how each request is read (quiet by
    default; werkzeug's own logs every request).
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        port: int = 0,
        name: str = "test-server",
        request_handler: type[WSGIRequestHandler] = QuietHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.port = port
        self.name = name
        self.request_handler = request_handler
        self.ssl_context = ssl_context
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """``http(s)://127.0.0.1:<port>``, once started."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def start(self) -> Self:
        self._server = make_server(
            HOST,
            self.port,
            self.app,
            threaded=True,
            request_handler=self.request_handler,
            ssl_context=self.ssl_context,
        )
        self.port = self._server.port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_SECONDS},
            name=self.name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice, or before ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_SECONDS)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def serving(app: WSGIApplication, *, port: int = 0) -> Iterator[str]:
    """The app under test on 127.0.0.1 (a free port unless given) for the block; yields its base URL.

    Its requests are logged as werkzeug logs them, so a failing page test shows what the browser
    asked for.
    """
    with ThreadedServer(app, port=port, name="app-under-test", request_handler=WSGIRequestHandler) as server:
        yield server.origin

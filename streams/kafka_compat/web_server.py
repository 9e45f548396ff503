"""The options the worker's web server starts with, which Faust gives no way to set.

Faust makes its aiohttp runner without options (``faust.web.drivers.aiohttp.Web``), so
the runner is replaced, as the app is built, by one on the same aiohttp application that
has them: Faust keeps it in a private attribute, checked here so that a Faust that moves
it fails as the app is built instead of silently serving without them
(``tests/unit/test_hostile_worker.py`` runs the views on Faust's own driver and fails
without them).

- ``auto_decompress`` off: aiohttp inflated a ``Content-Encoding: gzip`` body as it
  arrived, in the event loop, before any view could refuse it (a 1 MB gzip body of spaces
  held the loop, and with it the worker's consumers, for 2 s, then was refused as over the
  1 MiB body limit). Views refuse compressed bodies (``streams/web.py: read_body``).
- ``keepalive_timeout`` 75 s: a connection that sends no complete request is closed then
  (aiohttp's default is an hour, so idle connections piled up: 3,000 held 3,000 files).
- at most ``web_max_connections`` connections at once (``BoundedServer``): one over the
  bound is answered 503 and closed as it is accepted, nothing of it read. Unbounded,
  connections that sent nothing took every descriptor the process may open (1,009 under
  a 1,024 limit), for as long as their client kept opening them: the worker's Kafka
  clients could not reconnect (after a broker restart no record was processed until the
  connections timed out), the poison-pill marker could not be written, and asyncio logged
  a traceback for each refused ``accept`` (about 3,000 a second, 1.4 MB/s of log).
  ``reserve_descriptors`` makes sure the process may open the bound's descriptors and
  ``FD_RESERVE`` more for its own.
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import faust
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "keepalive_timeout": 75.0}

#: Descriptors kept beyond ``web_max_connections`` for the worker's own files and Kafka
#: connections, and for connections over the bound, each open until its 503 is written
#: (asyncio accepts up to 128 a turn of the loop, and closes one a few turns later).
FD_RESERVE = 512

#: A connection made within this long is counted while the loop has not yet started it
#: (asyncio starts it a turn after making it; one never started is forgotten then).
_STARTING_S = 1.0


def _refusal(max_connections: int) -> bytes:
    body = json.dumps(
        {"error": f"the worker serves {max_connections} HTTP connections at once: retry later"}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Refused(asyncio.Protocol):
    """A connection over the bound: answered 503 and closed as it starts, nothing read."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(self.answer)
        transport.close()


class BoundedServer(web.Server):
    """aiohttp's server, serving at most ``max_connections`` connections at once."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self._refusal = _refusal(max_connections)
        self._starting: dict[RequestHandler, float] = {}

    def __call__(self) -> RequestHandler | _Refused:  # type: ignore[override]
        now = self._loop.time()
        self._starting = {h: t for h, t in self._starting.items() if now - t < _STARTING_S}
        if len(self._connections) + len(self._starting) >= self.max_connections:
            return _Refused(self._refusal)
        handler = super().__call__()
        self._starting[handler] = now
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._starting.pop(handler, None)
        super().connection_made(handler, transport)


class BoundedRunner(web.AppRunner):
    """Faust's runner, whose server is a ``BoundedServer``."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return BoundedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            max_connections=self.max_connections,
            **made._kwargs,
        )


def configure_web_server(app: faust.App, max_connections: int) -> None:
    """Start ``app``'s web server with ``SERVER_OPTIONS``, serving at most
    ``max_connections`` connections at once."""
    runner = getattr(app.web, "_runner", None)
    options = getattr(runner, "_kwargs", None)
    if not isinstance(runner, web.AppRunner) or not isinstance(options, dict):
        raise RuntimeError("Faust's web driver has no aiohttp runner to configure")
    app.web._runner = BoundedRunner(  # type: ignore[attr-defined]
        runner.app, max_connections=max_connections, **{**options, **SERVER_OPTIONS}
    )


def reserve_descriptors(max_connections: int) -> None:
    """Raise the process' limit on open files to ``max_connections`` + ``FD_RESERVE``
    where it is lower; ``ValueError`` naming the fix where the hard limit forbids it."""
    needed = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(
            f"web_max_connections={max_connections} needs {needed} open files "
            f"({FD_RESERVE} kept for the worker's own), and this process may open {hard} "
            f"(ulimit -Hn): set web_max_connections to at most {hard - FD_RESERVE}, "
            "or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

"""The options the worker's web server starts with, which Faust gives no way to set.

Faust makes its aiohttp runner without options (``faust.web.drivers.aiohttp.Web``), so
they are put where the runner keeps them for the server it makes as it starts: a private
attribute, checked here so that a Faust that moves it fails as the app is built instead
of silently serving without them (``tests/unit/test_hostile_worker.py`` runs the views on
Faust's own runner and fails without them).

- ``auto_decompress`` off: aiohttp inflated a ``Content-Encoding: gzip`` body as it
  arrived, in the event loop, before any view could refuse it (a 1 MB gzip body of spaces
  held the loop, and with it the worker's consumers, for 2 s, then was refused as over the
  1 MiB body limit). Views refuse compressed bodies (``streams/web.py: read_body``).
- ``keepalive_timeout`` 75 s: a connection that sends no complete request is closed then
  (aiohttp's default is an hour, so idle connections piled up: 3,000 held 3,000 files).
"""

from __future__ import annotations

from typing import Any

import faust

SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "keepalive_timeout": 75.0}


def configure_web_server(app: faust.App) -> None:
    """Start ``app``'s web server with ``SERVER_OPTIONS``."""
    runner = getattr(app.web, "_runner", None)
    options = getattr(runner, "_kwargs", None)
    if not isinstance(options, dict):
        raise RuntimeError("Faust's web driver has no aiohttp runner to configure")
    options.update(SERVER_OPTIONS)

"""The worker's HTTP API, served by Faust's web server: recommendations, items,
interactions in, health, Prometheus metrics, the live dashboard (``dashboard.html``),
and the OpenAPI description of it all.

A user's latest list lives in the users table, so the request is routed to the worker
that owns the user's partition; the other views answer locally. The partition is the
interactions topic's for the user id as producers key it (``topic_route``), where the
user's events, and with them the table entry, are: Faust's ``table_route`` hashes the key
as the table's changelog writes it, JSON-quoted (``"ann"``, not ``ann``), so with two
workers it sent about half the requests to the worker without the user.

Every id the topics take (1-256 characters, any of them) can be read: a path segment
matches any percent-encoded text (aiohttp's default segment refuses ``{`` and ``}``, so
``/api/users/%7Bx%7D/recommendations/`` was a 404 for a user who had a list), and each
read has a query form, ``/api/recommendations/?user_id=`` and ``/api/item/?item_id=``,
for the ids no path can carry: ``.`` and ``..`` are dot segments, which browsers, yarl and
urllib3 resolve away before sending (``%2E%2E`` included), and so did Faust's routing
of a request to the worker holding the user.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

import faust
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from faust.web import View
from pydantic import BaseModel, ValidationError

from streams.bounds import MAX_ERROR_CHARS, clip
from streams.events import (
    MAX_ID_CHARS,
    DeadLetter,
    Interaction,
    Recommendations,
    describe_validation_error,
)
from streams.kafka_compat.web_server import configure_web_server
from streams.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


def _component_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """The models' JSON schemas as OpenAPI components, their nested models hoisted."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "string", "description": "what is wrong, and the fix"}},
        "required": ["error"],
    }
    return schemas


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or _ref("Error")}},
    }


_ANY_OBJECT: dict[str, Any] = {"type": "object"}

#: A path parameter matching any one segment as sent, percent-escapes included: aiohttp's
#: default (``[^{}/]+``) refuses ``{`` and ``}``, which ids may hold.
ANY_SEGMENT = "[^/]+"


def id_refusal(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the ``name`` query parameter of a read (None if it can).

    >>> id_refusal("user_id", "..") is None
    True
    >>> id_refusal("user_id", "")
    'give the id as ?user_id=<id>, percent-encoded (1-256 characters)'
    >>> id_refusal("user_id", "x" * 257)
    'user_id is 257 characters: ids are 1-256'
    """
    if not value:
        return f"give the id as ?{name}=<id>, percent-encoded (1-{MAX_ID_CHARS} characters)"
    if len(value) > MAX_ID_CHARS:
        return f"{name} is {len(value)} characters: ids are 1-{MAX_ID_CHARS}"
    return None


def _path(
    summary: str,
    ok: str,
    parameter: str | None = None,
    schema: dict[str, Any] | None = None,
    where: str = "path",
    **responses: str,
) -> dict:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": _json_response(ok, schema or _ANY_OBJECT),
            **{c: _json_response(d) for c, d in responses.items()},
        },
    }
    if parameter:
        operation["parameters"] = [
            {"name": parameter, "in": where, "required": True, "schema": {"type": "string"}}
        ]
    return {"get": operation}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "streamrec worker", "version": "1"},
    "paths": {
        "/api/users/{user_id}/recommendations/": _path(
            "The user's latest recommendations (the last message sent for them)",
            "a Recommendations event",
            "user_id",
            _ref("Recommendations"),
            **{"404": "no interaction from this user yet"},
        ),
        "/api/recommendations/": _path(
            "The same, the user id as a query parameter (?user_id=): for any id, `.` and "
            "`..` included, which no URL path can carry",
            "a Recommendations event",
            "user_id",
            _ref("Recommendations"),
            where="query",
            **{"400": "no user_id, or one over 256 characters", "404": "no list yet"},
        ),
        "/api/items/": _path(
            "Items of the catalog in storage order (id, title, thumbnail); ?limit=N, at most 100",
            "a list of items",
            schema={"type": "array", "items": _ANY_OBJECT},
            **{"400": "limit is not a whole number"},
        ),
        "/api/interactions/": {
            "post": {
                "summary": "Send an interaction (the Interaction event, as on the topic)",
                "requestBody": {
                    "content": {"application/json": {"schema": _ref("Interaction")}},
                    "required": True,
                },
                "responses": {
                    "202": _json_response(
                        "queued on the interactions topic",
                        {
                            "type": "object",
                            "properties": {
                                "event_id": {"type": "string"},
                                "queued": {"type": "boolean"},
                            },
                        },
                    ),
                    "401": _json_response("api_token set and no Authorization: Bearer <token>"),
                    "403": _json_response("an Origin other than the worker's own"),
                    "415": _json_response("a Content-Type other than application/json"),
                    "422": _json_response(
                        "not a valid Interaction, or an item_id the catalog does not hold: "
                        "the field and the fix"
                    ),
                },
            }
        },
        "/dashboard/": {
            "get": {
                "summary": "Live dashboard: rates, latency, dead letters, a user's list",
                "responses": {"200": {"description": "an HTML page"}},
            }
        },
        "/api/items/{item_id}/": _path(
            "An item: title, tags, modalities, metadata; engagements, trending, CF factor and bias",
            "the item",
            "item_id",
            **{"404": "no such item"},
        ),
        "/api/item/": _path(
            "The same, the item id as a query parameter (?item_id=): for any id",
            "the item",
            "item_id",
            where="query",
            **{"400": "no item_id, or one over 256 characters", "404": "no such item"},
        ),
        "/health/": _path("Liveness: the worker's web server answers", "ok"),
        "/ready/": _path(
            "Readiness: partitions assigned, tables recovered, item side caught up",
            "ready",
            **{"503": "rebalancing or recovering"},
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text format 0.0.4"}},
            }
        },
        "/streamrec/stats/": _path("Counters and catalog size, as JSON", "stats"),
        "/openapi.json": _path("This description", "an OpenAPI 3.1 document"),
    },
    # DeadLetter: what the dead-letters topic carries (not served, described for clients).
    "components": {"schemas": _component_schemas(Interaction, Recommendations, DeadLetter)},
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answers JSON (``{"error": ...}``), as the views' own errors do, instead
    of aiohttp's plain-text pages; an unexpected one is logged, not shown."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise  # redirects (the path style below)
        why = {
            404: f"no such path {request.path!r}: see /openapi.json",
            405: f"{request.method} is not allowed on {request.path}: see /openapi.json",
        }.get(error.status, error.reason)
        return web.json_response({"error": why}, status=error.status)
    except Exception:
        log.exception("HTTP %s %s failed", request.method, clip(request.path))
        return web.json_response({"error": "internal error: see the worker's log"}, status=500)


def web_middlewares() -> list[Any]:
    """Errors as JSON; a path without its trailing slash redirected (308, which keeps the
    method and body) to the one with it, the single style of every API path."""
    return [json_errors, web.normalize_path_middleware(append_slash=True)]


def write_refusal(
    headers: Mapping[str, str], host: str, token: str | None
) -> tuple[int, str] | None:
    """Why an HTTP write is refused (status, message), or None to accept it.

    A web page on another site can make a browser send a "simple" cross-origin POST
    (``text/plain``, no preflight) with the user's network position: writes must be JSON,
    and a request whose ``Origin`` is not this worker's own is refused. When a token is
    configured, writes must carry it as ``Authorization: Bearer <token>``.

    >>> write_refusal({"Content-Type": "application/json"}, "w:6066", None) is None
    True
    >>> write_refusal({"Content-Type": "text/plain"}, "w:6066", None)[0]
    415
    >>> write_refusal({"Content-Type": "application/json", "Origin": "http://evil.example"},
    ...               "w:6066", None)[0]
    403
    >>> write_refusal({"Content-Type": "application/json", "Origin": "http://["}, "w:6066", None)[0]
    403
    >>> write_refusal({"Content-Type": "application/json"}, "w:6066", "s3cret")[0]
    401
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    media_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return 415, "send the body as JSON with Content-Type: application/json"
    origin = lowered.get("origin")
    if origin is not None and _netloc(origin) != host.lower():
        return 403, "cross-origin writes are refused: call the API from its own origin"
    if token is not None:
        given = lowered.get("authorization", "")
        if not hmac.compare_digest(_bytes(given), _bytes(f"Bearer {token}")):
            return 401, "writes need the header Authorization: Bearer <api_token>"
    return None


def _netloc(url: str) -> str | None:
    """The URL's authority, lowercased; None where it cannot be parsed (``http://[``, a
    netloc that NFKC would change), which is then no origin of this worker's."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return None


def _bytes(value: str) -> bytes:
    """``value`` as UTF-8 for a constant-time comparison, whatever it holds: aiohttp decodes
    header bytes that are not UTF-8 to lone surrogates (``surrogateescape``), which a plain
    ``encode()`` refuses. ``surrogatepass`` encodes every str, one to one, so equal bytes
    still mean equal strings."""
    return value.encode("utf-8", "surrogatepass")


#: How long a write's body may take to arrive, whole. aiohttp has no such bound: a client
#: sending a Content-Length and then nothing held its connection (and a descriptor) for good.
BODY_TIMEOUT_S = 10.0


class BodyRefused(Exception):
    """A write's body that cannot be read: the status and the fix."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


async def read_body(request: web.Request) -> bytes:
    """A write's body, whole, within ``BODY_TIMEOUT_S`` and the application's size limit
    (aiohttp's ``client_max_size``, 1 MiB: 413); ``BodyRefused`` otherwise. A compressed
    body is refused (the server does not inflate bodies: ``kafka_compat/web_server.py``),
    as is one whose framing is broken or whose client went away before sending it."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise BodyRefused(415, "send the body uncompressed, without Content-Encoding")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size
        raise BodyRefused(
            413, f"the body is over {limit} bytes: send one interaction, as JSON"
        ) from None
    except TimeoutError:
        raise BodyRefused(
            408, f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s: send it whole"
        ) from None
    except RequestPayloadError as error:
        raise BodyRefused(400, f"the body could not be read ({clip(str(error))})") from None
    except ConnectionError:
        # The client went away mid-body: nobody reads the answer; nothing to log.
        raise BodyRefused(400, "the connection closed before the body was sent") from None


DASHBOARD = resources.files("streams").joinpath("dashboard.html").read_text()


class WorkerBackend(Protocol):
    """What the HTTP API reads of a worker and asks of it (``StreamrecApp`` implements it)."""

    def stats(self) -> dict[str, Any]:
        """The figures of ``/streamrec/stats/``."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker serves its partitions, and why (not)."""
        ...

    def list_for(self, user_id: str) -> dict[str, Any] | None:
        """The user's list to serve (this worker owns the user's partition), or None."""
        ...

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An item's stored payload and learned state, or None."""
        ...

    def catalog_page(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` items: id, title, thumbnail."""
        ...

    def knows_item(self, item_id: str) -> bool: ...

    async def submit(self, interaction: Interaction) -> None:
        """Queue an interaction on the interactions topic."""
        ...

    def exposition(self) -> bytes:
        """The Prometheus metrics."""
        ...


def install_views(
    app: faust.App,
    interactions: faust.types.TopicT,
    backend: WorkerBackend,
    api_token: str | None,
    items_topic: str,
    max_connections: int,
) -> None:
    """Every view of the API on ``app``, served on at most ``max_connections`` connections
    at once; user lists are routed by ``interactions``' partitions (the users table's,
    partition for partition)."""
    configure_web_server(app, max_connections)

    @app.page("/streamrec/stats/")
    async def stats(view: Any, request: Any) -> Any:
        return view.json(backend.stats())

    def user_list(view: Any, user_id: str) -> Any:
        served = backend.list_for(user_id)
        if served is None:
            return view.json(
                {
                    "error": f"no recommendations for user_id {clip(user_id)!r} yet: "
                    "send an interaction"
                },
                status=404,
            )
        return view.json(served)

    def stored_item(view: Any, item_id: str) -> Any:
        found = backend.item(item_id)
        if found is None:
            return view.json({"error": f"no item with item_id {clip(item_id)!r}"}, status=404)
        return view.json(found)

    @app.page(f"/api/users/{{user_id:{ANY_SEGMENT}}}/recommendations/")
    @app.topic_route(topic=interactions, match_info="user_id")
    async def recommendations(view: Any, request: Any, user_id: str) -> Any:
        return user_list(view, user_id)

    @app.topic_route(topic=interactions, query_param="user_id")
    async def routed_by_query(view: Any, request: Any) -> Any:
        return user_list(view, request.query["user_id"])

    @app.page("/api/recommendations/")
    async def recommendations_by_query(view: Any, request: Any) -> Any:
        # Checked before routing: Faust's route raises KeyError (a 500) without the key.
        refused = id_refusal("user_id", request.query.get("user_id", ""))
        if refused is not None:
            return view.json({"error": refused}, status=400)
        return await routed_by_query(view, request)

    @app.page(f"/api/items/{{item_id:{ANY_SEGMENT}}}/")
    async def item(view: Any, request: Any, item_id: str) -> Any:
        return stored_item(view, item_id)

    @app.page("/api/item/")
    async def item_by_query(view: Any, request: Any) -> Any:
        item_id = request.query.get("item_id", "")
        refused = id_refusal("item_id", item_id)
        if refused is not None:
            return view.json({"error": refused}, status=400)
        return stored_item(view, item_id)

    @app.page("/api/items/")
    async def items(view: Any, request: Any) -> Any:
        try:
            limit = min(max(int(request.query.get("limit", 20)), 1), 100)
        except ValueError:
            return view.json({"error": "limit must be a whole number, e.g. ?limit=20"}, status=400)
        return view.json(backend.catalog_page(limit))

    @app.page("/api/interactions/")
    class Interactions(View):
        async def post(self, request: Any) -> Any:
            refused = write_refusal(request.headers, request.host, api_token)
            if refused is not None:
                status, why = refused
                return self.json({"error": why}, status=status)
            try:
                event = Interaction.model_validate_json(await read_body(request))
            except BodyRefused as refused:
                return self.json({"error": refused.why}, status=refused.status)
            except ValidationError as error:
                why = clip(describe_validation_error(error), MAX_ERROR_CHARS)
                return self.json({"error": why}, status=422)
            if not backend.knows_item(event.item_id):
                # Said now rather than dead-lettered later, where the caller never looks.
                why = (
                    f"item_id: no item {clip(event.item_id)!r} in the catalog: upload it to "
                    f"{items_topic!r} first (or wait until it is stored)"
                )
                return self.json({"error": why}, status=422)
            await backend.submit(event)
            return self.json({"event_id": event.event_id, "queued": True}, status=202)

    @app.page("/dashboard/")
    async def dashboard(view: Any, request: Any) -> Any:
        return view.html(DASHBOARD)

    @app.page("/health/")
    async def health(view: Any, request: Any) -> Any:
        return view.json({"status": "ok"})

    @app.page("/ready/")
    async def ready(view: Any, request: Any) -> Any:
        is_ready, why = backend.readiness()
        return view.json({"ready": is_ready, "reason": why}, status=200 if is_ready else 503)

    async def prometheus(view: Any, request: Any) -> Any:
        return view.bytes(backend.exposition(), content_type=CONTENT_TYPE)

    # Prometheus' conventional path, and the path style of every other path.
    app.page("/metrics")(prometheus)
    app.page("/metrics/")(prometheus)

    @app.page("/openapi.json")
    async def openapi(view: Any, request: Any) -> Any:
        return view.json(OPENAPI)

"""Every id the topics take can be read over HTTP, whatever characters it holds.

A user or item id is any text of 1-256 characters on the topics (``Identifier``). The
API's paths carried them as one segment, which two kinds of id cannot pass: aiohttp's
default segment pattern refuses ``{`` and ``}`` (``/api/users/%7Bx%7D/recommendations/``
answered 404 "no such path" for a user with a list), and ``.`` and ``..`` are dot
segments that clients (browsers, yarl, urllib3) and Faust's routing to another worker
resolve away before the request is sent. Each read now matches any encoded segment and
has a query form (``/api/recommendations/?user_id=``, ``/api/item/?item_id=``). These
tests hold the worker's real views, served by Faust's aiohttp driver, to that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import faust
import pytest
from aiohttp.test_utils import TestServer
from faust.exceptions import SameNode
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Interaction
from streams.web import install_views, web_middlewares

#: Ids valid on the topics that a URL path cannot carry as it is, or that aiohttp's
#: default segment refused, beside ordinary ones.
CRAFTED = [
    ".",
    "..",
    "{x}",
    "}",
    "{",
    "a{b}c",
    "a/b",
    "/",
    "a/../b",
    "%2F",
    "%2E%2E",
    "%",
    "a+b",
    "a b",
    "a?b#c",
    "a;b=c&d",
    "a\x00b",
    "\t\n",
    "ü",
    "😀" * 256,
    "x" * 256,
    "ann",
]

ids = st.text(min_size=1, max_size=256)


class ListsBackend:
    """Holds a list for each of ``users`` and an item for each of ``items``."""

    def __init__(self, users: Iterable[str], items: Iterable[str]) -> None:
        self.users = set(users)
        self.items = set(items)

    def list_for(self, user_id: str) -> dict[str, Any] | None:
        return {"user_id": user_id} if user_id in self.users else None

    def item(self, item_id: str) -> dict[str, Any] | None:
        return {"item_id": item_id} if item_id in self.items else None

    def knows_item(self, item_id: str) -> bool:
        return item_id in self.items

    async def submit(self, interaction: Interaction) -> None:
        pass


def served(backend: ListsBackend, exchange: Any) -> Any:
    """``exchange(server)`` against the worker's views, this worker owning every user."""
    app = faust.App(
        "http-ids", broker="memory://", web_application_options={"middlewares": web_middlewares()}
    )

    async def same_node(*args: Any, **kwargs: Any) -> Any:
        raise SameNode()  # one worker: every user's partition is its own

    app.router.route_topic_req = same_node  # type: ignore[method-assign]
    install_views(app, app.topic("interactions"), backend, None, "items", 256)  # type: ignore[arg-type]
    app.web.init_server()

    async def run() -> Any:
        server = TestServer(app.web.web_app)
        await server.start_server()
        try:
            return await exchange(server)
        finally:
            await server.close()

    return asyncio.run(run())


async def raw_get(server: TestServer, target: str) -> tuple[int, Any]:
    """GET ``target`` exactly as written (no client normalising it): status, JSON body."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


async def client_get(server: TestServer, path: str, query: dict[str, str]) -> tuple[int, Any]:
    """GET as an ordinary client does (aiohttp's, through yarl, which resolves dot
    segments and encodes the query itself)."""
    async with aiohttp.ClientSession() as session:
        url = f"http://{server.host}:{server.port}{path}"
        async with session.get(url, params=query) as response:
            return response.status, await response.json()


def read_every_way(user_ids: list[str], item_ids: list[str]) -> list[tuple[str, str, int, Any]]:
    """Each user's list and each item, by path (when a path can carry the id) and by
    query, as (form, id, status, body)."""
    backend = ListsBackend(user_ids, item_ids)

    async def exchange(server: TestServer) -> list[tuple[str, str, int, Any]]:
        answers = []
        for user in user_ids:
            if user not in (".", ".."):
                path = f"/api/users/{quote(user, safe='')}/recommendations/"
                answers.append(("user path", user, *await raw_get(server, path)))
            query = "/api/recommendations/?" + urlencode({"user_id": user})
            answers.append(("user query", user, *await raw_get(server, query)))
            found = await client_get(server, "/api/recommendations/", {"user_id": user})
            answers.append(("user client", user, *found))
        for item in item_ids:
            if item not in (".", ".."):
                path = f"/api/items/{quote(item, safe='')}/"
                answers.append(("item path", item, *await raw_get(server, path)))
            found = await client_get(server, "/api/item/", {"item_id": item})
            answers.append(("item client", item, *found))
        return answers

    return served(backend, exchange)


def assert_each_read(answers: list[tuple[str, str, int, Any]]) -> None:
    for form, id_, status, body in answers:
        assert status == 200, (form, id_, status, body)
        assert body in ({"user_id": id_}, {"item_id": id_}), (form, id_, body)


def test_every_crafted_id_can_be_read_by_path_and_by_query() -> None:
    assert_each_read(read_every_way(CRAFTED, CRAFTED))


def test_ids_with_braces_are_read_by_path() -> None:
    """aiohttp's default segment (``[^{}/]+``) answered these 404 "no such path"."""
    braces = ["{x}", "}", "{", "a{b}c", "{user_id}"]
    answers = read_every_way(braces, braces)
    assert_each_read([answer for answer in answers if answer[0].endswith("path")])


@settings(max_examples=25)
@given(st.lists(ids, min_size=1, max_size=8, unique=True))
def test_any_id_a_topic_takes_can_be_read_over_http(given_ids: list[str]) -> None:
    assert_each_read(read_every_way(given_ids, given_ids))


@pytest.mark.parametrize(
    "target",
    [
        "/api/recommendations/",
        "/api/recommendations/?user_id=",
        "/api/recommendations/?user=ann",
        "/api/recommendations/?user_id=" + "x" * 257,
        "/api/item/",
        "/api/item/?item_id=",
        "/api/item/?item_id=" + "x" * 257,
    ],
)
def test_a_read_by_query_without_a_usable_id_is_a_400_naming_the_fix(target: str) -> None:
    """Faust's routing by query raised KeyError without the key: checked before it."""

    async def exchange(server: TestServer) -> tuple[int, Any]:
        return await raw_get(server, target)

    status, body = served(ListsBackend(["ann"], ["i1"]), exchange)
    assert status == 400 and "_id" in body["error"] and "256" in body["error"], body


def test_unknown_ids_are_404s_naming_them_briefly() -> None:
    async def exchange(server: TestServer) -> list[tuple[int, Any]]:
        return [
            await raw_get(server, "/api/recommendations/?user_id=" + "z" * 256),
            await raw_get(server, "/api/users/{}/recommendations/".format("%7B" * 256)),
            await raw_get(server, "/api/item/?item_id=..%7B"),
        ]

    for status, body in served(ListsBackend([], []), exchange):
        assert status == 404 and len(body["error"]) < 400, body

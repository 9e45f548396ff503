"""The demo as a new user meets it: after two clicks in one taste, the list follows them."""

from __future__ import annotations

import pytest

from models.engine import InProcessRecommender
from streams.demo import CLICKS, catalog_uploads
from streams.events import ItemUpload
from streams.served import reference_engine
from streams.settings import Settings

TS = 1.7e9


@pytest.fixture(scope="module")
def demo_engine() -> InProcessRecommender:
    """The demo catalog, encoded by the worker's encoding code, after the demo's clicks."""
    uploads = [ItemUpload.model_validate(value) for _, value in catalog_uploads()]
    engine = reference_engine(Settings(), uploads)
    for n, (user, item, kind) in enumerate(CLICKS):
        engine.process(f"demo-{n}", user, item, kind, None, TS + 60 * n, k=5)
    return engine


def _taste(item_id: str) -> str:
    return item_id.split("-")[0]


@pytest.mark.parametrize(("user", "taste"), [("alice", "space"), ("carol", "jazz")])
def test_two_clicks_in_one_taste_fill_the_top_five(
    demo_engine: InProcessRecommender, user: str, taste: str
) -> None:
    top = demo_engine.recommend(user, k=5, now=TS + 60 * len(CLICKS))
    of_taste = [r for r in top if _taste(r.item_id) == taste]
    assert len(of_taste) >= 4, [r.item_id for r in top]
    for recommendation in of_taste:
        # The reasons name the user's own items of that taste.
        named = [r.because_of for r in recommendation.reasons if r.because_of is not None]
        assert named and all(_taste(item) == taste for item in named), recommendation


def test_a_new_user_who_clicks_twice_in_one_taste(demo_engine: InProcessRecommender) -> None:
    for n, item in enumerate(["garden-2", "garden-5"]):
        demo_engine.process(f"erin-{n}", "erin", item, "click", None, TS + 3_600 + n, k=5)
    top = demo_engine.recommend("erin", k=5, now=TS + 3_700)
    assert sum(_taste(r.item_id) == "garden" for r in top) >= 4, [r.item_id for r in top]
    assert all(r.reasons[0].source != "catalog" for r in top)  # no padding

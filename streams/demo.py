"""A small built-in catalog and a click stream, to see the whole system move end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

#: (item_id, title, text, tags): five themes, six items each.
CATALOG: list[tuple[str, str, str, list[str]]] = [
    (
        "space-1",
        "Voyage to the Outer Planets",
        "A crew flies a rocket past Jupiter and Saturn.",
        ["sci-fi", "space"],
    ),
    (
        "space-2",
        "Mars Colony",
        "Settlers build the first city on the red planet.",
        ["sci-fi", "space"],
    ),
    (
        "space-3",
        "Starship Mechanics",
        "How spacecraft engines and orbits really work.",
        ["science", "space"],
    ),
    (
        "space-4",
        "The Moon Landing Archives",
        "Astronauts recall the Apollo missions.",
        ["history", "space"],
    ),
    (
        "space-5",
        "Black Holes Explained",
        "Gravity, event horizons and the galaxies around them.",
        ["science", "astronomy"],
    ),
    (
        "space-6",
        "Alien Signals",
        "Radio telescopes listen for life beyond the stars.",
        ["sci-fi", "astronomy"],
    ),
    (
        "cook-1",
        "Weeknight Pasta",
        "Quick Italian pasta recipes with garlic and tomatoes.",
        ["cooking", "italian"],
    ),
    (
        "cook-2",
        "The Bread Baker",
        "Sourdough, yeast and the oven: baking bread at home.",
        ["cooking", "baking"],
    ),
    (
        "cook-3",
        "Street Food of Asia",
        "Noodles, dumplings and spicy curries from market stalls.",
        ["cooking", "asian"],
    ),
    (
        "cook-4",
        "Vegetarian Kitchen",
        "Hearty vegetable stews, salads and roasted dishes.",
        ["cooking", "vegetarian"],
    ),
    (
        "cook-5",
        "Pastry Masterclass",
        "Croissants, tarts and cakes from a French pastry chef.",
        ["baking", "dessert"],
    ),
    (
        "cook-6",
        "Grill and Barbecue",
        "Smoking meat and grilling vegetables over fire.",
        ["cooking", "bbq"],
    ),
    ("jazz-1", "Blue Notes", "A history of jazz trumpet and saxophone players.", ["music", "jazz"]),
    (
        "jazz-2",
        "Piano Trio Nights",
        "Live recordings of a jazz piano trio in New York.",
        ["music", "jazz"],
    ),
    (
        "jazz-3",
        "Swing Era Big Bands",
        "Dance halls and the big band sound of the 1930s.",
        ["music", "swing"],
    ),
    (
        "jazz-4",
        "Bebop Explained",
        "Fast tempos and improvisation in modern jazz.",
        ["music", "jazz"],
    ),
    (
        "jazz-5",
        "Vocal Jazz Standards",
        "Singers interpret the great American songbook.",
        ["music", "vocal"],
    ),
    (
        "jazz-6",
        "Latin Jazz Rhythms",
        "Congas, clave and Afro-Cuban jazz grooves.",
        ["music", "latin"],
    ),
    (
        "ball-1",
        "World Cup Legends",
        "The greatest football players and their goals.",
        ["sport", "football"],
    ),
    (
        "ball-2",
        "Tactics Board",
        "Formations, pressing and how football coaches think.",
        ["sport", "football"],
    ),
    (
        "ball-3",
        "Derby Day",
        "Fans, rivalries and a city split by a football match.",
        ["sport", "football"],
    ),
    (
        "ball-4",
        "Goalkeeper Training",
        "Drills for reflexes, diving and penalty saves.",
        ["sport", "training"],
    ),
    (
        "ball-5",
        "Women's Football Rising",
        "The growth of the women's game and its stars.",
        ["sport", "football"],
    ),
    (
        "ball-6",
        "Stadium Stories",
        "Famous football grounds and the clubs that built them.",
        ["sport", "history"],
    ),
    (
        "garden-1",
        "Vegetable Patch",
        "Growing tomatoes, beans and lettuce in raised beds.",
        ["gardening", "vegetables"],
    ),
    (
        "garden-2",
        "Roses and Perennials",
        "Planting and pruning a flowering border.",
        ["gardening", "flowers"],
    ),
    (
        "garden-3",
        "Composting Basics",
        "Turn kitchen scraps into rich soil for the garden.",
        ["gardening", "soil"],
    ),
    (
        "garden-4",
        "Indoor Houseplants",
        "Light, water and repotting for plants at home.",
        ["gardening", "houseplants"],
    ),
    (
        "garden-5",
        "Orchard Care",
        "Pruning apple and pear trees for a better harvest.",
        ["gardening", "fruit"],
    ),
    (
        "garden-6",
        "Wildlife Garden",
        "Attract bees, birds and butterflies with native plants.",
        ["gardening", "nature"],
    ),
]

#: (user_id, item_id, kind): two users with clear tastes, one who skips, one who only views.
CLICKS: list[tuple[str, str, str]] = [
    ("alice", "space-1", "click"),
    ("bob", "cook-2", "click"),
    ("alice", "space-5", "like"),
    ("bob", "cook-5", "purchase"),
    ("carol", "jazz-2", "click"),
    ("alice", "cook-1", "skip"),
    ("carol", "jazz-4", "like"),
    ("dave", "ball-1", "view"),
    ("bob", "garden-1", "click"),
    ("dave", "ball-3", "click"),
]


def catalog_uploads() -> list[tuple[str, dict[str, Any]]]:
    """The demo catalog as (key, ItemUpload JSON) pairs."""
    return [
        (item_id, {"item_id": item_id, "title": title, "text": text, "tags": tags})
        for item_id, title, text, tags in CATALOG
    ]


def demo_interactions(run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The demo clicks as (key, Interaction JSON) pairs, a minute apart, ending now.

    ``run_id`` keeps event ids unique when the demo runs again on the same data.
    """
    start = datetime.now(UTC) - timedelta(minutes=len(CLICKS))
    return [
        (
            user_id,
            {
                "event_id": f"demo-{run_id}-{n}",
                "user_id": user_id,
                "item_id": item_id,
                "kind": kind,
                "ts": (start + timedelta(minutes=n)).isoformat(),
            },
        )
        for n, (user_id, item_id, kind) in enumerate(CLICKS)
    ]

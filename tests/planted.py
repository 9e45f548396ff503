"""Planted structure for the recommender's tests and evaluation: users with known tastes,
items whose content vectors point along their taste (``planted_engine``), a planted
multimodal stream with new items arriving while users click (``planted_multimodal``),
and the same stream as real media for the worker's own encoders (``write_planted_media``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

from models.blend import Blend
from models.engine import InProcessRecommender
from models.evaluation.datasets import ReplayEvent
from models.evaluation.prequential import Evaluation, prequential
from models.hybrid import HYBRID_WEIGHTS, HybridRecommender
from models.learned_blend import LearnedBlend
from models.sources import (
    Catalog,
    ContentSimilarity,
    DecayedPopularity,
    ItemItemCosine,
    OnlineBPR,
)
from models.sources.ease import EASE
from models.sources.item_ease import ItemSideEASE
from models.sources.modality_profiles import ModalityProfiles

TS = 1.7e9
TASTES, PER_TASTE, DIM = 3, 12, 16


def taste(item_id: str) -> int:
    return int(item_id.split("-")[0][1:])


def planted_engine(
    weights: dict[str, float] | None = None, seed: int = 0, hybrid: HybridRecommender | None = None
) -> tuple[InProcessRecommender, np.ndarray, np.random.Generator]:
    """Items ``t{taste}-{n}`` whose vectors point along their taste; users ``u{taste}-{n}``
    who engage only with items of their taste, in a shuffled time order."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(TASTES, DIM))
    if hybrid is None:  # (an empty recommender is falsy: it has no items)
        hybrid = HybridRecommender(weights, content_dim=DIM)
    engine = InProcessRecommender(hybrid)
    for t in range(TASTES):
        for n in range(PER_TASTE):
            vector = directions[t] + rng.normal(scale=0.3, size=DIM)
            engine.add_item(f"t{t}-{n}", f"Taste {t} item {n}", vector)
    log = [
        (f"u{t}-{u}", f"t{t}-{int(n)}")
        for t in range(TASTES)
        for u in range(10)
        for n in rng.choice(PER_TASTE, size=6, replace=False)
    ]
    random.Random(seed).shuffle(log)
    for n, (user, item) in enumerate(log):
        engine.process(f"e{n}", user, item, "click", None, TS + n, k=5)
    return engine, directions, rng


@dataclass(frozen=True)
class PlantedItem:
    """One item of the planted multimodal set: its upload time, taste, and one vector
    per modality it has (``text`` always; ``image``, ``audio`` on most items)."""

    item_id: str
    taste: int
    uploaded_at: float
    text_kind: str  # "rich", "weak" or "generic"
    vectors: dict[str, np.ndarray]


@dataclass(frozen=True)
class PlantedSet:
    items: list[PlantedItem]
    events: list[ReplayEvent]

    def content_vectors(self) -> np.ndarray:
        """Each item's fused content vector: its modality vectors averaged (as the
        ``average`` fusion does), unit length."""
        fused = []
        for item in self.items:
            mean = np.mean([v for v in item.vectors.values()], axis=0)
            fused.append(mean / np.linalg.norm(mean))
        return np.array(fused)


def planted_multimodal(
    seed: int = 0,
    tastes: int = 8,
    n_items: int = 600,
    new_items: int = 236,
    n_users: int = 200,
    n_events: int = 8_000,
    dim: int = 32,
    generic_share: float = 0.25,
    media_share: float = 0.85,
) -> PlantedSet:
    """A click stream over items whose taste is carried by text, image and audio.

    Each modality has its own taste directions (as separate encoders would), and every
    modality vector is a shared "any item" direction plus the taste direction plus
    noise. Text comes at three levels: rich (strong taste), weak, and generic titles
    (no taste at all: the same words for every taste). Images and audio are on
    ``media_share`` of the items. ``n_items - new_items`` items are there at the start;
    the rest are uploaded while users click. Each user likes one or two tastes and
    clicks items of those tastes (uploaded by then), favouring recent uploads and, a
    little, popular items, so new items are clicked for the first time during the
    stream: zero-click events.
    """
    rng = np.random.default_rng(seed)
    duration = float(n_events)  # one event per second
    common = {m: rng.normal(size=dim) for m in ("text", "image", "audio")}
    directions = {m: rng.normal(size=(tastes, dim)) for m in ("text", "image", "audio")}
    generic = rng.normal(size=dim)

    def modality(name: str, taste_id: int, strength: float) -> np.ndarray:
        vector = common[name] + strength * directions[name][taste_id]
        return vector + rng.normal(scale=1.0, size=dim)

    items = []
    for n in range(n_items):
        taste_id = int(rng.integers(0, tastes))
        uploaded = 0.0 if n < n_items - new_items else float(rng.uniform(0, 0.9 * duration))
        kind = str(rng.choice(["rich", "weak", "generic"], p=[0.45, 0.3, 0.25]))
        if rng.random() < generic_share:
            kind = "generic"
        text = (
            common["text"] + generic + rng.normal(scale=0.3, size=dim)
            if kind == "generic"
            else modality("text", taste_id, 1.5 if kind == "rich" else 0.6)
        )
        vectors = {"text": text}
        if rng.random() < media_share:
            vectors["image"] = modality("image", taste_id, 1.2)
        if rng.random() < media_share:
            vectors["audio"] = modality("audio", taste_id, 1.0)
        items.append(PlantedItem(f"p{n}", taste_id, uploaded, kind, vectors))
    items.sort(key=lambda item: item.uploaded_at)
    likes = [
        rng.choice(tastes, size=int(rng.integers(1, 3)), replace=False) for _ in range(n_users)
    ]
    activity = rng.pareto(1.5, size=n_users) + 0.2
    activity /= activity.sum()
    by_taste: dict[int, list[int]] = {t: [] for t in range(tastes)}
    for index, item in enumerate(items):
        by_taste[item.taste].append(index)
    clicks = np.zeros(len(items))
    seen: list[set[int]] = [set() for _ in range(n_users)]
    events = []
    for n in range(n_events):
        ts = float(n)
        user = int(rng.choice(n_users, p=activity))
        taste_id = int(rng.choice(likes[user]))
        pool = [i for i in by_taste[taste_id] if items[i].uploaded_at <= ts and i not in seen[user]]
        if not pool:
            continue
        ages = ts - np.array([items[i].uploaded_at for i in pool])
        appeal = np.exp(-ages / (0.15 * duration)) + 0.3 + 0.05 * np.log1p(clicks[pool])
        chosen = pool[int(rng.choice(len(pool), p=appeal / appeal.sum()))]
        seen[user].add(chosen)
        clicks[chosen] += 1
        events.append(ReplayEvent(f"pu{user}", items[chosen].item_id, "click", None, ts, f"p-{n}"))
    return PlantedSet(items, events)


def evaluate_planted(seed: int = 0) -> Evaluation:
    """The planted multimodal stream replayed prequentially: the hybrid with fixed and
    learned weights (with EASE as one more learned source), and references."""
    data = planted_multimodal(seed=seed)
    vectors = data.content_vectors()
    catalog = Catalog()
    content = ContentSimilarity(dim=vectors.shape[1])
    modalities = ModalityProfiles(dim=vectors.shape[1])
    for item, vector in zip(data.items, vectors, strict=True):
        index = catalog.add(item.item_id)
        content.set_vector(index, vector)
        modalities.set_vectors(index, item.vectors)
    item_item = ItemItemCosine()
    sources = {
        "item-item": item_item,
        "trending": DecayedPopularity(),
        "cf": OnlineBPR(),
        "content": content,
        "ease": ItemSideEASE(item_item, refit_every=500),
        EASE.name: EASE(refit_every=500),
        "modalities": modalities,
    }
    configurations: dict[str, Blend | LearnedBlend] = {
        "hybrid": Blend(HYBRID_WEIGHTS),
        "hybrid (learned)": LearnedBlend(HYBRID_WEIGHTS),
        "hybrid+ease (learned)": LearnedBlend({**HYBRID_WEIGHTS, "ease": 0.1}),
        "hybrid+modalities (learned)": LearnedBlend({**HYBRID_WEIGHTS, "modalities": 0.1}),
        **{
            name: Blend({name: 1.0})
            for name in ("item-item", "content", "modalities", "ease", EASE.name)
        },
    }
    uploaded_at = {item.item_id: item.uploaded_at for item in data.items}
    groups = {item.item_id: "+".join(sorted(item.vectors)) for item in data.items}
    return prequential(
        data.events,
        catalog,
        sources,
        configurations,
        uploaded_at=uploaded_at,
        item_groups=groups,
    )


#: Per taste: words for its text, an image motif and a sound (``write_planted_media``).
TASTE_WORDS = [
    ["jazz", "saxophone", "swing", "trumpet", "bebop", "club", "improvised", "blue note"],
    ["space", "rocket", "orbit", "astronaut", "galaxy", "telescope", "mars", "launch"],
    ["bread", "sourdough", "oven", "flour", "baking", "crust", "yeast", "loaf"],
    ["garden", "roses", "seedlings", "compost", "tulips", "pruning", "greenhouse", "soil"],
    ["football", "goal", "striker", "league", "stadium", "penalty", "keeper", "match"],
    ["chess", "opening", "gambit", "endgame", "grandmaster", "checkmate", "rook", "bishop"],
    ["horror", "haunted", "ghost", "vampire", "scream", "crypt", "zombie", "nightmare"],
    ["yoga", "breathing", "meditation", "stretch", "posture", "calm", "mat", "balance"],
]
GENERIC_WORDS = ["new", "item", "collection", "edition", "selection", "daily", "pick", "more"]
SHAPES = ["ellipse", "rectangle", "stripes", "triangle", "grid", "rings", "dots", "diagonals"]
MEDIA_TS = 1.7e9  # the planted stream's second 0, as epoch seconds


def planted_image(taste_id: int, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A picture of the taste's motif: its shape, drawn in its hue on its background,
    at random places and sizes, with pixel noise (one taste's pictures are alike, not
    equal)."""
    hue = (taste_id * 45 + int(rng.integers(-8, 9))) % 360
    background = f"hsl({(hue + 180) % 360}, 30%, {int(rng.integers(80, 92))}%)"
    colour = f"hsl({hue}, 80%, {int(rng.integers(35, 55))}%)"
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    shape = SHAPES[taste_id % len(SHAPES)]
    for _ in range(int(rng.integers(3, 7))):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 10, size // 4))
        box = [x - r, y - r, x + r, y + r]
        if shape == "ellipse":
            draw.ellipse(box, fill=colour)
        elif shape == "rectangle":
            draw.rectangle(box, fill=colour)
        elif shape == "stripes":
            draw.rectangle([x - r, 0, x, size], fill=colour)
        elif shape == "triangle":
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        elif shape == "grid":
            for g in range(0, size, max(4, r // 2)):
                draw.line([(g, 0), (g, size)], fill=colour, width=2)
                draw.line([(0, g), (size, g)], fill=colour, width=2)
        elif shape == "rings":
            for ring in range(r, 2, -6):
                draw.ellipse([x - ring, y - ring, x + ring, y + ring], outline=colour, width=2)
        elif shape == "dots":
            for _ in range(12):
                dx, dy = (int(v) for v in rng.integers(-r, r + 1, 2))
                draw.ellipse([x + dx - 3, y + dy - 3, x + dx + 3, y + dy + 3], fill=colour)
        else:
            draw.line([(x - r, y - r), (x + r, y + r)], fill=colour, width=6)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(scale=12.0, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def planted_sound(
    taste_id: int, rng: np.random.Generator, seconds: float = 1.0, rate: int = 16_000
) -> np.ndarray:
    """The taste's sound: its pitch, timbre (how many harmonics) and pulse rate, each a
    little off, with noise."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110.0 * 2 ** (taste_id / 2) * (1 + rng.normal(scale=0.02))
    harmonics = 1 + taste_id % 4
    wave = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, harmonics + 1))
    pulse = 0.6 + 0.4 * np.sin(2 * np.pi * (1.5 + taste_id) * (1 + rng.normal(scale=0.05)) * t)
    samples = 0.3 * wave * pulse / harmonics + rng.normal(scale=0.03, size=len(t))
    return np.clip(samples, -1, 1).astype(np.float32)


def planted_text(item: PlantedItem, number: int, rng: np.random.Generator) -> tuple[str, str]:
    """Title and text: ``rich`` names the taste several times, ``weak`` once among generic
    words, ``generic`` not at all."""
    words = TASTE_WORDS[item.taste % len(TASTE_WORDS)]
    filler = [str(w) for w in rng.choice(GENERIC_WORDS, size=6)]
    if item.text_kind == "rich":
        chosen = [str(w) for w in rng.choice(words, size=4, replace=False)]
        return f"{chosen[0].title()} {chosen[1]} {number}", " ".join(chosen[2:] + filler[:3])
    if item.text_kind == "weak":
        return f"{filler[0].title()} {filler[1]} {number}", " ".join(
            [*filler[2:], str(rng.choice(words))]
        )
    return f"Item {number}", " ".join(filler)


def write_planted_media(directory: Path, seed: int = 0, **shape: int) -> tuple[Path, Path]:
    """``planted_multimodal(seed, **shape)`` as real files under ``directory``: ``items.jsonl``
    (ItemUpload: title and text by the item's text level, a PNG and a WAV by ``file://``
    where the item has that modality, ``created_at`` its upload time) and
    ``events.jsonl`` (its clicks as Interaction records). Tastes are carried by words,
    motifs and sounds that the worker's encoders have to find themselves."""
    data = planted_multimodal(seed=seed, **shape)
    rng = np.random.default_rng(seed + 1_000)
    media = directory / "media"
    media.mkdir(parents=True, exist_ok=True)
    items_path, events_path = directory / "items.jsonl", directory / "events.jsonl"
    with items_path.open("w") as items:
        for number, item in enumerate(data.items):
            title, text = planted_text(item, number, rng)
            upload: dict[str, object] = {
                "item_id": item.item_id,
                "title": title,
                "text": text,
                "created_at": datetime.fromtimestamp(MEDIA_TS + item.uploaded_at, UTC).isoformat(),
            }
            if "image" in item.vectors:
                path = media / f"{item.item_id}.png"
                planted_image(item.taste, rng).save(path)
                upload["image"] = {"uri": path.resolve().as_uri()}
            if "audio" in item.vectors:
                path = media / f"{item.item_id}.wav"
                soundfile.write(path, planted_sound(item.taste, rng), 16_000)
                upload["audio"] = {"uri": path.resolve().as_uri()}
            items.write(json.dumps(upload) + "\n")
    with events_path.open("w") as events:
        for event in data.events:
            record = {
                "event_id": event.event_id,
                "user_id": event.user,
                "item_id": event.item,
                "kind": event.kind,
                "ts": MEDIA_TS + event.ts,
            }
            events.write(json.dumps(record) + "\n")
    return items_path, events_path


def _main(argv: list[str] | None = None) -> None:
    """``python -m tests.planted [SEED]`` evaluates the planted stream in process;
    ``--media DIRECTORY [SEED]`` writes it as files. Bad arguments are one usage error."""
    import argparse

    from models.evaluation.report import format_table

    parser = argparse.ArgumentParser(prog="python -m tests.planted", description=_main.__doc__)
    parser.add_argument("--media", type=Path, metavar="DIRECTORY", help="write the files here")
    parser.add_argument("seed", type=int, nargs="?", default=0, help="0 or more (default 0)")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:
        parser.error(f"seed {args.seed}: give a whole number from 0 to {2**32 - 1}")
    if args.media is not None:
        try:
            print(*write_planted_media(args.media, args.seed))
        except OSError as error:
            parser.exit(
                1,
                f"{parser.prog}: error: --media {args.media}: cannot write there "
                f"({error.strerror or error}): give a directory you can create and write to\n",
            )
        return
    evaluation = evaluate_planted(args.seed)
    print(format_table(evaluation))
    for name, result in evaluation.results.items():  # HitRate@10 by modalities
        print(name, {g: round(m.hit_rate, 4) for g, m in sorted(result.by_group.items())})


if __name__ == "__main__":  # python -m tests.planted [seed] | --media DIRECTORY [seed]
    _main()

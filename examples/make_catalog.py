"""Make a small multimodal catalog on this machine: nothing is downloaded.

Four tastes, each carried by its text, its image (a colour and a shape drawn with PIL)
and its audio (a pitch with noise, written as FLAC). Media files go to ``examples/media/``
and the uploads, referring to them by ``file://`` URI, to ``examples/media-items.jsonl``::

    python examples/make_catalog.py
    export STREAMREC_MEDIA_ALLOWED_DIRS='["examples/media"]'   # file:// is opt-in
    streamrec produce items examples/media-items.jsonl

The worker must run with the same ``STREAMREC_MEDIA_ALLOWED_DIRS`` (relative to its
working directory) to read the files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

#: taste -> (title words, image colour, shape, audio pitch in Hz)
TASTES = {
    "ocean": (["Tide", "Harbour", "Reef", "Lighthouse", "Coastline"], "steelblue", "wave", 220.0),
    "forest": (["Pine", "Moss", "Canopy", "Fern", "Trailhead"], "forestgreen", "tree", 330.0),
    "desert": (["Dune", "Mirage", "Canyon", "Oasis", "Mesa"], "goldenrod", "sun", 440.0),
    "city": (["Subway", "Neon", "Skyline", "Rooftop", "Crosswalk"], "slategray", "grid", 550.0),
}


def draw(colour: str, shape: str, seed: int, size: int = 128) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(image)
    offset = int(rng.integers(0, 16))
    if shape == "wave":
        for y in range(offset, size, 16):
            pen.arc([0, y - 8, size, y + 8], 0, 180, fill=colour, width=4)
    elif shape == "tree":
        for x in range(offset, size, 32):
            pen.polygon([(x, size - 10), (x + 12, 20), (x + 24, size - 10)], fill=colour)
    elif shape == "sun":
        pen.ellipse([32 + offset, 32, 96 + offset, 96], fill=colour)
    else:
        for x in range(offset, size, 20):
            pen.rectangle([x, 0, x + 8, size], fill=colour)
    return image


def tone(pitch: float, seed: int, seconds: float = 2.0, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    return (0.4 * np.sin(2 * np.pi * pitch * t) + noise).astype(np.float32)


#: At most this many items per taste: each is a PNG and a FLAC written here, and a
#: catalog for trying the worker needs no more (a typo of 10^8 wrote files until stopped).
MAX_PER_TASTE = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-taste", type=int, default=5, help=f"items per taste (1 to {MAX_PER_TASTE})"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    if not 1 <= args.per_taste <= MAX_PER_TASTE:
        parser.error(f"--per-taste {args.per_taste}: give 1 to {MAX_PER_TASTE}")
    try:
        write_catalog(args.per_taste, args.out)
    except OSError as error:  # --out under a file, read-only, full
        parser.exit(
            1,
            f"{parser.prog}: error: --out {args.out}: cannot write there "
            f"({error.strerror or error}): give a directory you can create and write to\n",
        )


def write_catalog(per_taste: int, out: Path) -> None:
    """``per_taste`` items of each taste: media under ``out/media``, uploads in
    ``out/media-items.jsonl``."""
    media = (out / "media").resolve()
    media.mkdir(parents=True, exist_ok=True)
    lines = []
    for taste, (words, colour, shape, pitch) in TASTES.items():
        for n in range(per_taste):
            item_id = f"{taste}-{n + 1}"
            seed = 100 * list(TASTES).index(taste) + n
            draw(colour, shape, seed).save(media / f"{item_id}.png")
            soundfile.write(media / f"{item_id}.flac", tone(pitch, seed), 16_000)
            lines.append(
                {
                    "item_id": item_id,
                    "title": f"{words[n % len(words)]} {n + 1}",
                    "tags": [taste],
                    "image": {"uri": (media / f"{item_id}.png").as_uri()},
                    "audio": {"uri": (media / f"{item_id}.flac").as_uri()},
                }
            )
    catalog = out / "media-items.jsonl"
    catalog.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(
        f"wrote {len(lines)} items to {catalog} (media in {media}); send them with\n"
        f"  export STREAMREC_MEDIA_ALLOWED_DIRS='[\"{media}\"]'  # and restart the worker\n"
        f"  ./deploy/local.sh produce items {catalog}"
    )


if __name__ == "__main__":
    main()

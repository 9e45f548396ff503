"""Content compared modality by modality: one profile per modality, each item scored on
the modalities it has.

The ``content`` source compares one fused vector per item with one profile. Under the
``average`` fusion an item with fewer modalities than most lies in another part of the
space: a text-only item's fused vector is its text alone, a profile built from items
with text, image and audio is about a third text, so the text-only item scores about
``1 / sqrt(3)`` of an equally matching three-modality item and a blend that trusts
content ranks it low (docs/evaluation.md: the learned blend's HitRate on text-only items
was 0.06 where the fixed blend's was 0.14). Here the user keeps a decayed, signed profile
per modality, of the modality vectors of the items engaged (``profile_m <- profile_m *
2 ** (-dt / half_life) + weight * v_m``), and an item scores the mean, over the
modalities it has and the user's profile has, of the cosine between the two.

Modality vectors are compared in the fusion's common space (``project``: the
``ModalityProjection`` the fusion projects with, so ``v_m`` is exactly what the average
fusion averaged); without ``project`` they are taken as given, unit-normalised.
Memory: ``4 * dim`` bytes per item and modality it has.

>>> from models.sources.base import UserHistory
>>> source, history = ModalityProfiles(dim=2), UserHistory()
>>> source.set_vectors(0, {"text": np.array([1.0, 0.0]), "image": np.array([0.0, 1.0])})
>>> source.set_vectors(1, {"text": np.array([1.0, 0.1])})  # text only, the same taste
>>> source.set_vectors(2, {"text": np.array([0.0, 1.0]), "image": np.array([1.0, 0.0])})
>>> source.learn_one("u", 0, 1.0, 0.0, history); history.add(0, 1.0)
>>> print(source.score("u", history, 3, now=0.0).round(3))
[1.    0.995 0.   ]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from models.packed import pack
from models.sources.base import ItemDelta, Source, UserHistory, grown, held_up_to
from models.sources.changes import bounded_profile, user_vector

#: ``(modality, (n, dim) vectors) -> (n, common dim) unit rows``.
Projection = Callable[[str, np.ndarray], np.ndarray]
MODALITIES = ("text", "image", "audio")


class ModalityProfiles(Source):
    """Per-modality profiles and per-modality cosines (module docstring)."""

    name = "modalities"

    def __init__(
        self, dim: int = 384, half_life_s: float = 30 * 86_400.0, project: Projection | None = None
    ) -> None:
        self.dim = dim
        self.rate = math.log(2) / half_life_s
        self.project = project
        #: Per modality: unit vectors (rows by item index) and which items have one.
        self.vectors = {m: np.zeros((0, dim), dtype=np.float32) for m in MODALITIES}
        self.present = {m: np.zeros(0, dtype=bool) for m in MODALITIES}

    def set_vectors(self, item: int, embeddings: Mapping[str, np.ndarray]) -> None:
        """The item's modality vectors (replacing those it had); unknown modalities and
        zero vectors are left out."""
        for modality in MODALITIES:
            if item < len(self.present[modality]):
                self.present[modality][item] = False
            raw = embeddings.get(modality)
            if raw is None:
                continue  # a modality no item has takes no memory
            if self.project is not None:
                vector = self.project(modality, np.asarray(raw, dtype=np.float32)[None, :])[0]
            else:
                vector = np.asarray(raw, dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            if vector.shape == (self.dim,) and math.isfinite(norm) and norm > 0:
                self.vectors[modality] = grown(self.vectors[modality], item + 1)
                self.present[modality] = grown(self.present[modality], item + 1)
                self.vectors[modality][item] = vector / norm
                self.present[modality][item] = True

    def modalities_of(self, item: int) -> list[str]:
        return [m for m in MODALITIES if item < len(self.present[m]) and self.present[m][item]]

    # -- the user's side ---------------------------------------------------------------

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        found = self.modalities_of(item)
        if not found:
            return []
        profiles, last = history.own.get(self.name, ({}, ts))
        decay = math.exp(-self.rate * max(ts - last, 0.0))
        updated = {m: profile * decay for m, profile in profiles.items()}
        for modality in found:
            vector = self.vectors[modality][item].astype(np.float64)
            updated[modality] = updated.get(modality, np.zeros(self.dim)) + weight * vector
            bounded_profile(updated[modality])
        history.own[self.name] = (updated, ts)
        return []

    # -- scoring -----------------------------------------------------------------------

    def _scored(self, history: UserHistory, items: np.ndarray | None, n_items: int) -> np.ndarray:
        """Mean cosine over shared modalities, for ``items`` (None: 0..n_items-1)."""
        size = n_items if items is None else len(items)
        total, count = np.zeros(size), np.zeros(size)
        entry = history.own.get(self.name)
        for modality, profile in (entry[0] if entry else {}).items():
            norm = float(np.linalg.norm(profile))
            if not norm > 0:
                continue
            vectors, present = self.vectors[modality], self.present[modality]
            if items is None:
                known = min(n_items, len(present))
                rows, has = vectors[:known], present[:known]
                total[:known] += np.where(has, rows @ profile / norm, 0.0)
                count[:known] += has
            else:
                inside = items < len(present)
                at = items[inside]
                has = present[at]
                total[inside] += np.where(has, vectors[at] @ profile / norm, 0.0)
                count[inside] += has
        return np.divide(total, count, out=np.zeros(size), where=count > 0)

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        return self._scored(history, None, n_items)

    def score_items(
        self, user: str, history: UserHistory, items: np.ndarray, now: float
    ) -> np.ndarray:
        return self._scored(history, items, 0)

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        """The user's recent item closest to ``item`` over the modalities both have."""
        found = self.modalities_of(item)
        best, best_score = None, 0.0
        for other in history.recent_items:
            shared = [m for m in found if m in self.modalities_of(other)]
            if not shared:
                continue
            score = float(np.mean([self.vectors[m][other] @ self.vectors[m][item] for m in shared]))
            if best is None or score > best_score:
                best, best_score = other, score
        return best

    # -- stored data -------------------------------------------------------------------

    def dump_user(self, value: Any) -> Any:
        profiles, ts = value
        return [{m: pack(p, f"the user's {m} profile") for m, p in profiles.items()}, ts]

    def load_user(self, data: Any) -> Any:
        packed, ts = data[0], float(data[1])
        if not isinstance(packed, dict) or not math.isfinite(ts):
            raise ValueError("modality profiles are not {modality: vector} with a time")
        profiles = {}
        for modality, text in packed.items():
            if modality not in MODALITIES:
                raise ValueError(f"a profile of an unknown modality {str(modality)[:20]!r}")
            profiles[modality] = user_vector(text, f"the user's {modality} profile", self.dim)
        return profiles, ts

    def item_arrays(self) -> dict[str, np.ndarray]:
        return {key: array.copy() for key, array in self.item_arrays_until_upload().items()}

    def item_arrays_until_upload(self) -> dict[str, np.ndarray]:
        size = max(len(p) for p in self.present.values())
        arrays = {}
        for m in MODALITIES:
            arrays[f"{m}_vectors"] = grown(self.vectors[m], size)[:size]
            arrays[f"{m}_present"] = grown(self.present[m], size)[:size]
        return arrays

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        loaded = {}
        for m in MODALITIES:
            vectors = np.asarray(arrays[f"{m}_vectors"], dtype=np.float32)
            present = np.asarray(arrays[f"{m}_present"], dtype=bool)
            if vectors.shape[1:] != (self.dim,) or len(vectors) != len(present):
                raise ValueError(f"{m} vectors of shape {vectors.shape} for dimension {self.dim}")
            if not np.isfinite(vectors).all():
                raise ValueError(f"{m} vectors that are not finite")
            loaded[m] = (vectors.copy(), present.copy())
        for m, (vectors, present) in loaded.items():
            self.vectors[m], self.present[m] = vectors, present

    def items_held(self) -> int:
        return held_up_to(*self.present.values())

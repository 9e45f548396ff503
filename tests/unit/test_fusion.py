"""Fusion strategies: average, weighted, and learned from co-engagement (and persisted)."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.fusion import AverageFusion, ModalityProjection, WeightedFusion
from encoders.learned_fusion import LearnedFusion

DIMS = {"text": 16, "image": 40, "audio": 12}


@pytest.fixture
def projection() -> ModalityProjection:
    return ModalityProjection(DIMS, common_dim=16)


def random_item(rng: np.random.Generator, modalities=DIMS) -> dict[str, np.ndarray]:
    return {m: rng.normal(size=DIMS[m]).astype(np.float32) for m in modalities}


def test_every_subset_of_modalities_gets_a_unit_vector(projection) -> None:
    rng = np.random.default_rng(1)
    subsets = [("text",), ("image",), ("audio",), ("text", "image"), ("text", "image", "audio")]
    items = [random_item(rng, subset) for subset in subsets]
    for fusion in (
        AverageFusion(projection),
        WeightedFusion(projection, {"text": 2.0, "image": 1.0, "audio": 0.0}),
        LearnedFusion(projection),
    ):
        fused = fusion.fuse(items)
        assert fused.shape == (5, 16)
        assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
        with pytest.raises(ValueError, match="at least one modality"):
            fusion.fuse([{}])


def test_average_is_the_mean_of_projected_unit_vectors(projection) -> None:
    item = random_item(np.random.default_rng(2))
    expected = sum(projection.project(m, v[None])[0] for m, v in item.items())
    expected /= np.linalg.norm(expected)
    assert np.allclose(AverageFusion(projection).fuse([item])[0], expected, atol=1e-6)
    # A text-only item is its (normalised) text vector: text needs no projection.
    text = item["text"] / np.linalg.norm(item["text"])
    assert np.allclose(AverageFusion(projection).fuse([{"text": item["text"]}])[0], text, atol=1e-6)


def test_weights_move_the_fused_vector_towards_the_heavier_modality(projection) -> None:
    item = random_item(np.random.default_rng(3), ("text", "image"))
    text_dir = projection.project("text", item["text"][None])[0]
    heavy_text = WeightedFusion(projection, {"text": 5.0, "image": 1.0}).fuse([item])[0]
    heavy_image = WeightedFusion(projection, {"text": 1.0, "image": 5.0}).fuse([item])[0]
    assert heavy_text @ text_dir > heavy_image @ text_dir
    with pytest.raises(ValueError, match="unknown modalities"):
        WeightedFusion(projection, {"smell": 1.0})


def test_learned_fusion_starts_as_the_average(projection) -> None:
    rng = np.random.default_rng(4)
    items = [random_item(rng, ("text", "image")), random_item(rng, ("audio",)), random_item(rng)]
    assert np.allclose(
        LearnedFusion(projection).fuse(items), AverageFusion(projection).fuse(items), atol=1e-5
    )


def planted_catalogue(seed: int, n_items: int = 400, n_tastes: int = 8):
    """Items whose taste (what users co-engage) shows weakly in the image and not in the text.

    The text is pure noise and three times louder than the image, so the average fusion
    mostly sees noise; interactions reveal which direction matters.
    """
    rng = np.random.default_rng(seed)
    tastes = rng.integers(n_tastes, size=n_items)
    centres = rng.normal(size=(n_tastes, DIMS["image"]))
    items = [
        {
            "text": rng.normal(size=DIMS["text"]).astype(np.float32) * 3,
            "image": (centres[t] + rng.normal(size=DIMS["image"]) * 1.5).astype(np.float32),
        }
        for t in tastes
    ]
    by_taste = [np.flatnonzero(tastes == t) for t in range(n_tastes)]
    pairs = [
        tuple(int(i) for i in rng.choice(by_taste[t], size=2, replace=False))
        for t in rng.integers(n_tastes, size=3000)
    ]
    return items, tastes, pairs


def same_taste_precision(vectors: np.ndarray, tastes: np.ndarray, k: int = 10) -> float:
    """Among each item's k nearest neighbours, the share with the same taste."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1)[:, :k]
    return float((tastes[neighbours] == tastes[:, None]).mean())


def test_learned_fusion_improves_co_engagement_on_a_planted_task(projection) -> None:
    items, tastes, pairs = planted_catalogue(seed=5)
    train = [p for p in pairs if p[0] < 300 and p[1] < 300]  # items 300+ are never seen
    fusion = LearnedFusion(projection)
    report = fusion.fit(items, train, epochs=30)
    assert report["loss_after"] < report["loss_before"]

    held_out = np.arange(300, 400)
    average = AverageFusion(projection).fuse(items)[held_out]
    learned = fusion.fuse(items)[held_out]
    before = same_taste_precision(average, tastes[held_out])
    after = same_taste_precision(learned, tastes[held_out])
    # Brand-new items (no interactions) land among items of their taste far more often.
    assert after > before + 0.15, (before, after)


def test_learned_fusion_is_versioned_and_persisted_safely(projection, tmp_path) -> None:
    items, _, pairs = planted_catalogue(seed=6, n_items=60)
    fusion = LearnedFusion(projection)
    fusion.fit(items, pairs[:200], epochs=2)
    fusion.fit(items, pairs[200:400], epochs=2)
    assert fusion.version == "learned-v2"
    path = tmp_path / "learned.pt"
    fusion.save(path)

    restored = LearnedFusion(projection)
    restored.load(path)
    assert restored.version == "learned-v2"
    assert np.array_equal(restored.fuse(items), fusion.fuse(items))
    # The file holds tensors and numbers only: loading refuses pickled objects.
    import torch

    torch.save({"weights": {}, "fitted_versions": 1, "code": object()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        restored.load(tmp_path / "evil.pt")

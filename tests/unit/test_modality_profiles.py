"""Content compared modality by modality: an item is scored on the modalities it has,
so fewer modalities is no handicap; with one modality it is the content source; its
user state and item side are stored and refused as the others are; and on the planted
multimodal set it lifts the learned blend on never-clicked items and on items with
fewer modalities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.fusion import ModalityProjection
from models.blend import Blend
from models.evaluation.prequential import prequential
from models.hybrid import HYBRID_WEIGHTS, HybridRecommender
from models.learned_blend import LearnedBlend
from models.packed import pack
from models.sources import Catalog, ContentSimilarity, DecayedPopularity, ItemItemCosine, OnlineBPR
from models.sources.base import UserHistory
from models.sources.modality_profiles import ModalityProfiles
from models.user_state import UserState
from tests.planted import planted_multimodal


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    clicks=st.lists(st.tuples(st.integers(0, 9), st.sampled_from([1.0, 0.5, -1.0])), max_size=8),
)
def test_with_one_modality_it_scores_as_the_content_source(
    seed: int, clicks: list[tuple[int, float]]
) -> None:
    vectors = np.random.default_rng(seed).normal(size=(10, 6))
    content, modalities = ContentSimilarity(dim=6), ModalityProfiles(dim=6)
    for item, vector in enumerate(vectors):
        content.set_vector(item, vector)
        modalities.set_vectors(item, {"text": vector})
    assert len(modalities.vectors["image"]) == 0  # a modality no item has takes no memory
    first, second = UserHistory(), UserHistory()
    for n, (item, weight) in enumerate(clicks):
        content.learn_one("u", item, weight, 3600.0 * n, first)
        modalities.learn_one("u", item, weight, 3600.0 * n, second)
        first.add(item, weight)
        second.add(item, weight)
    np.testing.assert_allclose(
        modalities.score("u", second, 10, 0.0), content.score("u", first, 10, 0.0), atol=1e-6
    )
    items = np.array([7, 1, 3])
    np.testing.assert_allclose(
        modalities.score_items("u", second, items, 0.0),
        modalities.score("u", second, 10, 0.0)[items],
        atol=1e-12,
    )


def test_an_item_with_fewer_modalities_is_not_handicapped() -> None:
    """Under the average fusion a text-only item of the user's taste scores about
    ``1 / sqrt(3)`` of a three-modality one; compared modality by modality, the same."""
    projection = ModalityProjection({"text": 4, "image": 6, "audio": 5}, common_dim=4)
    rng = np.random.default_rng(3)
    taste = {"text": rng.normal(size=4), "image": rng.normal(size=6), "audio": rng.normal(size=5)}
    modalities = ModalityProfiles(dim=4, project=projection.project)
    modalities.set_vectors(0, taste)
    modalities.set_vectors(1, {"text": taste["text"]})
    modalities.set_vectors(2, {m: -v for m, v in taste.items()})
    history = UserHistory()
    modalities.learn_one("u", 0, 1.0, 0.0, history)
    history.add(0, 1.0)
    scores = modalities.score("u", history, 3, 0.0)
    assert scores[1] == pytest.approx(scores[0]) == pytest.approx(1.0)
    assert scores[2] == pytest.approx(-1.0)
    assert modalities.because_of("u", history, 1) == 0


def test_its_user_state_and_item_side_round_trip_and_crafted_ones_are_refused() -> None:
    modalities = ModalityProfiles(dim=3)
    modalities.set_vectors(0, {"text": np.ones(3), "image": np.arange(3.0)})
    modalities.set_vectors(1, {"audio": np.ones(3), "video": np.ones(3)})  # unknown: left out
    modalities.set_vectors(2, {"text": np.zeros(3)})  # no direction: no text vector
    assert modalities.modalities_of(1) == ["audio"] and modalities.modalities_of(2) == []
    history = UserHistory()
    modalities.learn_one("u", 0, 1.0, 5.0, history)
    stored = modalities.dump_user(history.own["modalities"])
    profiles, ts = modalities.load_user(stored)
    assert ts == 5.0 and set(profiles) == {"text", "image"}
    for crafted in (
        [{"smell": pack(np.ones(3), "x")}, 0.0],
        [{"text": pack(np.ones(4), "x")}, 0.0],
        [{"text": pack(np.ones(3), "x")}, float("nan")],
        ["not a dict", 0.0],
    ):
        with pytest.raises(ValueError):
            modalities.load_user(crafted)
    restored = ModalityProfiles(dim=3)
    restored.load_item_arrays(modalities.item_arrays())
    assert restored.modalities_of(0) == ["text", "image"]
    np.testing.assert_array_equal(
        restored.score("u", history, 3, 0.0), modalities.score("u", history, 3, 0.0)
    )
    arrays = modalities.item_arrays()
    with pytest.raises(ValueError):
        ModalityProfiles(dim=3).load_item_arrays(
            {**arrays, "text_vectors": arrays["text_vectors"] * np.nan}
        )
    with pytest.raises(ValueError):
        ModalityProfiles(dim=4).load_item_arrays(arrays)


def test_the_hybrid_blends_it_from_the_items_modality_vectors() -> None:
    hybrid = HybridRecommender({"item-item": 1.0, "modalities": 1.0}, content_dim=2)
    assert hybrid.modalities is not None
    hybrid.add_item(
        "jazz-av", "Jazz", None, {"text": np.array([1.0, 0.0]), "audio": np.array([0.0, 1.0])}
    )
    hybrid.add_item("jazz-t", "Jazz, text only", None, {"text": np.array([1.0, 0.1])})
    hybrid.add_item(
        "rock-av", "Rock", None, {"text": np.array([0.0, 1.0]), "audio": np.array([1.0, 0.0])}
    )
    state = UserState()
    hybrid.apply(hybrid.learn_one("ann", state, "e1", "jazz-av", 1.0, 0.0))
    top = hybrid.recommend("ann", state, k=1, now=0.0)[0]
    assert top.item_id == "jazz-t"
    assert [(r.source, r.because_of) for r in top.reasons] == [("modalities", "jazz-av")]
    stored = hybrid.load_state(hybrid.dump_state(state))
    assert hybrid.recommend("ann", stored, k=1, now=0.0)[0].item_id == "jazz-t"


def test_on_the_planted_set_it_lifts_the_learned_blend_on_never_clicked_items() -> None:
    data = planted_multimodal(seed=1, n_items=200, new_items=80, n_users=60, n_events=2_500)
    vectors = data.content_vectors()
    catalog = Catalog()
    content, modalities = (
        ContentSimilarity(dim=vectors.shape[1]),
        ModalityProfiles(vectors.shape[1]),
    )
    for item, vector in zip(data.items, vectors, strict=True):
        index = catalog.add(item.item_id)
        content.set_vector(index, vector)
        modalities.set_vectors(index, item.vectors)
    sources = {
        "item-item": ItemItemCosine(),
        "trending": DecayedPopularity(),
        "cf": OnlineBPR(),
        "content": content,
        "modalities": modalities,
    }
    configurations = {
        "learned": LearnedBlend(HYBRID_WEIGHTS),
        "with modalities": LearnedBlend({**HYBRID_WEIGHTS, "modalities": 0.1}),
        "fixed": Blend(HYBRID_WEIGHTS),
    }
    uploaded_at = {item.item_id: item.uploaded_at for item in data.items}
    groups = {item.item_id: "+".join(sorted(item.vectors)) for item in data.items}
    evaluation = prequential(
        data.events, catalog, sources, configurations, uploaded_at=uploaded_at, item_groups=groups
    )
    learned, both = evaluation.results["learned"], evaluation.results["with modalities"]
    assert learned.zero_click is not None and both.zero_click is not None
    assert both.zero_click.hit_rate > 1.1 * learned.zero_click.hit_rate
    assert both.overall.hit_rate >= learned.overall.hit_rate
    assert both.by_group["text"].hit_rate > learned.by_group["text"].hit_rate
